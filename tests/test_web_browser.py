"""The page in a real browser: Debian's chromium driven by Playwright, two
browser contexts (one phone-sized) and one raw TCP client in one chat run by
a real twistd process, restarted once under the pages.

Never `playwright install` (it downloads a browser): the test uses
/usr/bin/chromium, which .ci/run installs with apt-get. (The README's
screenshot is tests/test_web_rooms_browser.py's.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import MARKS, WAIT, expect
from tests.test_twistd import register
from tests.web_server import WebChat, running

pytestmark = MARKS
# The tab hidden, then shown, as a browser does when the user switches tabs.
HIDE = """Object.defineProperty(document, "hidden", {value: true, configurable: true});
document.dispatchEvent(new Event("visibilitychange"));"""
SHOW = """Object.defineProperty(document, "hidden", {value: false, configurable: true});
document.dispatchEvent(new Event("visibilitychange"));"""
BACKGROUND = "getComputedStyle(document.body).backgroundColor"


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    with running(tmp_path, "--shutdown-timeout=2") as server:
        yield server


class Page:
    """One user's tab, with what it must never do recorded: run a dialog
    (an injected script's alert), or throw. C{script}: one to run in the
    page before its own (an init script)."""

    def __init__(
        self, browser: Any, url: str, script: str | None = None, **context: Any
    ) -> None:
        self.context = browser.new_context(**context)
        if script is not None:
            self.context.add_init_script(script)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def join(self, nick: str) -> None:
        field = self.page.get_by_label("Pseudo")
        field.fill(nick)
        field.press("Enter")

    def say(self, line: str) -> None:
        field = self.page.get_by_label("Message")
        field.fill(line)
        field.press("Enter")

    @property
    def log(self) -> Any:
        return self.page.get_by_role("log")

    def entry(self, text: str) -> Any:
        """The conversation's line holding C{text}."""
        return self.log.locator("li", has_text=text).last


# The conversation made short and read from its top, then back to normal.
# (Scrolled up once the page saw it shorter: the page keeps at its bottom
# a conversation that gets shorter, as when the message field grows.)
SCROLL_UP = """async () => {
  const log = document.getElementById("log");
  log.style.flex = "none";
  log.style.height = "3em";
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  log.scrollTop = 0;
}"""
AT_BOTTOM = """() => {
  const log = document.getElementById("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}"""
UNSHORTEN = """() => {
  const log = document.getElementById("log");
  log.style.flex = "";
  log.style.height = "";
}"""


def test_two_browsers_and_a_tcp_client_chat_through_a_restart(
    chat: WebChat, browser: Any
) -> None:
    carol = register(chat.port, "carol")
    alice = Page(browser, chat.url, viewport={"width": 1100, "height": 640})
    bob = Page(
        browser,
        chat.url,
        viewport={"width": 360, "height": 740},
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )

    # Registration: a refused nickname says why and asks again.
    alice.join("alice")
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")
    bob.join("<img src=x onerror=alert(1)>")
    expect(bob.page.locator("#join-error")).to_contain_text("Pseudo refusé")
    expect(bob.page.get_by_label("Pseudo")).to_be_focused()
    bob.join("bob")
    expect(bob.page.locator("#status")).to_have_text("connecté : bob")
    carol.until(b"-Connexion de bob\n")

    # The user list, with every user, reachable on the phone too.
    expect(alice.page.locator("#users li")).to_have_text(["carol", "alice", "bob"])
    bob.page.get_by_text("Présents").click()
    expect(bob.page.locator("#users li")).to_have_text(["carol", "alice", "bob"])
    expect(alice.entry("bob arrive")).to_have_class("arrival")

    # Public lines, each way.
    alice.say("bonjour à tous, voyez https://example.org/doc")
    expect(bob.entry("bonjour à tous")).to_contain_text("alice")
    link = bob.entry("bonjour à tous").get_by_role("link")
    expect(link).to_have_attribute("href", "https://example.org/doc")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    assert carol.until(b"doc\n").endswith(
        b"-alice: bonjour \xc3\xa0 tous, voyez https://example.org/doc\n"
    )
    expect(alice.entry("bonjour à tous")).to_have_class("public own")
    carol.send(b"salut bob, de carol\n")
    expect(alice.entry("de carol")).to_contain_text("carol")
    expect(bob.entry("de carol").locator("mark")).to_have_text("bob")

    # A line that is HTML is shown as text: no element, no script.
    bob.say("<img src=x onerror=alert(1)>")
    expect(alice.entry("onerror")).to_contain_text("<img src=x onerror=alert(1)>")
    assert alice.log.locator("img").count() == 0
    assert bob.log.locator("img").count() == 0

    # Private lines, each way: a click on a name starts one.
    alice.page.locator("#users").get_by_role("button", name="bob").click()
    expect(alice.page.get_by_label("Message")).to_have_value("msg bob ")
    alice.page.get_by_label("Message").press_sequentially("entre nous")
    alice.page.get_by_label("Message").press("Enter")
    expect(bob.entry("entre nous")).to_have_class("private")
    expect(bob.entry("entre nous")).to_contain_text("privé")
    bob.say("msg carol coucou")
    assert carol.until(b"coucou\n").endswith("-message privé de bob: coucou\n".encode())
    carol.send(b"msg alice psst\n")
    expect(alice.entry("psst")).to_have_class("private")

    # A hidden tab gets an unread marker, cleared when it is shown again.
    alice.page.evaluate(HIDE)
    carol.send(b"tu es la ?\n")
    expect(
        alice.page.get_by_role("button", name="nouveaux messages (1)")
    ).to_be_visible()
    expect(alice.page).to_have_title("(1) chat")
    alice.page.evaluate(SHOW)
    expect(alice.page.locator("#unread")).to_be_hidden()
    expect(alice.page).to_have_title("chat")

    # Scrolled up (the conversation made short, read from its top), a new
    # line is marked too; the marker takes the reader down and goes.
    alice.page.evaluate(SCROLL_UP)
    carol.send(b"en haut ?\n")
    marker = alice.page.get_by_role("button", name="nouveaux messages (1)")
    expect(marker).to_be_visible()
    marker.click()
    expect(alice.page.locator("#unread")).to_be_hidden()
    assert alice.page.evaluate(AT_BOTTOM)
    alice.page.evaluate(UNSHORTEN)

    # The phone is in dark mode: the page follows it.
    assert bob.page.evaluate(BACKGROUND) == "rgb(18, 18, 18)"
    assert alice.page.evaluate(BACKGROUND) == "rgb(255, 255, 255)"

    # A departure, styled apart, and gone from the list.
    carol.send(b"/quit\n")
    expect(alice.entry("carol s'en va")).to_have_class("departure")
    expect(alice.page.locator("#users li")).to_have_text(["alice", "bob"])

    # A restart: the pages reconnect by themselves and register again, the
    # line being typed and the history kept.
    alice.page.get_by_label("Message").fill("brouillon")
    chat.stop()
    expect(alice.page.locator("#status")).to_have_text(
        re.compile(r"reconnexion… \(essai \d+\)")
    )
    expect(alice.entry("s'arrête")).to_be_visible()
    chat.start()
    expect(alice.page.locator("#status")).to_have_text(
        "connecté : alice", timeout=30_000
    )
    expect(bob.page.locator("#status")).to_have_text("connecté : bob", timeout=30_000)
    expect(alice.page.get_by_label("Message")).to_have_value("brouillon")
    alice.page.get_by_label("Message").press("ArrowUp")
    expect(alice.page.get_by_label("Message")).to_have_value("msg bob entre nous")
    alice.say("de retour")
    expect(bob.entry("de retour")).to_contain_text("alice")
    users = bob.page.locator("#users li")
    expect(users).to_have_count(2)
    assert sorted(users.all_inner_texts()) == ["alice", "bob"]

    for page in (alice, bob):
        assert page.dialogs == []
        assert page.errors == []
