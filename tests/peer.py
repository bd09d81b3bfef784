"""A raw line peer for tests over real sockets: it records every byte it
receives, and can wait until some bytes have arrived."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

TIMEOUT = 10.0


class Peer(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        still = []
        for needle, d in self._waiting:
            if needle in self.received:
                d.callback(self.received)
            else:
                still.append((needle, d))
        self._waiting = still

    def connectionLost(self, reason: Failure | None = None) -> None:
        for _, d in self._waiting:
            if not d.called:
                d.errback(AssertionError(f"closed; received {self.received!r}"))
        self._waiting = []
        self.closed.callback(None)

    def until(self, needle: bytes) -> Deferred[bytes]:
        """Fire with everything received once it contains C{needle}."""
        d: Deferred[bytes] = Deferred()
        if needle in self.received:
            d.callback(self.received)
        else:
            self._waiting.append((needle, d))
        clock: Any = reactor
        return d.addTimeout(TIMEOUT, clock)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def take(self) -> bytes:
        data, self.received = self.received, b""
        return data
