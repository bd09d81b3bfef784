"""A paste of many lines into the page's message field, in a real browser
(Debian's chromium driven by Playwright, as in tests/test_web_browser.py):
each line reaches the others as a line of its own, paced under the
server's flood control, as the terminal client paces a paste."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import MARKS, expect
from tests.test_twistd import register
from tests.test_web_browser import Page
from tests.web_server import WebChat, running

pytestmark = MARKS
CLIPBOARD = ["clipboard-read", "clipboard-write"]


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    # A flood queue of 6 lines: 20 lines sent at once would overflow it.
    with running(
        tmp_path, "--shutdown-timeout=2", "--ping-interval=0", "--flood-queue=6"
    ) as server:
        yield server


def paste(page: Any, text: str) -> None:
    """C{text} pasted with Ctrl+V into the message field, as a user does."""
    field = page.get_by_label("Message")
    field.focus()
    page.evaluate("text => navigator.clipboard.writeText(text)", text)
    page.keyboard.press("Control+V")


def test_a_paste_of_twenty_lines_reaches_the_others_as_twenty_lines(
    chat: WebChat, browser: Any
) -> None:
    carol = register(chat.port, "carol")
    viewport = {"width": 800, "height": 420}  # a few lines fill the conversation
    alice = Page(browser, chat.url, permissions=CLIPBOARD, viewport=viewport)
    alice.join("alice")
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")
    carol.until(b"-Connexion de alice\n")
    carol.send(b"".join(b"avant %d\n" % n for n in range(5)))
    expect(alice.entry("avant 4")).to_be_in_viewport()

    said = [f"ligne {n} de la liste" for n in range(1, 21)]
    paste(alice.page, "\r\n".join(said))
    expect(alice.page.get_by_label("Message")).to_have_value("\n".join(said))
    # The field grew with the lines; the conversation, shorter, still
    # shows its last line.
    assert alice.page.get_by_label("Message").bounding_box()["height"] > 100
    expect(alice.entry("avant 4")).to_be_in_viewport(ratio=1)
    alice.page.get_by_label("Message").press("Enter")
    expect(alice.page.get_by_label("Message")).to_have_value("")

    # Each line, in order, as a public line of its own: none lost, none
    # joined to another, and alice never cut for flooding.
    got = b"".join(carol.until(f"-alice: {line}\n".encode()) for line in said)
    assert re.findall(rb"-alice: (.*)\n", got) == [line.encode() for line in said]
    assert b"Trop de messages" not in got
    assert "Déconnection de alice".encode() not in got
    expect(alice.page.locator("#log .public.own .text")).to_have_text(said)
    expect(alice.page.locator("#status")).to_have_text("connecté : alice")

    # Shift+Enter starts a new line in the field; Enter sends both.
    field = alice.page.get_by_label("Message")
    field.press_sequentially("un")
    field.press("Shift+Enter")
    field.press_sequentially("deux")
    expect(field).to_have_value("un\ndeux")
    field.press("Enter")
    assert re.findall(rb"-alice: (.*)\n", carol.until(b"-alice: deux\n")) == [
        b"un",
        b"deux",
    ]
    assert alice.errors == [] and alice.dialogs == []
