"""The page's history in a real browser (Debian's chromium, as in
tests/test_web_browser.py): the last lines shown on arriving, above the live
ones, and after a cut only what the cut made it miss, at the point of the
cut. The cut is made by a small TCP forwarder between the browser and the
real twistd, which the test closes and opens again while the server runs
(a browser offline does not reliably close an open WebSocket)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_fixture import running_redis
from tests.test_cluster_e2e import WELCOME, Line
from tests.test_twistd import register
from tests.test_web_browser import CHROMIUM, Page, expect, playwright
from tests.web_server import WebChat

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]

# Every line of the conversation: its class and its text (a line's text
# without its time and nick; a separator's or a notice's whole text).
LINES = """() => [...document.querySelectorAll("#log li")].map((item) => [
  item.className,
  (item.querySelector(".text") ?? item).textContent,
])"""
# Record, for every line put in the log from now on, its class, its text, and
# whether the log was aria-busy then (read when the insertion is over: as a
# screen reader's accessibility tree is updated after it, not in it).
WATCH = """() => {
  window.added = [];
  const log = document.getElementById("log");
  new MutationObserver((records) => {
    const busy = log.getAttribute("aria-busy") === "true";
    for (const record of records) {
      for (const item of record.addedNodes) {
        const text = (item.querySelector(".text") ?? item).textContent;
        window.added.push([item.className, text, busy]);
      }
    }
  }).observe(log, { childList: true });
}"""
QUIET = "() => !document.getElementById('log').hasAttribute('aria-busy')"
EARLIER = "— messages précédents —"
MISSED = "— messages manqués pendant la coupure —"


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    # TCP users say many lines at once: past the usual burst of 5.
    server = WebChat(tmp_path, "--shutdown-timeout=2", "--flood-burst=100")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield chromium
        chromium.close()


class Cut:
    """A TCP forwarder on a loopback port to the web port. L{cut} closes
    every connection through it and refuses new ones until L{mend}."""

    def __init__(self, port: int) -> None:
        self.port_to = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.refusing = False
        self.stopped = False
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while not self.stopped:
            try:
                browser, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            browser.settimeout(None)
            if self.refusing:
                browser.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.port_to), timeout=5)
            server.settimeout(None)
            with self.lock:
                self.sockets += [browser, server]
            for source, sink in ((browser, server), (server, browser)):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink), daemon=True
                )
                self.threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(sink)

    def _close(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        self.refusing = True
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            self._close(sock)

    def mend(self, port: int | None = None) -> None:
        """Let connections through again, to C{port} if given (another node
        of a cluster, as behind a load balancer)."""
        if port is not None:
            self.port_to = port
        self.refusing = False

    def close(self) -> None:
        self.stopped = True
        self.cut()
        self.listener.close()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def cut(chat: WebChat) -> Iterator[Cut]:
    forwarder = Cut(chat.web_port)
    yield forwarder
    forwarder.close()


def test_a_page_arriving_shows_the_last_50_lines_above_the_live_ones(
    chat: WebChat, browser: Any
) -> None:
    carol = register(chat.port, "carol")
    dave = register(chat.port, "dave")
    carol.send(b"".join(b"ligne %d\n" % n for n in range(1, 61)))
    dave.until(b"-carol: ligne 60\n")

    alice = Page(browser, chat.url)
    alice.page.evaluate(WATCH)
    alice.join("alice")
    expect(alice.page.locator("#log .separator")).to_have_text(EARLIER)
    alice.page.wait_for_function(QUIET)  # the log is not left busy
    carol.send(b"en direct\n")
    expect(alice.entry("en direct")).to_be_visible()

    history = [["public history", f"ligne {n}"] for n in range(11, 61)]
    assert alice.page.evaluate(LINES) == [
        *history,
        ["separator", EARLIER],
        ["public", "en direct"],
    ]
    # The 50 went in while the log was busy, for a screen reader not to read
    # them out one by one; the live line as ever, announced.
    added = alice.page.evaluate("() => window.added")
    assert [a for a in added if a[2]] == [[*line, True] for line in history] + [
        ["separator", EARLIER, True]
    ]
    assert ["public", "en direct", False] in added
    first = alice.log.locator("li").first
    expect(first.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    expect(first.locator(".from")).to_have_text("carol")
    # The history is no arrival: the user list is the server's.
    expect(alice.page.locator("#users li")).to_have_text(["carol", "dave", "alice"])
    # A /history typed still answers, marked as such.
    alice.say("/history 2")
    expect(alice.log.locator(".separator").last).to_have_text("— fin de l'historique —")
    assert alice.page.evaluate(LINES)[-5:] == [
        ["command own", "/history 2"],
        ["separator", "— historique (2 lignes) —"],
        ["arrival history", "alice arrive"],
        ["public history", "en direct"],
        ["separator", "— fin de l'historique —"],
    ]
    assert alice.dialogs == []
    assert alice.errors == []


def test_after_a_cut_the_page_shows_what_it_missed_once_at_the_cut(
    chat: WebChat, cut: Cut, browser: Any
) -> None:
    carol = register(chat.port, "carol")
    dave = register(chat.port, "dave")
    alice = Page(browser, cut.url)
    alice.join("alice")
    expect(alice.page.locator("#log .separator")).to_have_text(EARLIER)
    carol.send(b"avant la coupure\n")
    expect(alice.entry("avant la coupure")).to_be_visible()
    alice.say("moi aussi")
    dave.until(b"-alice: moi aussi\n")

    cut.cut()
    expect(alice.page.locator("#status")).to_have_text(
        re.compile(r"reconnexion… \(essai \d+\)")
    )
    dave.until("-Déconnection de alice\n".encode())
    carol.send(b"".join(b"pendant %d\n" % n for n in range(1, 7)))
    dave.until(b"-carol: pendant 6\n")
    dave.send(b"".join(b"dave pendant %d\n" % n for n in range(1, 5)))
    carol.until(b"-dave: dave pendant 4\n")
    alice.page.evaluate(WATCH)
    cut.mend()

    expect(alice.page.locator("#status")).to_have_text(
        "connecté : alice", timeout=30_000
    )
    expect(alice.log.locator(".separator").last).to_have_text(MISSED)
    alice.page.wait_for_function(QUIET)
    carol.send(b"apres\n")
    expect(alice.entry("apres")).to_be_visible()

    missed = [["public history", f"pendant {n}"] for n in range(1, 7)]
    missed += [["public history", f"dave pendant {n}"] for n in range(1, 5)]
    added = alice.page.evaluate("() => window.added")
    busy = [["separator", MISSED, True]] + [[*line, True] for line in missed]
    assert [a for a in added if a[2]] == busy
    assert ["public", "apres", False] in added
    assert alice.page.evaluate(LINES) == [
        ["arrival history", "carol arrive"],
        ["arrival history", "dave arrive"],
        ["separator", EARLIER],
        ["public", "avant la coupure"],
        ["public own", "moi aussi"],
        ["error", "Connexion perdue : reconnexion…"],
        ["separator", MISSED],
        *missed,
        ["public", "apres"],
    ]
    assert alice.dialogs == []
    assert alice.errors == []


def registered(port: int, nick: str) -> Line:
    """A TCP user on a cluster node, once that node has joined its cluster
    (until then, registering is refused for the moment)."""
    user = Line(port)
    user.until(WELCOME)
    deadline = time.monotonic() + 15
    while True:
        user.send(f"/pseudo {nick}\n".encode())
        answer = user.until(b"\n")
        if answer == f"Bienvenue {nick}\n".encode():
            break
        assert b"impossible pour le moment" in answer, answer
        assert time.monotonic() < deadline, f"{nick} never registered"
        time.sleep(0.1)  # a real process: wait for it to join its cluster
    user.until(f"=>{nick}\n----------------------\n".encode())
    return user


@pytest.mark.redis
def test_a_page_cut_from_one_node_catches_up_on_another(
    tmp_path: Path, browser: Any
) -> None:
    """Two twistd nodes on one redis-server: the page on the first is cut,
    users on both talk, and it comes back on the second (as a load balancer
    would send it), which reads the same history from Redis."""
    with running_redis(tmp_path) as redis:
        args = ["--redis", redis.url, "--cluster", "web", "--ping-interval", "0"]
        args += ["--flood-burst=100", "--shutdown-timeout=2"]
        nodes = [WebChat(tmp_path, *args), WebChat(tmp_path, *args)]
        forwarder: Cut | None = None
        try:
            for node in nodes:
                node.start()
            carol = registered(nodes[0].port, "carol")
            dave = registered(nodes[1].port, "dave")
            forwarder = Cut(nodes[0].web_port)
            alice = Page(browser, forwarder.url)
            alice.join("alice")
            expect(alice.page.locator("#log .separator")).to_have_text(EARLIER)
            carol.send(b"avant\n")
            expect(alice.entry("avant")).to_be_visible()

            forwarder.cut()
            dave.until("-Déconnection de alice\n".encode())
            carol.send(b"".join(b"pendant %d\n" % n for n in range(1, 4)))
            dave.until(b"-carol: pendant 3\n")
            dave.send(b"".join(b"dave pendant %d\n" % n for n in range(1, 4)))
            carol.until(b"-dave: dave pendant 3\n")
            forwarder.mend(nodes[1].web_port)

            expect(alice.log.locator(".separator").last).to_have_text(
                MISSED, timeout=30_000
            )
            carol.send(b"apres\n")
            expect(alice.entry("apres")).to_be_visible()
            missed = [["public history", f"pendant {n}"] for n in range(1, 4)]
            missed += [["public history", f"dave pendant {n}"] for n in range(1, 4)]
            assert alice.page.evaluate(LINES) == [
                ["arrival history", "carol arrive"],
                ["arrival history", "dave arrive"],
                ["separator", EARLIER],
                ["public", "avant"],
                ["error", "Connexion perdue : reconnexion…"],
                ["separator", MISSED],
                *missed,
                ["public", "apres"],
            ]
            assert alice.errors == []
        finally:
            if forwarder is not None:
                forwarder.close()
            for node in nodes:
                node.stop()
