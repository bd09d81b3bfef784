"""The server over real loopback sockets, in the test's reactor."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory

from chatproto.config import ServerConfig
from chatproto.server import ChatFactory, send_buffer
from tests.peer import Peer

WELCOME = b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
r: Any = reactor


@pytest.fixture
def server() -> Any:
    factory = ChatFactory(ServerConfig(flood_rate=0, max_output=1 << 20), clock=r)
    port = pytest_twisted.blockon(
        TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    )
    yield factory, port.getHost().port
    for session in tuple(factory.admission.connections):
        session.connection.abort()
    pytest_twisted.blockon(port.stopListening())


async def connect(port: int) -> Peer:
    peer = await TCP4ClientEndpoint(r, "127.0.0.1", port).connect(
        Factory.forProtocol(Peer)
    )
    assert isinstance(peer, Peer)
    await peer.until(WELCOME)
    peer.take()
    return peer


async def register(port: int, nick: str) -> Peer:
    peer = await connect(port)
    peer.send(b"/pseudo\r\n" + nick.encode() + b"\r\n")
    await peer.until(b"=>" + nick.encode() + b"\n----------------------\n")
    peer.take()
    return peer


@pytest_twisted.ensureDeferred
async def test_two_users_chat_publicly_and_privately(server: Any) -> None:
    """Over TCP: register two users, exchange a public and a private line."""
    factory, port = server
    alice = await register(port, "alice")
    bob = await register(port, "bob")
    await alice.until(b"-Connexion de bob\n")
    alice.take()
    alice.send(b"salut bob\n")
    assert (await bob.until(b"salut bob\n")).endswith(b"-alice: salut bob\n")
    # Nagle's algorithm is off for whoever talked, and only for them.
    assert factory.sessions["alice"].connection.transport.getTcpNoDelay()
    assert not factory.sessions["bob"].connection.transport.getTcpNoDelay()
    bob.send("msg alice un secret \u00e0 toi\n".encode())
    got = await alice.until(b"toi\n")
    assert got.endswith("-message privé de bob: un secret à toi\n".encode())
    bob.take()
    bob.send(b"/quit\n")
    assert (await bob.until(b"Deconnexion\n")) == b"Deconnexion\n"
    await bob.closed
    assert (await alice.until(b"bob\n")).endswith("-Déconnection de bob\n".encode())
    assert list(factory.sessions) == ["alice"]


@pytest_twisted.ensureDeferred
async def test_a_reader_that_stops_reading_is_cut_the_others_are_served(
    server: Any,
) -> None:
    """A client that stops reading is disconnected once the server holds more
    than max_output for it; a reading client gets every line in order."""
    factory, port = server
    talker = await register(port, "talker")
    reader = await register(port, "reader")
    stuck = await register(port, "stuck")
    stuck_transport: Any = stuck.transport
    stuck_transport.pauseProducing()  # stop reading: its kernel buffers fill
    line = b"x" * 4000
    count = 3000  # 12 MB: far more than loopback's socket buffers hold
    for i in range(count):
        talker.send(b"%05d %s\n" % (i, line))
    await reader.until(b"%05d " % (count - 1))
    received = reader.take().splitlines()
    numbers = [
        int(text.split(b": ")[1][:5]) for text in received if b"talker: " in text
    ]
    assert numbers == list(range(count))
    assert any(b"-D\xc3\xa9connection de stuck" in text for text in received) or (
        b"-D\xc3\xa9connection de stuck" in await reader.until(b"de stuck\n")
    )
    assert "stuck" not in factory.sessions
    stuck_transport.resumeProducing()
    await stuck.closed


def kernel_send_queue(transport: Any) -> int:
    """Bytes the kernel holds for a connection, sent or not yet acknowledged."""
    raw = fcntl.ioctl(transport.socket.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    queued: int = struct.unpack("i", raw)[0]
    return queued


@pytest_twisted.ensureDeferred
async def test_a_stalled_reader_pins_little_kernel_memory() -> None:
    """The kernel's share of what a stalled reader costs is bounded by a fixed
    send buffer (a quarter of max_output, at most 256 KiB), not left to grow
    to tcp_wmem's maximum (4 MiB): kernel and server together stay within a
    small multiple of max_output."""
    factory = ChatFactory(ServerConfig(flood_rate=0, max_output=8 << 20), clock=r)
    listening = await TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    port = listening.getHost().port
    try:
        talker = await register(port, "talker")
        reader = await register(port, "reader")
        stuck = await register(port, "stuck")
        stuck_transport: Any = stuck.transport
        stuck_transport.pauseProducing()
        for i in range(1000):  # 4 MB
            talker.send(b"%05d %s\n" % (i, b"x" * 4000))
        await reader.until(b"00999 ")
        output: Any = factory.sessions["stuck"].connection
        server_side: Any = output.transport
        assert kernel_send_queue(server_side) <= 2 * send_buffer(8 << 20)
        assert server_side.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= (
            2 * 256 * 1024
        )
    finally:
        for session in tuple(factory.admission.connections):
            session.connection.abort()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_client_that_shuts_down_its_side_has_its_lines_sent(
    server: Any,
) -> None:
    """Over TCP, a client that sends its lines and shuts down its side (as
    nc -N does) is answered Deconnexion once they are all sent."""
    _, port = server
    reader = await register(port, "reader")
    writer = await register(port, "writer")
    writer.send(b"".join(b"line %d\n" % i for i in range(30)))
    writer_transport: Any = writer.transport
    writer_transport.loseWriteConnection()
    assert (await writer.until(b"Deconnexion\n")).endswith(b"Deconnexion\n")
    got = await reader.until("Déconnection de writer\n".encode())
    lines = [line for line in got.splitlines() if b"-writer: " in line]
    assert [line.split(b": ", 1)[1] for line in lines] == [
        b"line %d" % i for i in range(30)
    ]
