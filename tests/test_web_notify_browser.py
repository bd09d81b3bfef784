"""Desktop notifications and the unread count in the tab's title, in a real
browser (Debian's chromium, as in tests/test_web_browser.py) on a real
twistd, with a TCP user talking to the page's user.

The notifications are seen through the page's own Notification constructor,
wrapped by an init script that records each one before making it; the tab
is hidden and shown as in tests/test_web_browser.py (document.hidden and a
visibilitychange event).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import MARKS, expect
from tests.test_twistd import register
from tests.test_web_browser import HIDE, SHOW, Page
from tests.web_server import WebChat, running

pytestmark = MARKS

# Every notification made (its title and body), and every permission asked.
WRAP = """
window.shown = [];
window.asked = 0;
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) {
    window.shown.push([title, options?.body ?? null]);
    super(title, options);
  }
  static requestPermission(...args) {
    window.asked += 1;
    return Real.requestPermission(...args);
  }
};
"""


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebChat]:
    with running(tmp_path_factory.mktemp("chat"), "--shutdown-timeout=2") as server:
        yield server


def watched(browser: Any, chat: WebChat, granted: bool) -> Page:
    """A tab on the chat, the notification permission given (as the user
    would have said yes before) or not yet asked, the constructor wrapped
    before the page's script runs."""
    # (permissions=[] would make it denied: not the same as not asked.)
    given = {"permissions": ["notifications"]} if granted else {}
    return Page(
        browser,
        chat.url,
        script=WRAP,
        viewport={"width": 1000, "height": 640},
        **given,
    )


def shown(tab: Page) -> list[list[str]]:
    result: list[list[str]] = tab.page.evaluate("() => window.shown")
    return result


def asked(tab: Page) -> int:
    result: int = tab.page.evaluate("() => window.asked")
    return result


def test_mentions_and_private_lines_notify_while_the_tab_is_hidden(
    chat: WebChat, browser: Any
) -> None:
    carol = register(chat.port, "carol")
    alice = watched(browser, chat, granted=True)
    alice.join("alice")
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")
    carol.until(b"-Connexion de alice\n")
    # Granted already: nothing to ask, no button for it.
    button = alice.page.get_by_role("button", name="activer les notifications")
    expect(button).to_be_hidden()

    # Seen: no notification, even for a mention.
    carol.send(b"alice, tu es la ?\n")
    expect(alice.entry("tu es la")).to_be_visible()

    # Hidden: a mention and a private line notify, the other lines do not;
    # the title counts every line.
    alice.page.evaluate(HIDE)
    carol.send(b"une ligne pour tous\n")
    carol.send(b"Alice : regarde ca\n")
    carol.send(b"quelle malice\n")
    carol.send(b"msg alice psst\n")
    expect(alice.entry("psst")).to_have_class("private")
    expect(alice.page).to_have_title("(4) chat")
    assert shown(alice) == [
        ["carol vous mentionne", "Alice : regarde ca"],
        ["message privé de carol", "psst"],
    ]

    # Shown again: the title is the page's own, and lines notify no more.
    alice.page.evaluate(SHOW)
    expect(alice.page).to_have_title("chat")
    carol.send(b"msg alice encore\n")
    expect(alice.entry("encore")).to_have_class("private")
    assert len(shown(alice)) == 2
    assert asked(alice) == 0  # never asked: it was given
    assert alice.errors == []


def test_the_permission_is_asked_only_on_the_users_click(
    chat: WebChat, browser: Any
) -> None:
    # (Not carol: the test before may still hold that nickname, its socket
    # not yet collected.)
    dora = register(chat.port, "dora")
    bob = watched(browser, chat, granted=False)
    expect(bob.page.get_by_label("Pseudo")).to_be_visible()
    assert asked(bob) == 0  # not on loading
    bob.join("bob")
    expect(bob.page.locator("#status")).to_have_text("connecté : bob")
    button = bob.page.get_by_role("button", name="activer les notifications")
    expect(button).to_be_visible()
    bob.say("bonjour")  # nor on sending
    dora.until(b"-bob: bonjour\n")
    assert asked(bob) == 0

    button.click()
    bob.page.wait_for_function("() => window.asked === 1")
    # Not given (headless chromium says no, or nothing): a hidden tab's
    # mention makes no notification, and nothing throws.
    permission = bob.page.evaluate("() => Notification.permission")
    assert permission != "granted"
    bob.page.evaluate(HIDE)
    dora.send(b"bob ?\n")
    expect(bob.page).to_have_title("(1) chat")
    assert shown(bob) == []
    assert bob.errors == []
