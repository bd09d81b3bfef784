"""What chatproto reads or replaces of Twisted beyond its documented
interfaces, all of it in chatproto/_twisted.py, checked here with the
Twisted that is installed, on real loopback connections where it takes
one, so that a Twisted release that renames or changes one of them fails
here (CI runs this on the latest Twisted and on the lowest setup.cfg
allows) instead of quietly degrading the server:

- unsent() reads a file-descriptor transport's C{dataBuffer}, C{offset}
  and C{_tempDataLen}, directly or under a TLS layer (its C{transport});
  without them it returns None and the server falls back to counting what
  it wrote. holds() reads C{dataBuffer} and C{_tempDataLen}.
- direct_socket() gives the C{socket} of a C{tcp.Connection} whose C{TLS}
  is false (Output writes straight to it while holds() is false), and
  socket_of() the socket under TCP or TLS, for its options.
- replace_message_buffers() replaces the WebSocket wire protocol's
  C{_textBuffer} and C{_bytesBuffer}, whose C{add} and C{done} Twisted
  calls for each fragment and each whole message.
- endpoint_address() reads the server endpoints' C{_interface} and
  C{_port}.
- share_labels() replaces a TCP server transport's C{logstr} and
  C{repstr}, which its C{logPrefix()} and C{repr()} give.
- import_without_tls() counts on Twisted's TCP transport, reactors' base
  class, endpoints and HTTP client importing without pyOpenSSL (each has
  a fallback for its absence), and a reactor then still listening on TCP.
"""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import WebSocketResource
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

import chatproto
from chatproto._twisted import (
    direct_socket,
    endpoint_address,
    holds,
    replace_message_buffers,
    share_labels,
    socket_of,
    unsent,
)
from tests.peer import Peer
from tests.test_tls import self_signed

r: Any = reactor
DATA = 4 << 20  # far more than loopback's socket buffers take at once


class Holders(Factory):
    """The server side: protocols that do nothing, kept for the test to
    write to their transports."""

    def __init__(self) -> None:
        self.built: list[Protocol] = []

    def buildProtocol(self, addr: object) -> Protocol:
        self.built.append(Protocol())
        return self.built[-1]

    def transport(self) -> Any:
        """The first connection's transport, once it is connected."""
        return self.built[0].transport if self.built else None


async def until_true(condition: Any, seconds: float = 10.0) -> None:
    """Let the reactor run until C{condition()} holds, for at most C{seconds}."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await deferLater(r, 0.01, lambda: None)
    raise AssertionError(f"still false after {seconds} s")


@pytest_twisted.ensureDeferred
async def test_unsent_counts_what_twisted_holds_for_a_tcp_reader_that_stopped() -> None:
    factory = Holders()
    listening = await TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    try:
        port = listening.getHost().port
        reader = await TCP4ClientEndpoint(r, "127.0.0.1", port).connect(
            Factory.forProtocol(Peer)
        )
        assert isinstance(reader, Peer)
        client: Any = reader.transport
        client.pauseProducing()
        await until_true(lambda: factory.transport() is not None)
        transport = factory.transport()

        # What Output.write checks before it sends to the socket itself.
        assert isinstance(transport, tcp.Connection) and not transport.TLS
        assert isinstance(transport.socket, socket.socket)
        assert direct_socket(transport) is socket_of(transport) is transport.socket
        assert unsent(transport) == 0
        assert not holds(transport)

        transport.write(b"x" * DATA)
        assert unsent(transport) == DATA  # nothing sent before the next turn
        await until_true(lambda: (unsent(transport) or 0) < DATA)
        assert 0 < (unsent(transport) or 0) < DATA  # the kernel took a part
        assert holds(transport)

        client.resumeProducing()
        await until_true(lambda: len(reader.received) == DATA)
        assert unsent(transport) == 0
        assert not holds(transport)
        client.loseConnection()
        await reader.closed
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_tcp_server_transport_s_labels_are_replaced_by_shared_ones() -> None:
    """A TCP server transport's logPrefix() and repr() are its C{logstr}
    and C{repstr}, one of each per connection; share_labels() makes them
    one pair for every connection of a protocol class."""
    factory = Holders()
    listening = await TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    try:
        port = listening.getHost().port
        peers = [
            await TCP4ClientEndpoint(r, "127.0.0.1", port).connect(
                Factory.forProtocol(Peer)
            )
            for _ in range(2)
        ]
        await until_true(lambda: len(factory.built) == 2 and factory.built[1].transport)
        first, second = (p.transport for p in factory.built)
        assert isinstance(first, tcp.Server)
        assert first.logPrefix() == first.logstr
        assert first.logPrefix() != second.logPrefix()
        assert repr(first) == first.repstr and repr(first) != repr(second)

        for built in factory.built:
            share_labels(built.transport, built)
        assert first.logPrefix() == "Protocol"
        assert first.logPrefix() is second.logPrefix()
        assert repr(first) == "<Protocol connection>"
        assert repr(first) is repr(second)
        for peer in peers:
            assert isinstance(peer, Peer)
            peer.transport.loseConnection()
            await peer.closed
    finally:
        await listening.stopListening()


def test_labels_of_a_transport_without_them_are_left_alone() -> None:
    """A transport without the two strings (a test's, TLS) is not touched."""
    transport = StringTransport()
    share_labels(transport, Protocol())
    assert not hasattr(transport, "logstr") and not hasattr(transport, "repstr")


@pytest_twisted.ensureDeferred
async def test_unsent_counts_what_twisted_holds_under_a_tls_layer(
    tmp_path: Path,
) -> None:
    pem = self_signed(tmp_path)
    factory = Holders()
    listening = await serverFromString(
        r, f"ssl:0:privateKey={pem}:interface=127.0.0.1"
    ).listen(factory)
    try:
        trust = ssl.Certificate.loadPEM(pem.read_bytes())
        tls = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        tcp_endpoint = TCP4ClientEndpoint(r, "127.0.0.1", listening.getHost().port)
        reader = await wrapClientTLS(tls, tcp_endpoint).connect(
            Factory.forProtocol(Peer)
        )
        assert isinstance(reader, Peer)
        client: Any = reader.transport
        await until_true(lambda: factory.transport() is not None)
        transport = factory.transport()
        transport.write(b"hello")  # the handshake, then one record
        await reader.until(b"hello")
        reader.take()

        # The TLS layer is not a tcp.Connection: write() goes through it; the
        # socket (for SO_SNDBUF) and the bytes held are those of the layer below.
        assert not isinstance(transport, tcp.Connection)
        assert isinstance(transport.transport.socket, socket.socket)
        assert direct_socket(transport) is None
        assert socket_of(transport) is transport.transport.socket
        assert unsent(transport) == 0

        client.pauseProducing()
        transport.write(b"x" * DATA)
        assert (unsent(transport) or 0) >= DATA  # encrypted, not yet sent

        client.resumeProducing()
        await until_true(lambda: len(reader.received) == DATA)
        assert unsent(transport) == 0
        client.loseConnection()
        await reader.closed
    finally:
        await listening.stopListening()


def test_tcp_and_ssl_server_endpoints_keep_their_port_and_interface(
    tmp_path: Path,
) -> None:
    pem = self_signed(tmp_path)
    for description, address in (
        ("tcp:7300:interface=127.0.0.1", ("127.0.0.1", 7300)),
        ("tcp:7301", ("", 7301)),
        (f"ssl:7302:privateKey={pem}:interface=127.0.0.1", ("127.0.0.1", 7302)),
        ("tcp:99999", ("", 99999)),  # as given: tap.py checks the range
        (f"unix:{tmp_path}/chat.sock", None),
    ):
        endpoint: Any = serverFromString(r, description)
        assert endpoint_address(endpoint) == address
    six: Any = serverFromString(r, "tcp6:7303:interface=\\:\\:1")
    assert isinstance(six, TCP6ServerEndpoint)
    assert endpoint_address(six) == ("::1", 7303)


class Kept:
    """A message buffer that keeps what Twisted hands it."""

    def __init__(self, empty: str | bytes) -> None:
        self.empty = empty
        self.added: list[str | bytes] = []
        self.pieces: list[str | bytes] = []  # every one, kept

    def add(self, new: str | bytes) -> None:
        self.added.append(new)
        self.pieces.append(new)

    def done(self) -> Any:
        whole = self.empty[:0].join(self.added)  # type: ignore[arg-type]
        self.added = []
        return whole


class Replacing:
    """A WebSocket protocol that replaces its transport's message buffers
    as the chat's does, and keeps the messages Twisted hands it."""

    def __init__(self) -> None:
        self.text, self.binary = Kept(""), Kept(b"")
        self.messages: list[str | bytes] = []

    def negotiationStarted(self, transport: Any) -> None:
        replace_message_buffers(transport, self.text, self.binary)

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.messages.append(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        self.messages.append(data)

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: object) -> None:
        pass


def test_a_websocket_s_fragments_go_through_its_replaced_buffers() -> None:
    """Twisted's WebSocket hands each fragment of a message to the buffer
    that replaced its C{_textBuffer} (C{_bytesBuffer} for binary), and the
    message it delivers is that buffer's C{done}."""
    replacing = Replacing()
    root = Resource()
    factory = SimpleNamespace(buildProtocol=lambda request: replacing)
    root.putChild(b"ws", WebSocketResource(factory))
    channel = Site(root).buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    browser = WSConnection(ConnectionType.CLIENT)
    channel.dataReceived(browser.send(Request(host="localhost", target="/ws")))
    browser.receive_data(transport.value())
    assert any(isinstance(e, AcceptConnection) for e in browser.events())
    channel.dataReceived(
        browser.send(TextMessage("bon", message_finished=False))
        + browser.send(TextMessage("jour"))
        + browser.send(BytesMessage(b"\x00\x01"))
    )
    assert replacing.messages == ["bonjour", b"\x00\x01"]
    assert replacing.text.pieces == ["bon", "jour"]
    assert replacing.binary.pieces == [b"\x00\x01"]


def test_replacing_buffers_twisted_lacks_replaces_nothing() -> None:
    """A WebSocket transport without the two buffers (another Twisted): an
    AttributeError, and nothing set on it."""
    bare = SimpleNamespace(_textBuffer=None)
    with pytest.raises(AttributeError):
        replace_message_buffers(bare, Kept(""), Kept(b""))
    assert bare._textBuffer is None and not hasattr(bare, "_bytesBuffer")


# The attributes above: private, or no documented interface (but offset,
# too common a name to look for).
INTERNALS = {
    "dataBuffer",
    "_tempDataLen",
    "TLS",
    "_textBuffer",
    "_bytesBuffer",
    "_port",
    "_interface",
    "logstr",
    "repstr",
}


def test_only_chatproto_twisted_reads_twisted_s_internals() -> None:
    """No module of chatproto but _twisted.py names one of the attributes
    above on an object not its own (an attribute, or a getattr/hasattr/
    setattr string), so that the list above is the whole contract."""
    readers = set()
    for path in Path(chatproto.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            named: object
            if isinstance(node, ast.Attribute):
                owner = node.value
                named = node.attr
                if isinstance(owner, ast.Name) and owner.id == "self":
                    continue
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "getattr",
                "hasattr",
                "setattr",
            ):
                if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant):
                    continue
                named = node.args[1].value
            else:
                continue
            if named in INTERNALS:
                readers.add(path.name)
    assert readers == {"_twisted.py"}


WITHOUT_TLS = """
import socket, sys
from chatproto._twisted import TLS_IMPORTERS, import_without_tls
assert import_without_tls((*TLS_IMPORTERS, "twisted.web.websocket"))
assert not [m for m in sys.modules if m.startswith(("OpenSSL", "cryptography"))]
from twisted.internet import posixbase, reactor, tcp
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.protocol import Factory, Protocol
assert posixbase.tls is None and not tcp.Connection.TLS
class Hello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")
        self.transport.loseConnection()
class Reader(Protocol):
    def dataReceived(self, data):
        print(data.decode())
    def connectionLost(self, reason):
        reactor.stop()
def listening(port):
    where = f"tcp:127.0.0.1:{port.getHost().port}"
    return clientFromString(reactor, where).connect(Factory.forProtocol(Reader))
endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
endpoint.listen(Factory.forProtocol(Hello)).addCallback(listening)
reactor.callLater(10, reactor.stop)
reactor.run()
import OpenSSL  # kept out while Twisted was imported, importable after
print(import_without_tls())
"""


def test_twisted_imports_and_serves_tcp_without_pyopenssl() -> None:
    """In a fresh interpreter (a test run has pyOpenSSL imported): Twisted's
    modules import with pyOpenSSL kept out, and a TCP endpoint serves."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TLS], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().split() == ["hello", "False"]


TXREDISAPI_WITHOUT_TLS = """
import sys
from chatproto._twisted import WithoutTLS, import_with_tls_placeholders
from chatproto._twisted import import_without_tls
assert import_without_tls()
assert import_with_tls_placeholders("txredisapi")
assert not [m for m in sys.modules if m.startswith(("OpenSSL", "cryptography"))]
assert "twisted.internet.ssl" not in sys.modules
import txredisapi
assert txredisapi.TLSMemoryBIOFactory is WithoutTLS
assert txredisapi.ssl.ClientContextFactory is WithoutTLS
assert issubclass(txredisapi.RedisFactory, object)
try:
    txredisapi.ssl.ClientContextFactory()
except RuntimeError as e:
    print("refused")
from twisted.internet import ssl  # the real one, after
print(ssl.ClientContextFactory is not WithoutTLS, "OpenSSL" in sys.modules)
"""


def test_txredisapi_imports_with_twisted_tls_as_placeholders() -> None:
    """txredisapi imports Twisted's TLS at its top (twisted.internet.ssl,
    twisted.protocols.tls), which needs pyOpenSSL: it imports with
    placeholders in their place (its TLS refuses to be made), pyOpenSSL
    kept out; the real modules import afterwards."""
    pytest.importorskip("txredisapi")
    done = subprocess.run(
        [sys.executable, "-c", TXREDISAPI_WITHOUT_TLS], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().splitlines() == ["refused", "True True"]
