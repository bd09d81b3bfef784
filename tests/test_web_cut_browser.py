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

from tests.conftest import CHROMIUM
from tests.test_web_browser import Page
from tests.web_server import WebChat

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
WAIT = 15_000  # ms: every wait is bounded
expect.set_options(timeout=WAIT)


class Proxy:
    """A TCP proxy on 127.0.0.1 to C{port}, for a browser: each direction
    of every connection can be held (what is read from one side waits,
    unsent), and the connections dropped (L{reset}), as a network that
    comes back drops the connections that crossed the cut."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()  # browser to server flows
        self.down = threading.Event()  # server to browser flows
        self.up.set()
        self.down.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed: the end
            while True:
                browser, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target))
                with self.lock:
                    self.sockets += [browser, server]
                for source, sink, flowing in (
                    (browser, server, self.up),
                    (server, browser, self.down),
                ):
                    threading.Thread(
                        target=self._pipe, args=(source, sink, flowing), daemon=True
                    ).start()

    def _pipe(
        self, source: socket.socket, sink: socket.socket, flowing: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not flowing.wait(30):
                    return
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def hold_upstream(self) -> None:
        """What the browser sends (its pongs too) is held."""
        self.up.clear()

    def hold(self) -> None:
        """Nothing passes either way."""
        self.up.clear()
        self.down.clear()

    def reset(self) -> None:
        """The connections of the cut are dropped, what was held with them;
        new connections pass."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for each in sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()
        self.up.set()
        self.down.set()

    def close(self) -> None:
        self.listener.close()
        self.reset()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    # A ping a second: a user whose pongs stop is gone within 4 s.
    server = WebChat(tmp_path, "--shutdown-timeout=2", "--ping-interval=1")
    server.start()
    yield server
    server.stop()


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
    assert "vu 2" in lines[at - 2] and "Connexion perdue" in lines[at - 1]
    assert [line.split(" ", 1)[1] for line in lines[at + 1 :]] == [
        "bob pendant la coupure",
        "alice s'en va",
        "bob après son départ",
    ]
    assert alice.errors == [] and alice.dialogs == []
