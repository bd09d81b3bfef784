"""The WebSocket front end over real loopback sockets: the site in the test's
reactor, each browser a blocking C{websockets} client in a thread."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Request, TextMessage

from chatproto.config import ServerConfig
from chatproto.server import ChatFactory
from chatproto.web import site
from tests.test_sockets import register
from tests.test_tls import self_signed

r: Any = reactor
WELCOME = "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo"


@pytest.fixture
def server() -> Any:
    factory = ChatFactory(ServerConfig(flood_rate=0, max_output=64 * 1024), clock=r)
    tcp = pytest_twisted.blockon(
        TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    )
    web = pytest_twisted.blockon(
        TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(site(factory))
    )
    yield factory, tcp.getHost().port, web.getHost().port
    for session in tuple(factory.admission.connections):
        session.connection.abort()
    pytest_twisted.blockon(tcp.stopListening())
    pytest_twisted.blockon(web.stopListening())


def browser(port: int, **kwargs: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, legacy=True, **kwargs)


def until(ws: ClientConnection, wanted: str) -> list[str]:
    """The messages received up to one equal to C{wanted}, 5 s at most."""
    got: list[str] = []
    deadline = time.monotonic() + 5
    while wanted not in got:
        message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert isinstance(message, str)
        got.append(message)
    return got


@pytest_twisted.ensureDeferred
async def test_a_browser_and_a_tcp_user_chat_over_real_sockets(server: Any) -> None:
    _, tcp_port, web_port = server
    alice = await register(tcp_port, "alice")
    ws = await threads.deferToThread(browser, web_port)
    try:

        def join() -> list[str]:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("/pseudo bob")
            return until(ws, "=>bob")

        assert "Bienvenue bob" in await threads.deferToThread(join)
        await alice.until(b"-Connexion de bob\n")
        ws.send("bonjour de bob")
        await alice.until(b"-bob: bonjour de bob\n")
        alice.send("msg bob à toi\n".encode())
        got = await threads.deferToThread(
            until_suffix, ws, "-message privé de alice: à toi"
        )
        assert got[-1].endswith("-message privé de alice: à toi")
    finally:
        await threads.deferToThread(ws.close)  # it waits for the server's answer


def until_suffix(ws: ClientConnection, suffix: str) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + 5
    while not (got and got[-1].endswith(suffix)):
        message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert isinstance(message, str)
        got.append(message)
    return got


@pytest_twisted.ensureDeferred
async def test_a_huge_message_is_refused_with_1009_as_it_arrives(server: Any) -> None:
    """A 32 MiB message (which stalled the reactor for 14 s without a limit)
    is refused after its first --max-line bytes: the close comes back at
    once, and the server never holds the message."""
    factory, tcp_port, web_port = server
    alice = await register(tcp_port, "alice")

    def flood() -> tuple[int | None, float]:
        with connect(
            f"ws://127.0.0.1:{web_port}/ws", open_timeout=5, max_size=None
        ) as ws:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("/pseudo bob")
            until(ws, "=>bob")
            start = time.monotonic()
            try:
                ws.send("x" * (32 << 20))
                while time.monotonic() < start + 5:
                    ws.recv(timeout=5)  # the end of the user list, then none
            except ConnectionClosed as e:
                return (e.rcvd.code if e.rcvd else None), time.monotonic() - start
            return None, time.monotonic() - start

    flooded = threads.deferToThread(flood)
    await alice.until(b"-Connexion de bob\n")
    code, seconds = await flooded
    assert code == 1009
    assert seconds < 5
    await alice.until("-Déconnection de bob\n".encode())
    assert "bob" not in factory.sessions


@pytest_twisted.ensureDeferred
async def test_a_handshake_from_another_origin_is_refused(server: Any) -> None:
    factory, _, web_port = server

    def foreign() -> int:
        try:
            with connect(
                f"ws://127.0.0.1:{web_port}/ws", origin=Origin("https://evil.example")
            ):
                pass
        except InvalidStatus as e:
            return e.response.status_code
        return 101

    assert await threads.deferToThread(foreign) == 403
    assert not factory.admission.connections


@pytest_twisted.ensureDeferred
async def test_a_handshake_for_a_rebound_host_name_is_refused(server: Any) -> None:
    """DNS rebinding: a page on rebind.example whose name now resolves to
    127.0.0.1 sends its own origin and host; the site serves neither."""
    factory, _, web_port = server

    def rebound() -> bytes:
        client = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host="rebind.example",
            target="/ws",
            extra_headers=[(b"origin", b"http://rebind.example")],
        )
        with socket.create_connection(("127.0.0.1", web_port), timeout=5) as sock:
            sock.sendall(client.send(request))
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            return received.partition(b"\r\n")[0]

    assert await threads.deferToThread(rebound) == b"HTTP/1.1 421 Misdirected Request"
    assert not factory.admission.connections


@pytest_twisted.ensureDeferred
async def test_a_browser_that_stops_reading_is_cut_the_others_are_served(
    server: Any,
) -> None:
    """The stalled browser's TCP connection fills; its Output (the same as
    TCP's, over the WebSocket frames) cuts it past --max-output (64 KiB
    here) while a TCP reader gets every line."""
    factory, tcp_port, web_port = server
    talker = await register(tcp_port, "talker")
    reader = await register(tcp_port, "reader")
    ws = await threads.deferToThread(browser, web_port)
    try:

        def join() -> None:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("/pseudo stuck")
            until(ws, "=>stuck")

        await threads.deferToThread(join)
        # The client thread reads nothing from now on: its socket fills.
        for i in range(2000):
            talker.send(b"%05d %s\n" % (i, b"x" * 1000))
        await reader.until(b"01999 ")
        deadline = time.monotonic() + 10
        while "stuck" in factory.sessions and time.monotonic() < deadline:
            talker.send(b"encore\n")
            await reader.until(b"-talker: encore\n")
        assert "stuck" not in factory.sessions
        await reader.until("-Déconnection de stuck\n".encode())
    finally:
        ws.close_socket()


@pytest_twisted.ensureDeferred
async def test_a_tls_endpoint_serves_the_websocket(tmp_path: Path) -> None:
    """--web ssl:... : a wss client registers, chats with a TCP user, and
    its output goes through the same Output over TLS."""
    pem = self_signed(tmp_path)
    factory = ChatFactory(ServerConfig(flood_rate=0), clock=r)
    tcp = await TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    web = await serverFromString(
        r, f"ssl:0:privateKey={pem}:interface=127.0.0.1"
    ).listen(site(factory))
    try:
        alice = await register(tcp.getHost().port, "alice")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        def chat() -> list[str]:
            url = f"wss://127.0.0.1:{web.getHost().port}/ws"
            with connect(url, ssl=context, open_timeout=5, close_timeout=5) as ws:
                assert ws.recv(timeout=5) == WELCOME
                ws.send("/pseudo bob")
                until(ws, "=>bob")
                ws.send("bonjour en TLS")
                ws.send("/quit")
                return until(ws, "Deconnexion")

        chatted = threads.deferToThread(chat)
        await alice.until(b"-bob: bonjour en TLS\n")
        assert (await chatted)[-1] == "Deconnexion"
        await alice.until("-Déconnection de bob\n".encode())
    finally:
        for session in tuple(factory.admission.connections):
            session.connection.abort()
        await tcp.stopListening()
        await web.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_client_that_closes_and_keeps_its_socket_open_leaves_at_once(
    server: Any,
) -> None:
    """A client's close frame ends its WebSocket: the server answers it and
    closes the TCP connection, so the user leaves the chat then, not when
    its pings run out."""
    factory, tcp_port, web_port = server
    alice = await register(tcp_port, "alice")

    def close_and_wait() -> bytes:
        client = WSConnection(ConnectionType.CLIENT)
        with socket.create_connection(("127.0.0.1", web_port), timeout=5) as sock:
            sock.sendall(client.send(Request(host="127.0.0.1", target="/ws")))
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head, _, received = received.partition(b"\r\n\r\n")
            client.receive_data(head + b"\r\n\r\n")
            list(client.events())  # the handshake is accepted
            sock.sendall(client.send(TextMessage("/pseudo bob")))
            while b"=>bob" not in received:
                received += sock.recv(65536)
            sock.sendall(client.send(CloseConnection(1000)))
            # Its socket stays open until bob is seen gone (5 s at most).
            departed.wait(5)
            return received

    departed = threading.Event()
    closed = threads.deferToThread(close_and_wait)
    await alice.until(b"-Connexion de bob\n")
    left = time.monotonic()
    await alice.until("-Déconnection de bob\n".encode())
    departed.set()
    assert time.monotonic() - left < 2
    await closed
    assert "bob" not in factory.sessions
