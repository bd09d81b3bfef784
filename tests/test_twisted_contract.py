"""What chatproto reads of Twisted beyond its documented interfaces, checked
on real loopback connections, so that a Twisted release that renames or
changes one of them fails here (CI runs this on the latest Twisted and on
the lowest setup.cfg allows) instead of quietly degrading the server:

- chatproto.server.unsent() reads a file-descriptor transport's
  C{dataBuffer}, C{offset} and C{_tempDataLen}, directly or under a TLS
  layer (its C{transport}); without them it returns None and the server
  falls back to counting what it wrote.
- ChatProtocol.write() sends straight to C{socket} of a C{tcp.Connection}
  whose C{TLS} is false, while C{dataBuffer} and C{_tempDataLen} are empty.
- chatproto.tap reads the server endpoints' C{_port} and C{_interface}.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor, ssl, tcp
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from chatproto.server import unsent
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

        # What write() checks before it sends to the socket itself.
        assert isinstance(transport, tcp.Connection) and not transport.TLS
        assert isinstance(transport.socket, socket.socket)
        assert unsent(transport) == 0
        assert not (transport.dataBuffer or transport._tempDataLen)

        transport.write(b"x" * DATA)
        assert unsent(transport) == DATA  # nothing sent before the next turn
        await until_true(lambda: (unsent(transport) or 0) < DATA)
        assert 0 < (unsent(transport) or 0) < DATA  # the kernel took a part
        assert transport.dataBuffer or transport._tempDataLen

        client.resumeProducing()
        await until_true(lambda: len(reader.received) == DATA)
        assert unsent(transport) == 0
        assert not (transport.dataBuffer or transport._tempDataLen)
        client.loseConnection()
        await reader.closed
    finally:
        await listening.stopListening()


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
    for description, port, interface in (
        ("tcp:7300:interface=127.0.0.1", 7300, "127.0.0.1"),
        ("tcp:7301", 7301, ""),
        (f"ssl:7302:privateKey={pem}:interface=127.0.0.1", 7302, "127.0.0.1"),
    ):
        endpoint: Any = serverFromString(r, description)
        assert (endpoint._port, endpoint._interface) == (port, interface)
    six: Any = serverFromString(r, "tcp6:7303:interface=\\:\\:1")
    assert isinstance(six, TCP6ServerEndpoint)
    assert (six._port, six._interface) == (7303, "::1")
