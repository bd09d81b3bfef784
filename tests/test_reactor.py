"""The server's reactor (chatproto/_reactor.py): Twisted's epoll reactor,
each event handed over without the legacy log context. Each test runs a
reactor of its own, not installed, on real loopback sockets, turning it
with iterate() until what it waits for is there (bounded)."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import ClassVar, cast

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from chatproto._reactor import ChatReactor


@pytest.fixture
def reactor() -> Iterator[ChatReactor]:
    made = ChatReactor()
    try:
        yield made
    finally:
        for selectable in made.removeAll():
            selectable.socket.close()
        made._poller.close()


def turn_until(reactor: ChatReactor, done: Callable[[], bool]) -> None:
    """Iterate C{reactor} until C{done()}, for at most 10 seconds."""
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "the reactor never got there"
        reactor.iterate(0.05)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("a protocol's bug")
        self.transport.write(data.upper())  # type: ignore[union-attr]


def listening(reactor: ChatReactor, protocol: type[Protocol]) -> int:
    port = reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")
    number: int = port.getHost().port
    return number


def connect(reactor: ChatReactor, port: int) -> socket.socket:
    """A blocking client, once the reactor has accepted it."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.setblocking(False)
    return client


def read(reactor: ChatReactor, client: socket.socket, size: int) -> bytes:
    """What the server writes to C{client}: C{size} bytes, or b"" at its
    close."""
    got = b""

    def enough() -> bool:
        nonlocal got
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        got += chunk
        return len(got) >= size

    turn_until(reactor, enough)
    return got


def test_it_accepts_reads_and_writes(reactor: ChatReactor) -> None:
    port = listening(reactor, Echo)
    one, two = connect(reactor, port), connect(reactor, port)
    one.sendall(b"hello")
    two.sendall(b"world")
    assert read(reactor, one, 5) == b"HELLO"
    assert read(reactor, two, 5) == b"WORLD"
    one.close()
    two.close()


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def failures(events: list[LogEvent]) -> list[Failure]:
    """The failures logged (Twisted's legacy log.err names it C{failure})."""
    found = (e.get("log_failure") or e.get("failure") for e in events)
    return [f for f in found if f is not None]


def test_a_protocol_s_error_closes_its_connection_only(
    reactor: ChatReactor, logged: list[LogEvent]
) -> None:
    """What a connection's code raises is logged, that connection closed,
    and the others served as before (as Twisted's own reactor does)."""
    port = listening(reactor, Echo)
    faulty, other = connect(reactor, port), connect(reactor, port)
    faulty.sendall(b"boom")
    assert read(reactor, faulty, 1) == b""  # closed
    assert [repr(f.value) for f in failures(logged)] == [
        'RuntimeError("a protocol\'s bug")'
    ]
    other.sendall(b"still")
    assert read(reactor, other, 5) == b"STILL"
    faulty.close()
    other.close()


class Closer(Protocol):
    """Closes every other connection of its factory when it reads."""

    connections: ClassVar[list[Closer]] = []
    reads: ClassVar[list[bytes]] = []

    def connectionMade(self) -> None:
        self.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.reads.append(data)
        for other in self.connections:
            if other is not self:
                other.transport.abortConnection()  # type: ignore[union-attr]


def test_an_event_of_a_connection_closed_in_the_same_poll_goes_nowhere(
    reactor: ChatReactor, logged: list[LogEvent]
) -> None:
    """Two connections readable in one poll: the first closes the second,
    whose event is then for nobody: dropped, without an error."""
    Closer.connections, Closer.reads = [], []
    port = listening(reactor, Closer)
    one, two = connect(reactor, port), connect(reactor, port)
    turn_until(reactor, lambda: len(Closer.connections) == 2)
    one.sendall(b"a")
    two.sendall(b"b")
    ends = [c.transport.socket for c in Closer.connections]  # type: ignore[union-attr]
    readable, _, _ = select.select(ends, [], [], 10)
    while len(readable) < 2:  # both lines in before the poll
        readable, _, _ = select.select(ends, [], [], 10)
    reactor.iterate(0)
    assert len(Closer.reads) == 1
    assert failures(logged) == []
    one.close()
    two.close()


INSTALL = """
from chatproto import _reactor
print(_reactor.install())
from twisted.internet import reactor
print(type(reactor).__name__, _reactor.install())
"""


def test_install_makes_it_the_reactor_once() -> None:
    """In a fresh interpreter: installed as the global reactor; asked
    again (a reactor is installed), it leaves it."""
    done = subprocess.run(
        [sys.executable, "-c", INSTALL], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().split() == ["True", "ChatReactor", "False"]
