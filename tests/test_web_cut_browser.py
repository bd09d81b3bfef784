"""A network cut under a page, in a real browser (Debian's chromium driven
by Playwright, as in tests/test_web_browser.py): the page reaches the chat
through a loopback proxy that the test cuts, as a train's tunnel does,
while another page goes on chatting. Once back, the page shows every line
said meanwhile, and none twice."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import MARKS, SAVED, expect
from tests.test_twistd import register
from tests.test_web_browser import Page
from tests.web_server import WebChat, running

pytestmark = MARKS


class Proxy:
    """A TCP proxy on 127.0.0.1 to C{port}, for a browser: each direction
    of every connection can be held (what is read from one side waits,
    unsent), and the browser's side of the connections dropped
    (L{reset}), as a network that comes back drops the connections that
    crossed the cut; the server's side is closed too, or left open and
    silent, as the server sees a cut: not at all until its pings run out."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[_Connection] = []
        self.silent: list[_Connection] = []  # kept open until close()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed: the end
            while True:
                browser, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target))
                connection = _Connection(browser, server)
                with self.lock:
                    self.connections.append(connection)
                connection.start()

    def hold_upstream(self) -> None:
        """What the browsers send (their pongs too) is held."""
        with self.lock:
            for connection in self.connections:
                connection.up.clear()

    def hold(self) -> None:
        """Nothing passes either way."""
        with self.lock:
            for connection in self.connections:
                connection.up.clear()
                connection.down.clear()

    def reset(self, server_sees: bool = True) -> None:
        """The connections of the cut are dropped on the browser's side,
        with what was held; new connections pass. C{server_sees}: the
        server's side is closed too, else left open, and silent."""
        with self.lock:
            connections, self.connections = self.connections, []
            if not server_sees:
                self.silent += connections
        for connection in connections:
            connection.drop(server_sees)

    def close(self) -> None:
        self.listener.close()
        self.reset()
        for connection in self.silent:
            connection.server.close()


class _Connection:
    """A browser's connection through the L{Proxy}: two sockets, and
    whether each direction flows."""

    def __init__(self, browser: socket.socket, server: socket.socket) -> None:
        self.browser = browser
        self.server = server
        self.up = threading.Event()  # browser to server flows
        self.down = threading.Event()  # server to browser flows
        self.up.set()
        self.down.set()
        self.silent = False  # the server's side: never written nor closed

    def start(self) -> None:
        for source, sink, flowing in (
            (self.browser, self.server, self.up),
            (self.server, self.browser, self.down),
        ):
            threading.Thread(
                target=self._pipe, args=(source, sink, flowing), daemon=True
            ).start()

    def _pipe(
        self, source: socket.socket, sink: socket.socket, flowing: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not flowing.wait(30) or self.silent:
                    return
                sink.sendall(data)
        if not self.silent:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def drop(self, server_sees: bool) -> None:
        self.silent = not server_sees
        sides = (self.browser, self.server) if server_sees else (self.browser,)
        for side in sides:
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
            side.close()
        self.up.set()
        self.down.set()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    # A ping a second: a user whose pongs stop is gone within 4 s.
    with running(tmp_path, "--shutdown-timeout=2", "--ping-interval=1") as server:
        yield server


@pytest.fixture
def proxy(chat: WebChat) -> Iterator[Proxy]:
    proxy = Proxy(chat.web_port)
    yield proxy
    proxy.close()


def test_lines_said_during_a_cut_are_shown_once_the_page_is_back(
    chat: WebChat, proxy: Proxy, browser: Any
) -> None:
    alice = Page(browser, f"http://127.0.0.1:{proxy.port}/")
    alice.join("alice")
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")
    bob = Page(browser, chat.url)
    bob.join("bob")
    expect(alice.entry("bob arrive")).to_be_visible()
    alice.say("bonjour")
    expect(bob.entry("bonjour")).to_be_visible()
    bob.say("avant")
    expect(alice.entry("avant")).to_be_visible()

    # Alice's pongs stop reaching the server: it cannot know what she gets
    # from now on. She gets two lines.
    proxy.hold_upstream()
    bob.say("vu 1")
    bob.say("vu 2")
    expect(alice.entry("vu 2")).to_be_visible()
    # Then nothing passes: what the server writes to her until her pings
    # run out is lost.
    proxy.hold()
    bob.say("pendant la coupure")
    alice.say("jamais arrivé")  # held by the cut, lost with it
    expect(bob.entry("alice s'en va")).to_be_visible()
    bob.say("après son départ")
    proxy.reset()

    # Back: every line once, those she missed after a separator.
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")
    expect(alice.entry("après son départ")).to_be_visible()
    texts = alice.log.locator("li .text").all_inner_texts()
    said = [
        "bonjour",
        "avant",
        "vu 1",
        "vu 2",
        "pendant la coupure",
        "après son départ",
    ]
    assert {text: texts.count(text) for text in said} == dict.fromkeys(said, 1)
    # The lines she got live, then the separator, then those she missed,
    # her departure among them.
    lines = alice.log.locator("li").all_inner_texts()
    at = next(n for n, line in enumerate(lines) if "dernière visite" in line)
    assert lines[at] == "— 3 messages depuis votre dernière visite —"
    assert "vu 2" in lines[at - 3] and "jamais arrivé" in lines[at - 2]
    assert "Connexion perdue" in lines[at - 1]
    assert [line.split(" ", 1)[1] for line in lines[at + 1 :]] == [
        "bob pendant la coupure",
        "alice s'en va",
        "bob après son départ",
        "1 ligne envoyée pendant la coupure n'est pas arrivée : la voici dans "
        "le champ, à renvoyer.",
    ]
    # Her line that never reached the server is said so, and is back in
    # the field; the others are not.
    expect(alice.page.get_by_label("Message")).to_have_value("jamais arrivé")
    expect(alice.entry("n'est pas arrivée")).to_have_class("error")  # the last
    assert bob.entry("jamais arrivé").count() == 0
    assert alice.errors == [] and alice.dialogs == []


def test_a_remembered_nickname_comes_back_by_itself_before_the_server_sees_the_cut(
    chat: WebChat, proxy: Proxy, browser: Any
) -> None:
    """The browser sees the cut first: its new connection finds the
    nickname still held by the old one (until the server pings it out),
    and is answered as a wrong password is. The page tries again with the
    saved password, and keeps it."""
    owner = register(chat.port, "alice")
    owner.send(b"/register secret12\n")
    owner.until("Pseudo alice protégé".encode())
    owner.send(b"/quit\n")
    owner.rest()

    alice = Page(browser, f"http://127.0.0.1:{proxy.port}/")
    alice.page.get_by_label("se souvenir de moi").check()
    alice.join("alice")
    password = alice.page.get_by_label("Mot de passe")
    password.fill("secret12")
    password.press("Enter")
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")
    assert alice.page.evaluate(SAVED) == {"nick": "alice", "password": "secret12"}

    proxy.hold()
    proxy.reset(server_sees=False)
    expect(alice.page.locator("#status")).to_contain_text("pseudo encore pris")
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")
    expect(password).to_be_hidden()
    assert alice.page.evaluate(SAVED) == {"nick": "alice", "password": "secret12"}
    assert alice.errors == [] and alice.dialogs == []
