"""The WebSocket front end, in memory: the real site and room over a
StringTransport and a Clock, a wsproto client on the browser's side."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import ILogObserver, Logger
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol

from chatproto import metrics, wire
from chatproto.session import Session, State
from chatproto.testing import Chat, RecordingTransport
from chatproto.web import (
    CONTENT_SECURITY_POLICY,
    PAGE,
    ChatWebSocket,
    Frames,
    allowed_origin,
    frames,
    parse_hosts,
    parse_origins,
    served_host,
    site,
)

WELCOME = wire.WELCOME.decode().rstrip("\n")


class Browser:
    """One browser's connection to the site: an HTTP request, then (if
    accepted) WebSocket messages both ways."""

    def __init__(
        self,
        chat: Chat,
        origin: str | None = "http://chat.test",
        origins: frozenset[str] = frozenset(),
        host: str = "192.0.2.7",
        port: int = 50000,
        along: tuple[str, ...] = (),
        name: str = "chat.test",
        hosts: frozenset[str] = frozenset({"chat.test"}),
    ) -> None:
        """C{along}: text messages sent in the handshake's own segment;
        C{name}: its C{Host}; C{hosts}: the site's --web-host."""
        self.chat = chat
        peer = IPv4Address("TCP", host, port)
        self.channel = site(chat.factory, origins, hosts).buildProtocol(peer)
        self.transport = RecordingTransport(peerAddress=peer)
        self.transport.protocol = self.channel
        self.channel.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: list[str] = []
        self.close: CloseConnection | None = None
        self.status: int | None = None
        self.body = b""
        self.session: Session | None
        headers = [] if origin is None else [(b"origin", origin.encode())]
        before = set(chat.factory.admission.connections)
        handshake = Request(host=name, target="/ws", extra_headers=headers)
        self.channel.dataReceived(
            self.ws.send(handshake)
            + b"".join(
                FrameProtocol(client=True, extensions=[]).send_data(text)
                for text in along
            )
        )
        self._read()
        new = chat.factory.admission.connections - before
        self.session = new.pop() if new else None

    @property
    def accepted(self) -> bool:
        return self.status == 101

    def _read(self) -> None:
        self.chat.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        if not data:
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.status = 101
            elif isinstance(event, RejectConnection):
                self.status = event.status_code
            elif isinstance(event, RejectData):
                self.body += event.data
            elif isinstance(event, TextMessage):
                assert event.message_finished
                self.messages.append(event.data)
            elif isinstance(event, CloseConnection):
                self.close = event

    def send(self, text: str) -> None:
        """One text message from the browser."""
        self.channel.dataReceived(self.ws.send(TextMessage(text)))

    def send_fragment(self, text: str) -> None:
        """A fragment of a text message; send() ends the message."""
        self.channel.dataReceived(
            self.ws.send(TextMessage(text, message_finished=False))
        )

    def take(self) -> list[str]:
        """The text messages the server sent since the last take."""
        self._read()
        got, self.messages = self.messages, []
        return got

    def register(self, nick: str) -> list[str]:
        self.take()
        self.send(f"/pseudo {nick}")
        got = self.take()
        assert f"Bienvenue {nick}" in got, got
        return got

    @property
    def closed(self) -> bool:
        return not self.transport.connected


def state(browser: Browser) -> State:
    assert browser.session is not None
    return browser.session.state


@pytest.fixture
def chat() -> Chat:
    return Chat()


def test_a_browser_is_welcomed_like_a_tcp_user(chat: Chat) -> None:
    browser = Browser(chat)
    assert browser.accepted
    assert browser.take() == [WELCOME]


def test_a_browser_and_a_tcp_user_chat_publicly_and_privately(chat: Chat) -> None:
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    assert alice.take() == chat.stamp() + b"-Connexion de bob\n"
    browser.send("bonjour")
    assert alice.take() == chat.stamp() + b"-bob: bonjour\n"
    alice.send("salut à toi\n".encode())
    assert browser.take() == [f"{chat.stamp().decode()}-alice: salut à toi"]
    browser.send("msg alice en privé")
    assert alice.take() == chat.stamp() + "-message privé de bob: en privé\n".encode()
    alice.send(b"msg bob toi aussi\n")
    assert browser.take() == [
        f"{chat.stamp().decode()}-message privé de alice: toi aussi"
    ]


def test_each_line_of_a_write_is_one_message_without_its_newline(chat: Chat) -> None:
    chat.user("alice")
    browser = Browser(chat)
    got = browser.register("bob")
    assert got == [
        "Bienvenue bob",
        "----------------------",
        "Utilisateurs en ligne:",
        "=>alice",
        "=>bob",
        "----------------------",
    ]


def test_a_message_holding_newlines_is_several_lines_each_without_its_cr(
    chat: Chat,
) -> None:
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    alice.take()
    browser.send("un\r\ndeux\ntrois\r")
    stamp = chat.stamp()
    assert alice.lines() == [
        stamp + b"-bob: un\n",
        stamp + b"-bob: deux\n",
        stamp + b"-bob: trois\n",
    ]


def test_a_message_past_max_line_is_refused_with_1009_before_it_ends(
    chat: Chat,
) -> None:
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    alice.take()
    limit = chat.factory.config.max_line
    # The first fragment alone passes the limit; the message never ends.
    browser.channel.dataReceived(
        browser.ws.send(TextMessage("é" * limit, message_finished=False))
    )
    browser.take()
    assert browser.close is not None
    assert browser.close.code == 1009
    assert str(limit) in (browser.close.reason or "")
    assert state(browser) is State.GONE
    assert alice.take() == chat.stamp() + "-Déconnection de bob\n".encode()


def test_a_message_past_64_fragments_is_refused_with_1009(chat: Chat) -> None:
    """Empty fragments hold no byte, but each was kept, and each costs the
    server as much as a short line: millions of them grew the server's
    memory and slowed every user's /list."""
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    alice.take()
    for _ in range(64):
        browser.send_fragment("")
    assert browser.take() == []
    assert browser.close is None
    browser.send_fragment("")
    browser.take()
    assert browser.close is not None
    assert browser.close.code == 1009
    assert browser.close.reason == "message en plus de 64 fragments"
    assert state(browser) is State.GONE
    assert alice.take() == chat.stamp() + "-Déconnection de bob\n".encode()


def test_a_message_in_64_fragments_is_one_line(chat: Chat) -> None:
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    alice.take()
    for piece in ["bon", "", "jour"] + [""] * 60:
        browser.send_fragment(piece)
    browser.send("!")
    assert alice.take() == chat.stamp() + b"-bob: bonjour!\n"


def test_a_message_of_max_line_bytes_is_a_line(chat: Chat) -> None:
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    alice.take()
    text = "x" * (chat.factory.config.max_line - len("msg alice "))
    browser.send("msg alice " + text)
    assert alice.take().endswith(text.encode() + b"\n")
    assert browser.close is None


def test_a_binary_message_is_refused_with_1003(chat: Chat) -> None:
    browser = Browser(chat)
    browser.take()
    browser.channel.dataReceived(browser.ws.send(BytesMessage(b"/pseudo bob")))
    browser.take()
    assert browser.close is not None
    assert browser.close.code == 1003
    assert state(browser) is State.GONE


def test_a_handshake_from_another_origin_is_refused_with_403(chat: Chat) -> None:
    browser = Browser(chat, origin="https://evil.example")
    assert browser.status == 403
    assert b"--web-origin" in browser.body
    assert not chat.factory.admission.connections


@pytest.mark.parametrize(
    ("origin", "origins"),
    [
        ("http://chat.test", frozenset()),  # the page's own
        ("https://chat.test", frozenset()),  # the page's own, behind a TLS proxy
        (None, frozenset()),  # not a browser: websocat, a script
        ("https://chat.example.org", frozenset({"https://chat.example.org"})),
    ],
)
def test_a_handshake_from_an_allowed_origin_is_welcomed(
    chat: Chat, origin: str | None, origins: frozenset[str]
) -> None:
    browser = Browser(chat, origin=origin, origins=origins)
    assert browser.accepted
    assert browser.take() == [WELCOME]


@pytest.mark.parametrize(
    "origin",
    ["null", "http://chat.test.evil.example", "ftp://chat.test", "http://chat.test:81"],
)
def test_an_origin_that_only_looks_like_the_page_is_refused(origin: str) -> None:
    assert not allowed_origin(origin, "chat.test", frozenset())


def test_web_origins_are_repeatable_or_comma_separated_and_checked() -> None:
    assert parse_origins(["https://A.example/", "http://b.example:8080,"]) == {
        "https://a.example",
        "http://b.example:8080",
    }
    with pytest.raises(ValueError, match="is not an origin"):
        parse_origins(["chat.example.org"])
    with pytest.raises(ValueError, match="is not an origin"):
        parse_origins(["https://chat.example.org/page"])


def test_a_handshake_for_a_host_not_served_is_refused_with_421(chat: Chat) -> None:
    """DNS rebinding: a page on rebind.example, whose name now resolves to
    this server, is its own origin; only its Host tells it apart."""
    browser = Browser(chat, origin="http://rebind.example", name="rebind.example")
    assert browser.status == 421
    assert browser.body == b"host not served (see --web-host)\n"
    assert not chat.factory.admission.connections


@pytest.mark.parametrize("path", ["/", "/app.js", "/nothing"])
def test_the_page_for_a_host_not_served_is_refused_with_421(
    chat: Chat, path: str
) -> None:
    head, headers = get(chat, path, name="rebind.example:8080")
    assert head.split(b" ")[1] == b"421"
    assert headers[b"content-type"] == [b"text/plain; charset=utf-8"]
    assert headers[b"content-security-policy"] == [CONTENT_SECURITY_POLICY.encode()]


def test_requests_for_a_host_not_served_are_counted_and_logged_as_refusals(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page on a rebinding domain that asks again and again writes one
    log line (then a summary every 10 s, as refused connections do), and
    every refusal is counted under its reason."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(
        metrics, "log", Logger(observer=cast(ILogObserver, seen.append))
    )
    for _ in range(50):
        head, _ = get(chat, "/", name="rebind.example")
        assert head.split(b" ")[1] == b"421"
    assert chat.factory.metrics.refusals["host_not_served"] == 50
    refused = [e for e in seen if e.get("act") == "refused"]
    assert [(e["reason"], e["address"]) for e in refused] == [
        ("host_not_served", "192.0.2.7")
    ]


@pytest.mark.parametrize(
    "header",
    [
        "localhost",
        "localhost:8080",
        "LocalHost.:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "chat.test",  # --web-host
        "Chat.Test:443",
        "192.0.2.80:8080",  # the address the connection reached
    ],
)
def test_the_names_a_site_serves(header: str) -> None:
    here = IPv4Address("TCP", "192.0.2.80", 8080)
    assert served_host(header, here, frozenset({"chat.test"}))


@pytest.mark.parametrize(
    "header",
    [None, "", "rebind.example", "chat.test.rebind.example", "192.0.2.81:8080"],
)
def test_other_names_are_not_served(header: str | None) -> None:
    here = IPv4Address("TCP", "192.0.2.80", 8080)
    assert not served_host(header, here, frozenset({"chat.test"}))


def test_an_ipv4_client_of_an_ipv6_socket_names_the_ipv4_address() -> None:
    here = IPv6Address("TCP", "::ffff:192.0.2.80", 8080)
    assert served_host("192.0.2.80:8080", here, frozenset())
    here = IPv6Address("TCP", "2001:db8::1", 8080)
    assert served_host("[2001:DB8:0::1]:8080", here, frozenset())


def test_web_hosts_are_repeatable_or_comma_separated_and_checked() -> None:
    assert parse_hosts(["Chat.Example.org.", "b.example,[2001:db8::1],"]) == {
        "chat.example.org",
        "b.example",
        "2001:db8::1",
    }
    for wrong in ("https://chat.example.org", "chat.example.org:8443", "a b"):
        with pytest.raises(ValueError, match="is not a host name"):
            parse_hosts([wrong])


def test_a_browser_that_stops_answering_pings_is_dropped(chat: Chat) -> None:
    quiet = Browser(chat, port=50001)
    quiet.register("quiet")
    talker = Browser(chat, port=50002)
    talker.register("talker")
    config = chat.factory.config
    for _ in range(config.max_missed_pings + 1):
        chat.advance(config.ping_interval)
        if "ping" in talker.take():
            talker.send("pong")
    assert quiet.closed
    assert state(quiet) is State.GONE
    assert not talker.closed
    assert "quiet" not in chat.factory.sessions


def test_a_browser_that_stops_reading_is_cut_past_max_output() -> None:
    # Not cut as a flooder, nor for missed pings, meanwhile.
    chat = Chat(flood_rate=0, ping_interval=0)
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    producer = browser.transport.producer
    assert producer is not None
    producer.pauseProducing()  # its TCP buffer is full: it stopped reading
    line = "x" * 1000 + "\n"
    for _ in range(chat.factory.config.max_output // 1000 + 10):
        alice.send(line.encode())
        chat.advance(0.1)
    chat.advance(2)
    alice.send(line.encode())
    chat.advance(0)
    assert browser.closed
    assert browser.transport.aborted
    assert "bob" not in chat.factory.sessions


@pytest.mark.parametrize("registered", [False, True])
def test_a_client_that_pings_and_does_not_read_is_cut_past_max_output(
    registered: bool,
) -> None:
    """Twisted answers each ping frame with a pong, and a client that sends
    pings and reads nothing had the server hold every pong (53 to 650 MiB
    in a minute): pongs count against --max-output like the chat's lines,
    registered or not."""
    chat = Chat(max_output=64 * 1024, flood_rate=0)  # pings are not a flood
    browser = Browser(chat)
    if registered:
        browser.register("bob")
    browser.take()
    producer = browser.transport.producer
    assert producer is not None
    producer.pauseProducing()  # its TCP buffer is full: it stopped reading
    ping = browser.ws.send(Ping(b"p" * 125))
    for _ in range(64 * 1024 // 127 + 10):
        browser.channel.dataReceived(ping)
    assert not browser.closed  # past max_output: a second's grace
    chat.advance(1.5)
    browser.channel.dataReceived(ping)
    assert browser.closed
    assert browser.transport.aborted
    assert not chat.factory.admission.connections


def test_pongs_to_a_client_that_reads_are_sent() -> None:
    chat = Chat(max_output=64 * 1024, flood_rate=0)  # pings are not a flood
    browser = Browser(chat)
    browser.take()
    ping = browser.ws.send(Ping(b"p" * 125))
    for _ in range(64 * 1024 // 127 + 10):
        browser.channel.dataReceived(ping)
    chat.advance(1.5)
    browser.channel.dataReceived(ping)
    assert not browser.closed
    assert browser.transport.value().count(b"\x8a\x7d" + b"p" * 125) == (
        64 * 1024 // 127 + 11
    )


def test_a_ping_after_the_servers_close_frame_is_not_answered(chat: Chat) -> None:
    """wsproto sends nothing after a close frame, and Twisted's attempt to
    answer the ping raised up to the reactor (a traceback in the log, the
    connection dropped): the ping goes unanswered, nor does the client's
    close frame behind it need an answer."""
    browser = Browser(chat)
    browser.register("bob")
    browser.send("/quit")
    assert browser.take() == ["Deconnexion"]
    assert browser.close is not None
    ping = FrameProtocol(client=True, extensions=[]).ping(b"en retard")
    browser.channel.dataReceived(ping + browser.ws.send(browser.close.response()))
    assert browser.transport.value() == b""  # no pong, nor a second close


def test_a_ping_behind_a_refused_message_is_not_answered(chat: Chat) -> None:
    """The refusal's close frame goes out in the middle of the read: the
    ping behind it gets no pong (wsproto sends nothing after a close
    frame), and no exception reaches the reactor."""
    browser = Browser(chat)
    browser.register("bob")
    limit = chat.factory.config.max_line
    too_big = browser.ws.send(TextMessage("x" * (limit + 1), message_finished=False))
    ping = FrameProtocol(client=True, extensions=[]).ping(b"derriere")
    browser.channel.dataReceived(too_big + ping)
    assert b"derriere" not in browser.transport.value()
    browser.take()
    assert browser.close is not None
    assert browser.close.code == 1009


@pytest.mark.parametrize("frame", [Ping(b"p"), Pong(b"p")], ids=["ping", "pong"])
def test_a_flood_of_pings_or_pongs_is_cut_as_a_flood_of_lines(
    chat: Chat, frame: Ping | Pong
) -> None:
    """Each frame costs the server as much as a short line, and a client
    that pinged as fast as it could kept every user's /list at 186 ms: a
    ping or pong frame costs a flood token, as a line does."""
    alice = chat.user("alice")
    browser = Browser(chat)
    browser.register("bob")
    alice.take()
    config = chat.factory.config
    for _ in range(config.flood_queue):  # they wait their turn, as lines
        browser.channel.dataReceived(browser.ws.send(frame))
    assert state(browser) is State.CHATTING
    for _ in range(config.flood_burst + 1):
        browser.channel.dataReceived(browser.ws.send(frame))
    assert state(browser) is State.GONE
    assert wire.FLOOD in browser.take()
    assert alice.take() == chat.stamp() + "-Déconnection de bob\n".encode()


def test_a_ping_now_and_then_is_answered_and_costs_one_line(chat: Chat) -> None:
    browser = Browser(chat)
    browser.register("bob")
    browser.take()
    pongs = 0
    for _ in range(30):
        browser.channel.dataReceived(browser.ws.send(Ping(b"la?")))
        pongs += browser.transport.value().count(b"\x8a\x03la?")
        browser.send("bonjour")
        chat.advance(1)
        if "ping" in browser.take():  # the chat's own, a line
            browser.send("pong")
    assert state(browser) is State.CHATTING
    assert pongs == 30


def test_nagle_is_off_for_a_browser_only_once_it_talks(chat: Chat) -> None:
    browser = Browser(chat)
    browser.register("bob")
    assert not browser.transport.nodelay
    browser.send("bonjour")
    assert browser.transport.nodelay


def test_a_stopping_server_says_goodbye_to_a_browser(chat: Chat) -> None:
    browser = Browser(chat)
    browser.register("bob")
    chat.factory.shutdown()
    assert browser.take() == [wire.STOPPING, "Deconnexion"]
    assert browser.close is not None
    assert browser.close.code == 1000


def test_a_server_line_that_is_not_utf8_is_sent_with_replacement_characters() -> None:
    class Socket:
        transport = RecordingTransport()

        def sendTextMessage(self, text: str) -> None:
            raise AssertionError("frames are written whole")

        def loseConnection(self, code: int = 1000, reason: str = "") -> None:
            pass

        def dataReceived(self, data: bytes) -> None:
            raise AssertionError("nothing is read")

    socket = Socket()
    Frames(socket).write(b"caf\xe9\nok\n")
    assert socket.transport.value() == b"\x81\x06caf\xef\xbf\xbd" + b"\x81\x02ok"


def test_one_write_for_many_browsers_is_framed_once() -> None:
    """The fan-out hands every member of a pass the same bytes: they are
    framed once (the same frames object), and framed anew for other bytes."""
    data = b"[1.2.3]-alice: one\n[1.2.3]-alice: two\n"
    first = frames(data)
    assert frames(data) is first
    assert first == b"\x81\x12[1.2.3]-alice: one\x81\x12[1.2.3]-alice: two"
    assert frames(b"x\n") == b"\x81\x01x"


def test_frame_lengths_take_the_rfc_6455_forms() -> None:
    """7 bits below 126 bytes, 16 bits (126) below 65,536, 64 bits (127) above."""
    assert frames(b"a" * 125 + b"\n")[:2] == b"\x81\x7d"
    assert frames(b"a" * 126 + b"\n")[:4] == b"\x81\x7e\x00\x7e"
    assert frames(b"a" * 65536 + b"\n")[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")


def test_long_public_lines_reach_a_browser_whole(chat: Chat) -> None:
    """Lines of the 16-bit length form decode as one message each."""
    browser = Browser(chat)
    browser.register("bob")
    alice = chat.user("alice")
    browser.take()
    alice.send(b"x" * 300 + b"\n" + b"y" * 3000 + b"\n")
    got = browser.take()
    assert [m.split(": ", 1)[1] for m in got] == ["x" * 300, "y" * 3000]


def get(
    chat: Chat, path: str, name: str = "chat.test"
) -> tuple[bytes, dict[bytes, list[bytes]]]:
    """An HTTP GET of the site (--web-host chat.test) for host C{name}: the
    response's head and its headers."""
    web = site(chat.factory, hosts=frozenset({"chat.test"}))
    peer = IPv4Address("TCP", "192.0.2.7", 1)
    channel = web.buildProtocol(peer)
    transport = RecordingTransport(peerAddress=peer)
    transport.protocol = channel
    channel.makeConnection(transport)
    channel.dataReceived(
        f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, _ = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        header, _, value = line.partition(b": ")
        headers.setdefault(header.lower(), []).append(value)
    return status, headers


@pytest.mark.parametrize(
    ("path", "status", "content_type"),
    [
        ("/", b"200", b"text/html; charset=utf-8"),
        ("/app.js", b"200", b"text/javascript; charset=utf-8"),
        ("/style.css", b"200", b"text/css; charset=utf-8"),
        ("/favicon.svg", b"200", b"image/svg+xml"),
        ("/nothing", b"404", None),
        ("/ws", b"400", None),  # a GET that is not a handshake
    ],
)
def test_every_response_carries_the_security_headers(
    chat: Chat, path: str, status: bytes, content_type: bytes | None
) -> None:
    head, headers = get(chat, path)
    assert head.split(b" ")[1] == status
    assert headers[b"content-security-policy"] == [CONTENT_SECURITY_POLICY.encode()]
    assert headers[b"x-content-type-options"] == [b"nosniff"]
    assert headers[b"referrer-policy"] == [b"no-referrer"]
    if content_type is not None:
        assert headers[b"content-type"] == [content_type]


def test_a_twisted_without_the_message_buffers_refuses_every_websocket(
    chat: Chat,
) -> None:
    """The size limit replaces two private buffers of Twisted's WebSocket: a
    release without them gets no WebSocket at all, never one without the
    limit."""

    class Bare:
        def __init__(self) -> None:
            self.transport = RecordingTransport()

        def sendTextMessage(self, text: str) -> None:
            raise AssertionError("nothing is sent")

    tcp = (bare := Bare()).transport
    protocol = ChatWebSocket(chat.factory, "192.0.2.7", SimpleNamespace())
    tcp.protocol = protocol  # type: ignore[assignment]  # its connectionLost
    protocol.negotiationStarted(bare)
    protocol.negotiationFinished()
    assert tcp.aborted
    assert not chat.factory.admission.connections


def test_the_page_has_no_inline_script_or_style_and_labels_its_fields() -> None:
    """The CSP allows only the page's own files: anything inline would be
    refused by the browser, so there must be none."""
    html = (PAGE / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="app.js" defer>']
    assert "<style" not in html
    assert not re.search(r"\s(style|on[a-z]+)=", html)
    assert '<label for="nick">Pseudo</label>' in html
    assert '<label for="message">Message</label>' in html
    assert 'role="log" aria-live="polite"' in html
    assert "innerHTML" not in (PAGE / "app.js").read_text()


def test_a_browser_counts_as_the_web_front_end(chat: Chat) -> None:
    """The metrics' users and connections by front end: a browser is web."""
    browser = Browser(chat)
    browser.register("bob")
    tcp = chat.user("alice")
    assert browser.session is not None and browser.session.front_end == "web"
    assert tcp.session.front_end == "tcp"


def test_messages_in_the_handshakes_segment_are_read_like_any_other(
    chat: Chat,
) -> None:
    """A client may send its first frames with its handshake, in one
    segment: they are lines like any other (the HTTP channel kept them, and
    the user never registered)."""
    alice = chat.user("alice")
    browser = Browser(chat, along=("/pseudo bob", "bonjour"))
    assert browser.accepted
    assert browser.take()[:2] == [WELCOME, "Bienvenue bob"]
    assert alice.lines() == [
        chat.stamp() + b"-Connexion de bob\n",
        chat.stamp() + b"-bob: bonjour\n",
    ]


def test_a_burst_with_the_handshake_does_not_stop_the_reading() -> None:
    """Past 16 KiB kept after a request, the HTTP channel pauses the
    transport (it stopped reading the connection for 70 s): the frames go to
    the WebSocket instead, and the connection is read on."""
    chat = Chat(flood_rate=0)
    alice = chat.user("alice")
    lines = tuple(f"ligne {i} " + "x" * 4000 for i in range(5))
    browser = Browser(chat, along=("/pseudo bob", *lines))
    assert browser.transport.producerState == "producing"
    browser.take()
    browser.send("encore")
    said = alice.take()
    assert b"-bob: ligne 4 " in said
    assert b"-bob: encore\n" in said
