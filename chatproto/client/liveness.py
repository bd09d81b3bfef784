"""Whether the server is still there: its pings (L{PingWatch}), and the
answers the client waits for (L{AnswerWait}).

A chat may stay silent for hours, so silence alone is never an error. Once
the server has sent two pings, though, their spacing is known, and
C{missed_pings} such intervals without a byte from the server mean that it
is gone (L{chatproto.client.timings.Timings}). C{projet.py} never pings.
An answer the client needs (the welcome, the prompt, the verdict on a
nickname, the answer to C{/quit}) has C{timeout} to come.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatproto.client.timings import Timings, seconds

__all__ = ["AnswerWait", "PingWatch"]


class PingWatch:
    """Liveness: the spacing of the server's pings, and its silence beyond
    C{missed_pings} of them, which calls C{gone} with one sentence."""

    def __init__(
        self, clock: IReactorTime, timings: Timings, gone: Callable[[str], None]
    ) -> None:
        self.clock = clock
        self.timings = timings
        self.gone = gone
        self._last_ping: float | None = None
        self._interval: float | None = None
        self._watchdog: IDelayedCall | None = None

    def pinged(self) -> None:
        """A ping came: its spacing is known from the second one on."""
        now = self.clock.seconds()
        if self._last_ping is not None:
            self._interval = max(now - self._last_ping, 1.0)
        self._last_ping = now

    def watch(self) -> None:
        """Start (or restart) counting the silence, once the spacing is
        known."""
        if self._interval is None:
            return
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(self._limit())
        else:
            self._watchdog = self.clock.callLater(self._limit(), self._silent)

    def heard(self) -> None:
        """Bytes came from the server: the silence starts again."""
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(self._limit())

    def stop(self) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None

    def _limit(self) -> float:
        assert self._interval is not None
        return self.timings.missed_pings * self._interval

    def _silent(self) -> None:
        self._watchdog = None
        assert self._interval is not None
        self.gone(
            f"The server has sent nothing for {seconds(self._limit())}"
            f" although it pings every {seconds(self._interval)}."
        )


class AnswerWait:
    """The answer the client waits for, and its deadline: C{timeout}, past
    which C{gone} is called with one sentence."""

    def __init__(
        self, clock: IReactorTime, timings: Timings, gone: Callable[[str], None]
    ) -> None:
        self.clock = clock
        self.timings = timings
        self.gone = gone
        #: What the client waits for (C{"a welcome line"}...), if anything.
        self.awaiting: str | None = None
        self._timer: IDelayedCall | None = None

    def expect(self, what: str) -> None:
        """Wait for C{what}, C{timeout} at most."""
        self.awaiting = what
        self.stop()
        self._timer = self.clock.callLater(self.timings.timeout, self._late)

    def answered(self) -> bool:
        """An answer came: tell whether the client was waiting for one."""
        if self.awaiting is None:
            return False
        self.awaiting = None
        self.stop()
        return True

    def stop(self) -> None:
        """Cancel the deadline."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _late(self) -> None:
        self._timer = None
        what, self.awaiting = self.awaiting, None
        self.gone(
            f"The server did not send {what} within {seconds(self.timings.timeout)}."
        )
