"""`twistd -n chat --web ...` as a user runs it: a websockets client and a
TCP client in one chat, and the page's headers over real HTTP."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from chatproto.web import CONTENT_SECURITY_POLICY
from tests.test_twistd import register
from tests.web_server import WebChat

pytestmark = pytest.mark.slow
WELCOME = "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo"


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    server = WebChat(tmp_path, "--shutdown-timeout=2")
    server.start()
    yield server
    server.stop()


def test_websocat_chats_like_nc(chat: WebChat) -> None:
    """A WebSocket client types lines as a TCP client does."""
    alice = register(chat.port, "alice")
    url = f"ws://127.0.0.1:{chat.web_port}/ws"
    with connect(url, open_timeout=5, close_timeout=5) as ws:
        assert ws.recv(timeout=5) == WELCOME
        ws.send("/pseudo")
        assert ws.recv(timeout=5) == "Entrez votre pseudo: "
        ws.send("bob")
        assert ws.recv(timeout=5) == "Bienvenue bob"
        alice.until(b"-Connexion de bob\n")
        ws.send("bonjour")
        assert alice.until(b"bonjour\n").endswith(b"-bob: bonjour\n")
        alice.send(b"msg bob psst\n")
        got = [ws.recv(timeout=5) for _ in range(6)]  # the list, then the line
        assert isinstance(got[-1], str)
        assert got[-1].endswith("-message privé de alice: psst")
        ws.send("/quit")
        assert ws.recv(timeout=5) == "Deconnexion"
    assert alice.until(b"bob\n").endswith("-Déconnection de bob\n".encode())


def test_the_page_is_served_with_its_security_headers(chat: WebChat) -> None:
    with urllib.request.urlopen(chat.url, timeout=5) as response:
        body = response.read()
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert b"<script" not in body or b'src="app.js"' in body
