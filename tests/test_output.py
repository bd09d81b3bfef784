"""The write path over real loopback sockets, and the Twisted internals it
reads (chatproto/output.py): these fail first if a Twisted release changes
them."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, tcp
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater

from chatproto.config import ServerConfig
from chatproto.output import Output, unsent
from chatproto.server import ChatFactory, ChatServerProtocol
from tests.test_sockets import register

r: Any = reactor


@pytest.fixture
def server() -> Any:
    factory = ChatFactory(ServerConfig(flood_rate=0, max_output=8 << 20), clock=r)
    port = pytest_twisted.blockon(
        TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    )
    yield factory, port.getHost().port
    for session in tuple(factory.admission.connections):
        session.connection.abort()
    pytest_twisted.blockon(port.stopListening())


def server_side(factory: ChatFactory, nick: str) -> tuple[ChatServerProtocol, Any]:
    """The server's protocol for C{nick}, and its TCP transport."""
    output = factory.sessions[nick].connection
    assert isinstance(output, Output)
    transport: Any = output.transport
    assert isinstance(transport, tcp.Connection)
    proto = transport.protocol
    assert isinstance(proto, ChatServerProtocol)
    return proto, transport


@pytest_twisted.ensureDeferred
async def test_send_line_and_writes_arrive_in_the_order_they_were_made(
    server: Any,
) -> None:
    """sendLine then a write: FIRST then SECOND on the wire (an inherited
    sendLine once overtook the direct write: SECOND arrived first)."""
    factory, port = server
    alice = await register(port, "alice")
    proto, _ = server_side(factory, "alice")
    proto.sendLine(b"FIRST")
    proto.session.send(b"SECOND\n")
    assert (await alice.until(b"SECOND\n")).endswith(b"FIRST\nSECOND\n")


@pytest_twisted.ensureDeferred
async def test_writes_behind_bytes_twisted_holds_wait_their_turn(server: Any) -> None:
    """Once the kernel's buffer is full and Twisted holds the rest, later
    lines queue behind it, whichever way they are written."""
    factory, port = server
    alice = await register(port, "alice")
    proto, transport = server_side(factory, "alice")
    peer: Any = alice.transport
    peer.pauseProducing()  # alice stops reading
    big = b"".join(b"%07d\n" % i for i in range(200_000))  # 1.6 MB
    proto.session.send(big)
    held = unsent(transport)
    assert held is not None and 0 < held <= len(big)
    proto.sendLine(b"FIRST")
    proto.session.send(b"SECOND\n")
    peer.resumeProducing()
    got = await alice.until(b"SECOND\n")
    assert got.endswith(big + b"FIRST\nSECOND\n")


@pytest_twisted.ensureDeferred
async def test_twisted_s_buffer_is_read_where_the_output_expects_it(
    server: Any,
) -> None:
    """The attributes Output and unsent() read on a TCP transport exist and
    mean what they did: a write through Twisted is held (unsent counts it)
    until the reactor sends it; a write through the Output to an idle
    socket is in the kernel at once."""
    factory, port = server
    alice = await register(port, "alice")
    proto, transport = server_side(factory, "alice")
    assert unsent(transport) == 0
    transport.write(b"through twisted\n")
    assert unsent(transport) == len(b"through twisted\n")
    await alice.until(b"through twisted\n")
    for _ in range(100):  # the reactor has sent it once its buffer is empty
        if unsent(transport) == 0:
            break
        await deferLater(r, 0.01)
    assert unsent(transport) == 0
    proto.session.send(b"straight\n")
    assert unsent(transport) == 0, "the direct write went through Twisted"
    await alice.until(b"straight\n")


@pytest_twisted.ensureDeferred
async def test_writes_go_straight_again_once_twisted_has_sent_what_it_held(
    server: Any,
) -> None:
    """A reader that fell behind and caught up gets its next lines straight
    from the socket again, not through Twisted's buffer for ever."""
    factory, port = server
    alice = await register(port, "alice")
    proto, transport = server_side(factory, "alice")
    peer: Any = alice.transport
    peer.pauseProducing()
    big = b"".join(b"%07d\n" % i for i in range(200_000))  # 1.6 MB
    proto.session.send(big)
    before = unsent(transport)
    assert before is not None and before > 0
    proto.session.send(b"BEHIND\n")
    assert unsent(transport) == before + len(b"BEHIND\n")
    peer.resumeProducing()
    assert (await alice.until(b"BEHIND\n")).endswith(big + b"BEHIND\n")
    for _ in range(100):
        if unsent(transport) == 0:
            break
        await deferLater(r, 0.01)
    assert unsent(transport) == 0
    proto.session.send(b"straight\n")
    assert unsent(transport) == 0, "the write went through Twisted"
    await alice.until(b"straight\n")
