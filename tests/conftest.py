"""Drive the real server factory over in-memory transports and a fake clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto.server import ChatFactory, ChatServerProtocol, ServerConfig

# 2026-11-25 18:57:28 UTC: any fixed moment will do, the tests compute the
# expected [H.M.S] with the same local time.
START = 1_795_633_048.0


class RecordingTransport(StringTransportWithDisconnection):
    """A transport that keeps each object it was given to write, and tells
    an abort from a close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[bytes] = []
        self.aborted = False
        self.nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Client:
    """One connection to the server under test."""

    def __init__(
        self, proto: ChatServerProtocol, transport: RecordingTransport, clock: Clock
    ):
        self.proto = proto
        self.transport = transport
        self.clock = clock

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        """What the server sent since the last take, once the server's
        reactor turn is over (public lines go out at its end)."""
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[bytes]:
        return self.take().splitlines(keepends=True)

    @property
    def connected(self) -> bool:
        return bool(self.transport.connected)


class Chat:
    """A server factory with a fake clock, and a way to connect clients."""

    def __init__(self, **config: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        config.setdefault("batch_delay", 0)  # public lines go out each turn
        self.factory = ChatFactory(ServerConfig(**config), clock=self.clock)
        self._port = 40000

    def connect(self, host: str = "192.0.2.1") -> Client:
        self._port += 1
        family = IPv6Address if ":" in host else IPv4Address
        peer = family("TCP", host, self._port)
        proto = self.factory.buildProtocol(peer)
        assert isinstance(proto, ChatServerProtocol)
        transport = RecordingTransport(peerAddress=peer)
        transport.protocol = proto
        proto.makeConnection(transport)
        return Client(proto, transport, self.clock)

    def user(self, nick: str, host: str = "192.0.2.1") -> Client:
        """A connected and registered client, its output taken."""
        client = self.connect(host)
        client.send(b"/pseudo " + nick.encode() + b"\n")
        assert nick_registered(client.take(), nick)
        return client

    def stamp(self) -> bytes:
        t = time.localtime(int(self.clock.seconds()))
        return f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]".encode()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def nick_registered(output: bytes, nick: str) -> bool:
    return f"Bienvenue {nick}\n".encode() in output


@pytest.fixture
def chat() -> Iterator[Chat]:
    yield Chat()
