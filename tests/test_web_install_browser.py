"""The page installed, in a real browser (Debian's chromium, as in
tests/test_web_browser.py): its service worker registers and controls the
page after a reload, the page works under it, opens from its copy when the
server is down, and a newer page replaces the copy.

The server runs on a copy of chatproto/ (C{WebChat(root=...)}), whose page
the test changes between two starts, as an operator's upgrade does.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatproto.web import PAGE_FILES, PAGE_ICONS
from tests.browser import MARKS, WAIT, expect
from tests.test_twistd import ROOT, register
from tests.test_web_browser import Page
from tests.web_server import WebChat, running

pytestmark = MARKS

# The worker registered, once it is active (its copy made).
ACTIVE = """async () => {
  const registration = await navigator.serviceWorker.ready;
  const worker = registration.active;
  while (worker.state !== "activated") {
    await new Promise((changed) => worker.addEventListener("statechange", changed));
  }
  return [registration.scope, worker.state];
}"""
CONTROLLED = "() => navigator.serviceWorker.controller?.scriptURL ?? null"
# The copies kept: each cache's name and the paths in it.
KEPT = """async () => {
  const kept = {};
  for (const name of await caches.keys()) {
    const cache = await caches.open(name);
    kept[name] = (await cache.keys()).map((request) => new URL(request.url).pathname);
  }
  return kept;
}"""
# The version the server put in its worker.
VERSION = """() => fetch("sw.js")
  .then((response) => response.text())
  .then((text) => /VERSION = "(\\w+)"/.exec(text)[1])"""


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A copy of chatproto/, for the server to run."""
    root = tmp_path / "code"
    shutil.copytree(
        ROOT / "chatproto",
        root / "chatproto",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root


@pytest.fixture
def chat(tmp_path: Path, code: Path) -> Iterator[WebChat]:
    with running(tmp_path, "--shutdown-timeout=2", root=code) as server:
        yield server


def kept(tab: Page, version: str) -> None:
    """Wait (bounded) until the only copy is the one of C{version}, and
    check it holds every file of the page."""
    name = f"chatproto-page-{version}"
    deadline = time.monotonic() + WAIT / 1000
    while set(copies := tab.page.evaluate(KEPT)) != {name}:
        assert time.monotonic() < deadline, copies
        tab.page.wait_for_timeout(50)
    files = set(PAGE_FILES) | set(PAGE_ICONS)
    expected = {f"/{name}" for name in files - {"index.html", "sw.js"}} | {"/"}
    assert set(copies[name]) == expected


def test_the_worker_keeps_the_page_for_offline_and_an_update_replaces_it(
    chat: WebChat, code: Path, browser: Any
) -> None:
    tab = Page(browser, chat.url, viewport={"width": 360, "height": 740})
    console: list[str] = []
    tab.page.on("console", lambda message: console.append(message.text))
    scope, state = tab.page.evaluate(ACTIVE)
    assert (scope, state) == (chat.url, "activated")
    tab.page.reload()
    assert tab.page.evaluate(CONTROLLED) == chat.url + "sw.js"
    version = tab.page.evaluate(VERSION)
    kept(tab, version)

    # Under the worker, the page works as ever.
    carol = register(chat.port, "carol")
    tab.join("alice")
    expect(tab.page.locator("#status")).to_have_text("connecté : alice")
    carol.send(b"bonjour alice\n")
    expect(tab.entry("bonjour alice")).to_contain_text("carol")
    tab.say("salut carol")
    carol.until(b"-alice: salut carol\n")

    # The server down: the page opens from the copy, and says so.
    chat.stop()
    tab.page.reload()
    expect(tab.page.locator("h1")).to_have_text("chat")
    expect(tab.page.locator("#status")).to_have_text(re.compile("reconnexion"))
    assert tab.page.evaluate(CONTROLLED) == chat.url + "sw.js"

    # An upgrade: a newer page on the server. The next load is the new page
    # (the server first), and its new worker replaces the copy.
    index = code / "chatproto" / "webpage" / "index.html"
    index.write_text(index.read_text().replace("<h1>chat</h1>", "<h1>chat v2</h1>"))
    chat.start()
    tab.page.reload()
    expect(tab.page.locator("h1")).to_have_text("chat v2")
    newer = tab.page.evaluate(VERSION)
    assert newer != version
    kept(tab, newer)
    assert tab.page.evaluate(CONTROLLED) == chat.url + "sw.js"

    # Down again: the copy is the new page.
    chat.stop()
    tab.page.reload()
    expect(tab.page.locator("h1")).to_have_text("chat v2")

    assert not [line for line in console if "Content Security Policy" in line]
    assert tab.dialogs == []
    assert tab.errors == []
