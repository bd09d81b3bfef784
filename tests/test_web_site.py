"""The connections of the chat's HTTP sites (chatproto/sites.py): the page's
site over Twisted's real HTTP channel on a StringTransport and a Clock, and
the metrics site; what the chat counts once a connection is a WebSocket."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from chatproto import wire
from chatproto.admission import EVICTION_GRACE
from chatproto.metrics_page import metrics_site
from chatproto.testing import Chat, RecordingTransport
from chatproto.web import site

WELCOME = wire.WELCOME.decode().rstrip("\n")


class Connection:
    """One TCP connection to a site, from C{host}: None if the site
    refused it."""

    def __init__(self, web: Any, host: str = "192.0.2.7") -> None:
        peer = IPv4Address("TCP", host, 50000)
        self.channel = web.buildProtocol(peer)
        self.transport = RecordingTransport(peerAddress=peer)
        if self.channel is not None:
            self.transport.protocol = self.channel
            self.channel.makeConnection(self.transport)

    @property
    def refused(self) -> bool:
        return self.channel is None

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    @property
    def open(self) -> bool:
        return bool(self.transport.connected)


class Browser(Connection):
    """A connection that asks for the WebSocket, and reads its messages."""

    def __init__(self, web: Any, host: str = "192.0.2.7") -> None:
        super().__init__(web, host)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.accepted = False
        if not self.refused:
            self.send(self.ws.send(Request(host="localhost", target="/ws")))

    def messages(self) -> list[str]:
        self.ws.receive_data(self.take())
        got = []
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, TextMessage):
                got.append(event.data)
        return got

    def close(self) -> None:
        self.transport.loseConnection()


def test_a_websocket_gives_its_site_slot_back() -> None:
    """With --max-per-ip 2, sessions one after the other from one address
    (reloads of the page) are all welcomed, and the page is still served:
    each upgraded connection left the site's count, and the chat counted
    it until it closed."""
    chat = Chat(max_per_ip=2)
    web = site(chat.factory)
    for _ in range(5):
        browser = Browser(web)
        assert not browser.refused
        assert browser.messages() == [WELCOME]
        assert len(chat.factory.admission.connections) == 1
        browser.close()
        assert not chat.factory.admission.connections
    page = Connection(web)
    page.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert page.take().startswith(b"HTTP/1.1 200 ")


def test_unregistered_websockets_make_room_for_a_browser_as_tcp_ones_do() -> None:
    """A full chat of browsers that never register keeps no one out: once
    they have been there EVICTION_GRACE, the oldest makes room for a
    newcomer, a browser as for a TCP user."""
    chat = Chat(max_connections=4, max_per_ip=0, max_per_network=0)
    web = site(chat.factory)
    squatters = [Browser(web, f"192.0.2.{i}") for i in range(4)]
    assert all(s.messages() == [WELCOME] for s in squatters)
    chat.advance(EVICTION_GRACE)
    honest = Browser(web, "198.51.100.1")
    assert not honest.refused
    assert honest.messages() == [WELCOME]
    made_room = wire.notice(wire.MADE_ROOM).decode().rstrip("\n")
    assert squatters[0].messages() == [made_room]
    assert len(chat.factory.admission.connections) == 4


@pytest.mark.parametrize(
    "header",
    [b"Content-Length: 268435456", b"Transfer-Encoding: chunked"],
)
def test_a_request_with_a_body_is_refused_from_its_headers(header: bytes) -> None:
    """The site takes no body: one announced is answered 413 as soon as the
    headers are in, and the connection closed, before any of it is read
    (Twisted would spool it to a temporary file, then answer)."""
    web = site(Chat().factory)
    connection = Connection(web)
    connection.send(b"POST / HTTP/1.1\r\nHost: localhost\r\n" + header + b"\r\n\r\n")
    assert connection.take().startswith(b"HTTP/1.1 413 ")
    assert not connection.open
    assert getattr(connection.channel.requests[0], "content", None) is None


def test_a_request_without_a_body_is_served() -> None:
    web = site(Chat().factory)
    connection = Connection(web)
    connection.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
    assert connection.take().startswith(b"HTTP/1.1 200 ")
    assert connection.open


def test_a_request_sent_a_byte_at_a_time_is_cut_at_the_deadline() -> None:
    """Twisted's idle timeout restarts with every byte: a connection has a
    deadline instead, from its accept (20 s), whatever it sends."""
    chat = Chat()
    web = site(chat.factory)
    connection = Connection(web)
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n"
    for second in range(19):
        connection.send(request[second : second + 1])
        chat.advance(1)
        assert connection.open, second
    chat.advance(1)
    assert connection.transport.aborted
    assert not web.admission.connections


def test_the_deadline_does_not_cut_a_websocket() -> None:
    chat = Chat()
    web = site(chat.factory)
    browser = Browser(web)
    assert browser.messages() == [WELCOME]
    chat.advance(30)
    assert browser.open
    assert not web.admission.connections


def test_the_site_bounds_connections_per_address_and_per_network() -> None:
    """Before their handshake, connections are bounded as the chat's are:
    --max-per-ip from one address, --max-per-network from one network; a
    refused one is closed at once, unanswered."""
    chat = Chat(max_per_ip=2, max_per_network=3)
    web = site(chat.factory)
    assert not Connection(web, "192.0.2.1").refused
    assert not Connection(web, "192.0.2.1").refused
    assert Connection(web, "192.0.2.1").refused  # a third from one address
    assert not Connection(web, "192.0.2.2").refused
    assert Connection(web, "192.0.2.3").refused  # a fourth from 192.0.2.0/24
    assert not Connection(web, "198.51.100.1").refused
    assert chat.factory.metrics.refusals["per_address"] == 1
    assert chat.factory.metrics.refusals["per_network"] == 1


def test_a_full_site_makes_room_with_its_oldest_connection() -> None:
    """Past its bound in all, a newcomer is refused while the others are
    young; once the oldest has been open EVICTION_GRACE, it is aborted to
    make room, as an unregistered TCP connection is."""
    chat = Chat(max_connections=40, max_per_ip=0, max_per_network=0)
    web = site(chat.factory)
    held = [Connection(web, f"192.0.2.{i % 250}") for i in range(64)]
    assert not any(c.refused for c in held)
    assert Connection(web, "198.51.100.1").refused
    chat.advance(EVICTION_GRACE)
    newcomer = Connection(web, "198.51.100.1")
    assert not newcomer.refused
    assert held[0].transport.aborted
    assert not held[1].transport.aborted


def test_the_metrics_site_holds_a_few_connections() -> None:
    """/metrics: at most 16 connections at once (300 idle ones were held),
    each with the deadline."""
    chat = Chat()
    web = metrics_site(chat.factory, chat.clock)
    held = [Connection(web, "127.0.0.1") for _ in range(16)]
    assert not any(c.refused for c in held)
    assert Connection(web, "127.0.0.1").refused
    held[0].transport.loseConnection()
    assert not Connection(web, "127.0.0.1").refused
    chat.advance(20)
    assert all(c.transport.aborted for c in held[1:])
