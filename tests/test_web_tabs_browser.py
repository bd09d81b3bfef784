"""Two tabs of one browser on the same nickname, in a real browser (Debian's
chromium driven by Playwright, as in tests/test_web_browser.py): the second
is refused, says why, and leaves the first's "se souvenir de moi" alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import MARKS, SAVED, WAIT, expect
from tests.test_twistd import register
from tests.web_server import WebChat, running

pytestmark = MARKS
ELSEWHERE = "alice est déjà connecté dans un autre onglet de ce navigateur."


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    with running(tmp_path, "--shutdown-timeout=2", "--ping-interval=0") as server:
        yield server


def tab(context: Any, url: str, errors: list[str]) -> Any:
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: errors.append(dialog.message))
    page.goto(url)
    return page


def test_a_second_tab_of_a_remembered_nickname_keeps_what_was_saved(
    chat: WebChat, browser: Any
) -> None:
    owner = register(chat.port, "alice")
    owner.send(b"/register secret12\n")
    owner.until("Pseudo alice protégé".encode())
    owner.send(b"/quit\n")
    owner.rest()
    context = browser.new_context()
    errors: list[str] = []

    first = tab(context, chat.url, errors)
    first.get_by_label("se souvenir de moi").check()
    first.get_by_label("Pseudo").fill("alice")
    first.get_by_label("Pseudo").press("Enter")
    first.get_by_label("Mot de passe").fill("secret12")
    first.get_by_label("Mot de passe").press("Enter")
    expect(first.locator("#status")).to_have_text("connecté : alice")
    assert first.evaluate(SAVED) == {"nick": "alice", "password": "secret12"}

    # The second tab registers by itself with the saved password: the
    # nickname is the first tab's, which the server answers as a wrong
    # password. It says so, and forgets nothing.
    second = tab(context, chat.url, errors)
    expect(second.locator("#join-error")).to_have_text(ELSEWHERE)
    expect(second.get_by_label("Mot de passe")).to_be_hidden()
    assert second.evaluate(SAVED) == {"nick": "alice", "password": "secret12"}
    expect(first.locator("#status")).to_have_text("connecté : alice")

    # The first tab closed, the second gets in with what was saved.
    first.close()
    second.get_by_label("Pseudo").press("Enter")
    expect(second.locator("#status")).to_have_text("connecté : alice")
    assert second.evaluate(SAVED) == {"nick": "alice", "password": "secret12"}
    assert errors == []
    context.close()
