"""In-memory doubles for testing code that talks to the chat, without sockets.

A L{Chat} is the real server factory (L{ChatFactory}, and its room) on a
fake clock (L{twisted.internet.task.Clock}); its clients are real server
protocols over in-memory transports. Nothing here opens a socket or needs
a reactor::

    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"bonjour\\n")
    assert bob.take() == chat.stamp() + b"-alice: bonjour\\n"
    chat.advance(10)  # ten seconds pass: the ping is due
    assert bob.take() == b"ping\\n"

The project's own tests are written with it.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto.config import ServerConfig
from chatproto.server import ChatFactory, ChatServerProtocol
from chatproto.session import Session

__all__ = [
    "START",
    "Chat",
    "Client",
    "RecordingConnection",
    "RecordingTransport",
    "nick_registered",
]

# 2026-11-25 18:57:28 UTC, where a Chat's clock starts: any fixed moment
# will do, the expected [H.M.S] is computed with the same local time
# (Chat.stamp).
START = 1_795_633_048.0


class RecordingTransport(StringTransportWithDisconnection):
    """A transport that keeps each object it was given to write (C{writes}),
    tells an abort from a close (C{aborted}), and records TCP_NODELAY."""

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


class RecordingConnection:
    """A front end for a L{Session} with no transport at all: it keeps what
    the session writes (C{data}), and whether it was opened, closed or
    aborted. What a new front end (a WebSocket) gives a session, in
    memory."""

    def __init__(self) -> None:
        self.data = b""
        self.opened = self.closed = self.aborted = self.talked = False

    def open(self, owner: Session) -> None:
        self.opened = True

    def write(self, data: bytes) -> None:
        assert not (self.closed or self.aborted), "written after the end"
        self.data += data

    def close(self, *lines: bytes) -> None:
        self.write(b"".join(lines))
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def talking(self) -> None:
        self.talked = True

    def take(self) -> bytes:
        """What the session wrote since the last take."""
        data, self.data = self.data, b""
        return data


class Client:
    """One connection to the server under test: what it sends, and what the
    server sent it."""

    def __init__(
        self, proto: ChatServerProtocol, transport: RecordingTransport, clock: Clock
    ):
        self.proto = proto
        self.transport = transport
        self.clock = clock

    @property
    def session(self) -> Session:
        """The server's session for this client (its state, its nickname)."""
        return self.proto.session

    def send(self, data: bytes) -> None:
        """Bytes from the client, as one read of the server."""
        self.proto.dataReceived(data)

    def buffer_full(self) -> None:
        """What a TCP transport does once its write buffer is full (the
        client stopped reading): it tells its producer to pause."""
        producer = self.transport.producer
        assert producer is not None, "not admitted: no producer"
        producer.pauseProducing()

    def buffer_drained(self) -> None:
        """What a TCP transport does once it sent all it held: it tells its
        producer to resume."""
        producer = self.transport.producer
        assert producer is not None, "not admitted: no producer"
        producer.resumeProducing()

    def take(self) -> bytes:
        """What the server sent since the last take, once the server's
        reactor turn is over (public lines go out at its end)."""
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[bytes]:
        """take(), cut into lines that keep their C{\\n}."""
        return self.take().splitlines(keepends=True)

    @property
    def connected(self) -> bool:
        return bool(self.transport.connected)


class Chat:
    """A test harness: the real server factory on a fake clock, and a way
    to connect clients.

    Keyword arguments are L{ServerConfig} fields; C{batch_delay} is 0 unless
    given, so that public lines go out at the end of each reactor turn."""

    def __init__(self, **config: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        config.setdefault("batch_delay", 0)
        self.factory = ChatFactory(ServerConfig(**config), clock=self.clock)
        self._port = 40000

    def connect(self, host: str = "192.0.2.1") -> Client:
        """A new connection from C{host} (IPv4 or IPv6), welcomed."""
        self._port += 1
        family = IPv6Address if ":" in host else IPv4Address
        peer = family("TCP", host, self._port)
        proto = self.factory.buildProtocol(peer)
        if not isinstance(proto, ChatServerProtocol):
            raise TypeError(f"the factory built {proto!r}")
        transport = RecordingTransport(peerAddress=peer)
        transport.protocol = proto
        proto.makeConnection(transport)
        return Client(proto, transport, self.clock)

    def session(self, host: str = "192.0.2.1") -> tuple[Session, RecordingConnection]:
        """A session of the chat with no transport: fed lines by the caller
        (C{session.line_received(b"/pseudo alice")}), writing to the
        connection returned with it; started (welcomed, or refused)."""
        connection = RecordingConnection()
        session = Session(self.factory, connection, host)
        session.start()
        return session, connection

    def user(self, nick: str, host: str = "192.0.2.1") -> Client:
        """A connected and registered client, its output taken."""
        client = self.connect(host)
        client.send(b"/pseudo " + nick.encode() + b"\n")
        output = client.take()
        if not nick_registered(output, nick):
            raise AssertionError(f"{nick!r} did not register: {output!r}")
        return client

    def stamp(self) -> bytes:
        """The [H.M.S] the server puts before a line made now."""
        t = time.localtime(int(self.clock.seconds()))
        return f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]".encode()

    def advance(self, seconds: float) -> None:
        """Let time pass: the calls due meanwhile run, and those they add."""
        self.clock.advance(seconds)

    def turn(self) -> None:
        """One reactor turn: run the calls due now, but not those they add
        for now (advance(0) would run those too), so that a pass over the
        users can be seen half done."""
        clock = self.clock
        due = [call for call in clock.calls if call.getTime() <= clock.seconds()]
        for call in due:
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


def nick_registered(output: bytes, nick: str) -> bool:
    """Whether the server's output welcomes C{nick} as registered."""
    return f"Bienvenue {nick}\n".encode() in output
