"""The page's site over real loopback sockets (chatproto/sites.py): what is
only seen there, where Twisted's own channel, upgrade and transport close
the connections. Browsers are blocking C{websockets} clients in threads."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from websockets.sync.client import ClientConnection, connect

from chatproto import admission, wire
from chatproto.config import ServerConfig
from chatproto.server import ChatFactory
from chatproto.web import site

r: Any = reactor
WELCOME = "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo"


@contextlib.asynccontextmanager
async def serve(**config: Any) -> AsyncIterator[tuple[ChatFactory, int]]:
    factory = ChatFactory(ServerConfig(flood_rate=0, **config), clock=r)
    port = await TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(site(factory))
    try:
        yield factory, port.getHost().port
    finally:
        for session in tuple(factory.admission.connections):
            session.connection.abort()
        await port.stopListening()


def browser(port: int) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=5, legacy=True
    )


def get_page(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return sock.recv(64)


@pytest_twisted.ensureDeferred
async def test_twenty_sessions_in_a_row_from_one_address_are_all_answered() -> None:
    """--max-per-ip 16: each session closes before the next opens (reloads
    of the page), so every one is welcomed, and the page is served after
    them (the 17th had no answer, nor had GET /)."""
    async with serve(max_per_ip=16) as (_, port):

        def twenty() -> list[str]:
            welcomes = []
            for _ in range(20):
                with browser(port) as ws:
                    welcomes.append(str(ws.recv(timeout=5)))
            return welcomes

        assert await threads.deferToThread(twenty) == [WELCOME] * 20
        assert (await threads.deferToThread(get_page, port)).startswith(
            b"HTTP/1.1 200 "
        )


@pytest_twisted.ensureDeferred
async def test_unregistered_websockets_cannot_keep_a_browser_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chat full of WebSockets that never register: a newcomer makes the
    oldest of them room once it has been there EVICTION_GRACE (0.3 s here),
    as a TCP newcomer does."""
    monkeypatch.setattr(admission, "EVICTION_GRACE", 0.3)
    async with serve(max_connections=20, max_per_ip=0, max_per_network=0) as (
        _,
        port,
    ):

        def squat_then_join() -> tuple[str, str]:
            squatters = [browser(port) for _ in range(20)]
            try:
                for ws in squatters:
                    assert ws.recv(timeout=5) == WELCOME
                time.sleep(0.5)
                with browser(port) as ws:
                    assert ws.recv(timeout=5) == WELCOME
                    ws.send("/pseudo honest")
                    joined = str(ws.recv(timeout=5))
                    while not joined.startswith("Bienvenue"):
                        joined = str(ws.recv(timeout=5))
                return joined, str(squatters[0].recv(timeout=5))
            finally:
                for ws in squatters:
                    ws.close_socket()

        joined, made_room = await threads.deferToThread(squat_then_join)
        assert joined == "Bienvenue honest"
        assert made_room == wire.notice(wire.MADE_ROOM).decode().rstrip("\n")


@pytest_twisted.ensureDeferred
async def test_a_request_sent_a_byte_at_a_time_is_cut_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One byte every 0.2 s (every 20 s in the attack) holds no connection
    past the deadline (1 s here), as it held it past Twisted's idle timeout."""
    monkeypatch.setattr("chatproto.sites.DEADLINE", 1.0)
    async with serve() as (_, port):

        def trickle() -> float:
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                try:
                    for byte in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n":
                        sock.sendall(bytes([byte]))
                        time.sleep(0.2)
                except OSError:  # reset: cut
                    return time.monotonic() - start
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    sock.recv(1)  # b"": closed
            return time.monotonic() - start

        assert await threads.deferToThread(trickle) < 3
