"""Flood control: a user's lines that wait their turn, and the token bucket
that lets them out.

A line costs a token. The bucket holds flood_burst tokens and refills at
flood_rate a second, so a user says a burst at once, then flood_rate lines
a second. Tokens are spent before the inbox is measured, so that a read of
many lines (a paste; lines the kernel queued while the server stalled) is
not a flood: only what is left waiting past flood_queue lines or
flood_queue_bytes is (L{Inbox.flooded}).

An over-long line is not kept: it waits as one entry, L{TOO_LONG}, that
costs a token and gets its sender one error line, and as many L{STILL_TOO_LONG}
entries as it held max_line bytes more, each a token and nothing said. A
real line never holds a newline, so these are never mistaken for one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall

if TYPE_CHECKING:
    from chatproto.output import Limits

TOO_LONG = b"\n"  # an over-long line: one error line
STILL_TOO_LONG = b"\n\n"  # max_line more bytes of one: a token, nothing said


class Inbox:
    """One user's waiting lines and its flood bucket.

    Invariants: C{lines} holds the waiting entries, in order, and is None
    when none waits (most users are idle most of the time: 10,000 empty
    lists are 560 KB); C{bytes} is their size; while C{_call} is set, the
    bucket is empty and nothing is taken before it fires.
    """

    # One per connection, 10,000 of them: slots, not a dictionary each.
    __slots__ = (
        "_call",
        "_discarded",
        "_refilled",
        "_tokens",
        "bytes",
        "limits",
        "lines",
    )

    def __init__(self, limits: Limits) -> None:
        self.limits = limits  # where it reads its limits and the time: the room
        self.bytes = 0
        self.lines: list[bytes] | None = None
        self._tokens = 0.0
        self._refilled = 0.0  # 0: not started
        self._discarded = 0  # bytes of an over-long line not yet counted
        self._call: IDelayedCall | None = None

    @property
    def waiting(self) -> tuple[int, int]:
        """The lines waiting their turn, and their bytes."""
        return len(self.lines or ()), self.bytes

    def start(self, tokens: float, now: float) -> None:
        """The user is admitted: its bucket holds C{tokens} (what its address
        has left of its burst)."""
        self._tokens = tokens
        self._refilled = now

    def add(self, line: bytes) -> None:
        """A line, to wait its turn."""
        lines = self.lines
        if lines is None:
            lines = self.lines = []
        lines.append(line)
        self.bytes += len(line)

    def charge(self, tokens: int) -> None:
        """Entries that only cost a token each (at most flood_queue: more
        is a flood anyway)."""
        count = min(tokens, self.limits.config.flood_queue)
        if count > 0:
            lines = self.lines
            if lines is None:
                lines = self.lines = []
            lines.extend([STILL_TOO_LONG] * count)
            self.bytes += len(STILL_TOO_LONG) * count

    def too_long(self, size: int) -> None:
        """A line of C{size} bytes, past max_line: one entry that gets the
        error line, and a token more per max_line bytes beyond the first."""
        self.add(TOO_LONG)
        self.charge(size // (self.limits.config.max_line + 1) - 1)
        self._discarded = 0

    def skipped(self, size: int) -> bool:
        """C{size} more bytes of an over-long line that has not ended yet:
        each max_line of them costs a token, so that endless lines are
        bounded by flood control too. Whether they cost any."""
        lines, self._discarded = divmod(
            self._discarded + size, self.limits.config.max_line + 1
        )
        self.charge(lines)
        return lines > 0

    def flooded(self) -> bool:
        """Whether what waits passes either bound."""
        config = self.limits.config
        return (
            len(self.lines or ()) > config.flood_queue
            or self.bytes > config.flood_queue_bytes
        )

    def take(self, resume: Callable[[], None]) -> bytes | None:
        """The next line, if one waits and the bucket has a token for it;
        None otherwise, and when a token is missing, C{resume} is called
        once the bucket has one."""
        lines = self.lines
        if not lines or self._call is not None:
            return None
        limits = self.limits
        config = limits.config
        if config.flood_rate > 0:
            now = limits.clock.seconds()
            tokens = self._tokens + (now - self._refilled) * config.flood_rate
            self._tokens = min(float(config.flood_burst), tokens)
            self._refilled = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / config.flood_rate
                self._call = limits.clock.callLater(wait, self._refill, resume)
                return None
            self._tokens -= 1
        line = lines.pop(0)
        if lines:
            self.bytes -= len(line)
        else:
            self.lines = None
            self.bytes = 0
        return line

    def _refill(self, resume: Callable[[], None]) -> None:
        self._call = None
        resume()

    def close(self) -> tuple[float, float] | None:
        """The user is gone: drop what waits, stop the timer, and give what
        is left of the bucket and when (None: it never started), for its
        address to keep it spent."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.lines = None
        self.bytes = 0
        if not self._refilled:
            return None
        return self._tokens, self._refilled
