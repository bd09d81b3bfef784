"""The chat's history: the last public lines, for C{/history}.

The room (L{chatproto.server.ChatFactory}) records every public line it
makes, arrivals and departures included, exactly as it sent it
(C{[H.M.S]-nick: text\\n}); private lines are never recorded. A user's
C{/history N} reads the last N back. The history forgets, in this order of
need: lines past C{--history-lines}, lines past C{--history-bytes} (the
oldest first), and lines older than C{--history-age} (the stamp has no
date: a line of yesterday would read as one of today).

A seam like the L{chatproto.registry.Registry}: the room knows only the
L{History} interface, whose C{last} answers with a Deferred, so that the
cluster's history, kept in Redis for every node, stands in for the
in-memory one of a single server without the room noticing.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from chatproto.config import ServerConfig


class History(Protocol):
    """What the room needs from a history of its public lines."""

    def record(self, line: bytes) -> None:
        """Keep a public line made here (one line, ending in C{\\n})."""

    def last(self, count: int) -> Deferred[list[bytes]]:
        """The last C{count} lines kept, oldest first, none older than the
        history's age; fail with L{chatproto.registry.RegistryUnavailable}
        when the history cannot be read now (the cluster's Redis)."""


class MemoryHistory:
    """The history of a single server process.

    Bounded in lines (C{history_lines}) and in the bytes of those lines
    (C{history_bytes}): a line longer than the whole byte bound is not kept.
    Each line costs about 120 bytes of Python objects beyond its text (a
    tuple, a float, a bytes header), so the default bounds, 100 lines and
    256 KiB of text, hold at most about 270 KiB."""

    def __init__(self, config: ServerConfig, clock: IReactorTime) -> None:
        self.config = config
        self.clock = clock
        self._lines: deque[tuple[float, bytes]] = deque()  # (when, line)
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def size(self) -> int:
        """The bytes of the lines kept."""
        return self._bytes

    def record(self, line: bytes) -> None:
        config = self.config
        if config.history_lines <= 0 or len(line) > config.history_bytes:
            return
        now = self.clock.seconds()
        self._lines.append((now, line))
        self._bytes += len(line)
        self._forget(now)

    def last(self, count: int) -> Deferred[list[bytes]]:
        self._forget(self.clock.seconds())
        if count <= 0:
            return succeed([])
        lines = self._lines
        start = max(0, len(lines) - count)
        return succeed([lines[i][1] for i in range(start, len(lines))])

    def _forget(self, now: float) -> None:
        """Drop the oldest lines while past a bound, or too old."""
        config = self.config
        horizon = now - config.history_age
        lines = self._lines
        while lines and (
            len(lines) > config.history_lines
            or self._bytes > config.history_bytes
            or lines[0][0] < horizon
        ):
            _, old = lines.popleft()
            self._bytes -= len(old)
