"""The pacing of what the client writes for the user.

An L{Outbox} holds the user's lines (and the L{Register} and L{QUIT} the
protocol queues for them) in order, and hands each one to the protocol once
it may go: when the protocol is ready for it (it waits for no answer and
the server reads what it is sent), and when the pacing allows. Two pacings
apply (see L{chatproto.client.protocol}): a L{TokenBucket} under
chatproto's flood control, until the server is known not to need it; and,
for C{projet.py}, one line per C{send_interval}. Every wait is a timer on
the injected clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatproto.client.timings import Timings

__all__ = ["QUIT", "Item", "Outbox", "Quit", "Register", "TokenBucket"]


class TokenBucket:
    """The client's side of a server's flood control: C{burst} lines at
    once, then C{rate} lines a second.

    A L{chatproto.client.session.ClientSession} keeps one for all its
    connections, because chatproto's server remembers what an address
    spent: a reconnection does not refill the burst.
    """

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.tokens = float(burst)
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def wait(self, now: float) -> float:
        """How long before the next line may go (0: now)."""
        self._refill(now)
        # A thousandth of a line is close enough: clocks count seconds
        # since 1970, whose float steps (0.2 microseconds) would otherwise
        # leave a wait too short to move the clock, forever.
        if self.tokens >= 1 - 1e-3:
            return 0.0
        return (1 - self.tokens) / self.rate

    def spend(self, now: float) -> None:
        """A line went."""
        self._refill(now)
        self.tokens -= 1


class Quit:
    """In the outgoing queue: leave, as politely as the stage allows."""


@dataclass(frozen=True)
class Register:
    """In the outgoing queue: register C{nickname} (C{/pseudo} first if the
    server waits for it)."""

    nickname: str


Item = str | Quit | Register
QUIT = Quit()


class Outbox:
    """The pacing of the user's lines: what waits, and when the next goes.

    C{ready} tells whether the protocol may write now; C{dispatch} writes
    one item, and calls L{wrote} for each line it writes.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timings: Timings,
        bucket: TokenBucket,
        ready: Callable[[], bool],
        dispatch: Callable[[Item], None],
    ) -> None:
        self.clock = clock
        self.timings = timings
        self.bucket = bucket
        self.ready = ready
        self.dispatch = dispatch
        #: Pace with C{bucket}: until the server is known not to need it.
        self.pacing = True
        #: One line per C{send_interval} (C{projet.py}).
        self.spaced = False
        self.queue: deque[Item] = deque()
        self._next_write = 0.0
        self._timer: IDelayedCall | None = None

    @property
    def waiting(self) -> int:
        """How many of the user's lines wait to be sent."""
        return sum(isinstance(item, str) for item in self.queue)

    def put(self, item: Item) -> None:
        """Queue C{item} last, and send what may go."""
        self.queue.append(item)
        self.pump()

    def unsent(self, why: str) -> str:
        """C{why} the session ends, and what the user loses by it."""
        unsent = self.waiting
        if unsent:
            lines = f"{unsent} line{'' if unsent == 1 else 's'}"
            return (
                f"{why}: {lines} never sent, and the last lines sent may be lost too."
            )
        return f"{why}: the last lines sent may not have been delivered."

    def pump(self) -> None:
        """Hand out what may go now; wait on a timer for the rest."""
        while self.queue and self.ready():
            if self._timer is not None:
                return
            now = self.clock.seconds()
            delay = self._next_write - now
            if self.pacing:
                delay = max(delay, self.bucket.wait(now))
            if delay > 0:
                self._timer = self.clock.callLater(delay, self._paced)
                return
            self.dispatch(self.queue.popleft())

    def hold(self, delay: float) -> None:
        """Send nothing for C{delay} seconds, then go on."""
        self.stop()
        self._timer = self.clock.callLater(delay, self._paced)

    def wrote(self) -> None:
        """A line went: it counts against the pacing."""
        if self.pacing:
            self.bucket.spend(self.clock.seconds())
        if self.spaced:
            self._next_write = self.clock.seconds() + self.timings.send_interval

    def stop(self) -> None:
        """Cancel the wait for the next line."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _paced(self) -> None:
        self._timer = None
        self.pump()
