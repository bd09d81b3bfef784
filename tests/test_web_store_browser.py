"""The page against the real server: Debian's chromium (as in
tests/test_web_browser.py) on a real `twistd -n chat --web` with its store
in the test's directory, and raw TCP users beside it: the older lines loaded
by scrolling up, the search panel, a protected nickname remembered by the
page, what was said since its last visit, through a kill -9."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet import task
from twisted.internet.interfaces import IReactorFromThreads

from chatproto import wire
from chatproto.store import Store
from tests.browser import MARKS, WAIT, expect
from tests.test_twistd import Line, register
from tests.web_server import WebChat

pytestmark = MARKS

# A raw user says its lines at once: no flood control in the way.
FAST = ("--shutdown-timeout=2", "--flood-burst=1000", "--flood-rate=1000")
PASSWORD = "mot de passe"
AT_START = "— début de l'historique —"
# Every line of a list: its class and its text (a line's text without its
# time and nick; a separator's whole text).
LINES = """(list) => [...list.querySelectorAll("li")].map((item) => [
  item.className,
  (item.querySelector(".text") ?? item).textContent,
])"""
SAVED = "() => localStorage.getItem('chatproto.remember')"
QUIET = "() => !document.getElementById('live').hasAttribute('aria-busy')"
# The log scrolled to its top by the user, and where the line holding TEXT
# then is, from the top of the log's view: read at once, before the page
# can hear of the scroll (its event comes later).
SCROLL_TOP = """(text) => {
  const log = document.getElementById("log");
  log.scrollTop = 0;
  const item = [...log.children].find((li) => li.textContent.includes(text));
  return item.getBoundingClientRect().top - log.getBoundingClientRect().top;
}"""
WHERE = """(text) => {
  const log = document.getElementById("log");
  const item = [...log.children].find((li) => li.textContent.includes(text));
  return item.getBoundingClientRect().top - log.getBoundingClientRect().top;
}"""


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    server = WebChat(tmp_path, *FAST)
    yield server
    server.stop()


class Tab:
    """One browser context on the real chat, with what it must never do
    recorded: throw, or break the Content-Security-Policy."""

    def __init__(self, browser: Any, chat: WebChat) -> None:
        self.context = browser.new_context(viewport={"width": 1000, "height": 600})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.goto(chat.url)

    def _console(self, message: Any) -> None:
        # A reconnection's refused connections are the browser's to log.
        if message.type == "error" and "WebSocket" not in message.text:
            self.errors.append(message.text)

    def join(self, nick: str) -> None:
        field = self.page.get_by_label("Pseudo")
        field.fill(nick)
        field.press("Enter")

    def type_password(self, password: str) -> None:
        field = self.page.get_by_label("Mot de passe")
        expect(field).to_be_visible()
        field.fill(password)
        field.press("Enter")

    def connected(self, nick: str, timeout: int = WAIT) -> None:
        expect(self.page.locator("#status")).to_have_text(
            f"connecté : {nick}", timeout=timeout
        )

    def lines(self, selector: str = "#log") -> list[list[str]]:
        result: list[list[str]] = self.page.locator(selector).evaluate(LINES)
        return result

    def said(self) -> list[str]:
        """The texts of the public lines shown, in order."""
        return [text for kind, text in self.lines() if kind.startswith("public")]


def say(user: Line, nick: str, texts: list[str]) -> None:
    """C{user} says C{texts}; returns once the server has them all (its
    answer to a /history 1 after them is the last one)."""
    user.send("".join(f"{text}\n" for text in texts).encode())
    user.send(b"/history 1\n")
    user.until(f"{nick}: {texts[-1]}\n".encode())


def test_scrolling_up_loads_the_older_lines_of_the_store_until_its_start(
    chat: WebChat, browser: Any
) -> None:
    chat.start()
    carol = register(chat.port, "carol")
    said = [f"ligne {n}" for n in range(1, 201)]
    say(carol, "carol", said)

    alice = Tab(browser, chat)
    alice.join("alice")
    alice.connected("alice")
    expect(alice.page.locator("#log li").last).to_contain_text("messages précédents")
    alice.page.wait_for_function(QUIET)
    shown = alice.said()
    assert shown == said[-len(shown) :]
    assert 0 < len(shown) < 200
    firsts = [int(shown[0].split()[1])]

    first = alice.page.locator("#log li").first
    while (head := first.text_content()) != AT_START:
        top = alice.page.locator("#log .public").first.text_content()
        where = alice.page.evaluate(SCROLL_TOP, top)
        expect(first).not_to_have_text(head)
        alice.page.wait_for_function(QUIET)
        if first.text_content() != AT_START:
            firsts.append(int(alice.said()[0].split()[1]))
            # What the user looked at has not moved.
            assert abs(alice.page.evaluate(WHERE, top) - where) <= 1
        assert len(firsts) < 10, firsts

    assert firsts == sorted(firsts, reverse=True)
    assert len(set(firsts)) == len(firsts)
    assert firsts[-1] == 1
    assert alice.said() == said
    assert alice.lines()[:3] == [
        ["separator", AT_START],
        ["arrival history", "carol arrive"],
        ["public history", "ligne 1"],
    ]
    assert alice.errors == []


def seed(path: Path, when: float, line: bytes) -> None:
    """Put C{line}, kept at C{when}, in the store at C{path} (a new one),
    through the store's own writer thread."""

    class Now:
        def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
            f(*args, **kwargs)

    clock = task.Clock()
    clock.advance(when)
    store = Store.open(str(path), clock, cast(IReactorFromThreads, Now()))
    store.start()
    store.history.record(line)
    closed = store.close()
    deadline = time.monotonic() + 10
    while not closed.called:
        assert time.monotonic() < deadline
        time.sleep(0.01)  # the writer thread commits, then closes


def test_search_finds_a_word_whatever_its_accents_and_case(
    chat: WebChat, browser: Any
) -> None:
    yesterday = time.time() - 86400
    t = time.localtime(yesterday)
    stamp = f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]"
    seed(chat.cwd / "chat.sqlite3", yesterday, f"{stamp}-dave: l'Éléphant\n".encode())
    chat.start()
    carol = register(chat.port, "carol")
    say(carol, "carol", ["un éléphant rose", "une souris"])

    bob = Tab(browser, chat)
    bob.join("bob")
    bob.connected("bob")
    search = bob.page.get_by_label("Rechercher")
    search.fill("ELEPHANT")
    search.press("Enter")
    panel = bob.page.get_by_role("region", name="Recherche")
    expect(panel.get_by_role("status")).to_have_text(
        "recherche « ELEPHANT » (2 lignes)"
    )
    day = wire.day_line(t).decode().strip("-\n ")
    assert bob.lines("#found") == [
        ["separator", f"— {day} —"],
        ["public history", "l'Éléphant"],
        ["public history", "un éléphant rose"],
    ]
    assert bob.errors == []


def owner(port: int, nick: str) -> Line:
    """A TCP user that registers C{nick} and protects it, then leaves."""
    user = register(port, nick)
    user.send(f"/register {PASSWORD}\n".encode())
    user.until(wire.notice(wire.REGISTER_DONE.format(nick)))
    user.send(b"/quit\n")
    user.until(wire.BYE)
    return user


def test_a_remembered_protected_nickname_gets_what_was_said_since_through_a_kill(
    chat: WebChat, browser: Any
) -> None:
    chat.start()
    owner(chat.port, "prof")
    carol = register(chat.port, "carol")
    prof = Tab(browser, chat)
    prof.page.get_by_label("se souvenir de moi").check()
    prof.join("prof")
    prof.type_password(PASSWORD)
    prof.connected("prof")
    saved = json.loads(prof.page.evaluate(SAVED))
    assert saved == {"nick": "prof", "password": PASSWORD}

    # It leaves; lines are said; it comes back and signs in by itself.
    prof.page.goto("about:blank")
    carol.until("Déconnection de prof\n".encode())
    say(carol, "carol", ["pendant", "ton", "absence"])
    prof.page.goto(chat.url)
    prof.connected("prof")
    since = "— 3 messages depuis votre dernière visite —"
    expect(prof.page.locator("#log .separator", has_text="depuis")).to_have_text(since)
    prof.page.wait_for_function(QUIET)
    log = prof.lines()
    at = log.index(["separator", since])
    assert [text for _, text in log[at + 1 :] if not text.startswith("—")][:3] == [
        "pendant",
        "ton",
        "absence",
    ]
    assert [kind for kind, _ in log[at + 1 : at + 4]] == ["public history"] * 3
    assert prof.said().count("pendant") == 1

    # Killed, restarted on the same store: the page reconnects and gets
    # exactly what was said meanwhile.
    say(carol, "carol", ["en direct"])
    expect(prof.page.locator("#log li").last).to_contain_text("en direct")
    time.sleep(1.5)  # its position saved as it goes (positions.SAVE_INTERVAL)
    assert chat.proc is not None
    chat.proc.send_signal(signal.SIGKILL)
    chat.proc.wait(10)
    expect(prof.page.locator("#status")).to_contain_text("reconnexion")
    before = len(prof.lines())
    # Lines said before the page is back: offline, it cannot be back first.
    prof.context.set_offline(True)
    chat.start()
    dave = register(chat.port, "dave")
    say(dave, "dave", ["après", "le redémarrage"])
    prof.context.set_offline(False)
    prof.connected("prof", timeout=30_000)
    expect(prof.page.locator("#log li").last).to_contain_text("le redémarrage")
    prof.page.wait_for_function(QUIET)
    separators = [text for kind, text in prof.lines()[before:] if kind == "separator"]
    assert separators == ["— 3 messages depuis votre dernière visite —"]
    after = [text for kind, text in prof.lines()[before:] if kind.startswith("public")]
    assert after == ["après", "le redémarrage"]
    assert prof.said().count("en direct") == 1
    assert prof.said().count("pendant") == 1
    assert prof.errors == []


def test_a_wrong_password_lets_nobody_in(chat: WebChat, browser: Any) -> None:
    chat.start()
    owner(chat.port, "prof")
    carol = register(chat.port, "carol")
    prof = Tab(browser, chat)
    prof.join("prof")
    prof.type_password("pas le bon")
    expect(prof.page.locator("#join-error")).to_contain_text("Mot de passe refusé")
    expect(prof.page.get_by_label("Pseudo")).to_be_focused()
    expect(prof.page.get_by_label("Message")).to_be_hidden()
    carol.send(b"/list\n")
    carol.until(b"Utilisateurs en ligne:\n")
    users = carol.until(wire.RULE)
    assert users == b"=>carol\n" + wire.RULE
    assert prof.errors == []
