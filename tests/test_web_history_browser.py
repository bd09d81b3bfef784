"""The page's history in a real browser (Debian's chromium, as in
tests/test_web_browser.py), against a server scripted line by line
(Playwright's WebSocket routing, no twistd): on registering, what was said
since the last visit (/unread) or the last lines; after a reconnection,
exactly what /unread answers, where it belongs; scrolling up, older lines
by their numbers (/history N avant K) until the start. Each scripted answer
is what docs/protocol.md says the server sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatproto import wire
from chatproto.web import PAGE, PAGE_FILES, SECURITY_HEADERS
from tests.browser import MARKS, WAIT, expect
from tests.test_web_browser import HIDE

pytestmark = MARKS

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
  const log = document.getElementById('log');
  const live = document.getElementById('live');  // the role log around it
  new MutationObserver((records) => {
    const busy = live.getAttribute("aria-busy") === "true";
    for (const record of records) {
      for (const item of record.addedNodes) {
        const text = (item.querySelector(".text") ?? item).textContent;
        window.added.push([item.className, text, busy]);
      }
    }
  }).observe(log, { childList: true });
}"""
QUIET = "() => !document.getElementById('live').hasAttribute('aria-busy')"
# Where the line holding TEXT is, in pixels from the top of the log's view.
WHERE = """(text) => {
  const log = document.getElementById('log');
  const item = [...log.children].find((li) => li.textContent.includes(text));
  return item.getBoundingClientRect().top - log.getBoundingClientRect().top;
}"""
# The log scrolled to TOP (not where it is) by the user, once the page has
# seen it do so.
SCROLL_TO = """(top) => new Promise((done) => {
  const log = document.getElementById("log");
  if (log.scrollTop === top) {
    throw new Error(`already at ${top}`);
  }
  log.addEventListener("scroll", done, { once: true });
  log.scrollTop = top;
})"""

WELCOME = wire.WELCOME.decode().rstrip("\n")
OFF = wire.HISTORY_OFF
UNAVAILABLE = wire.HISTORY_UNAVAILABLE
# The lines of /unread and /history N avant K (docs/protocol.md, "History").
SINCE = "depuis votre dernière visite"
UNREAD_END = f"--- fin des messages {SINCE} ---"
NONE_SINCE = f"Aucun message {SINCE}"
UNKNOWN = "Erreur : aucune visite précédente connue pour ce pseudo"
START = "--- début de l'historique ---"
END = "--- fin de l'historique ---"
FRIDAY = "--- vendredi 4 décembre 2026 ---"
SATURDAY = "--- samedi 5 décembre 2026 ---"
SUNDAY = "--- dimanche 6 décembre 2026 ---"
# What the page shows of them.
EARLIER = "— messages précédents —"
AT_START = "— début de l'historique —"
INCOMPLETE = "— la conversation ci-dessus est peut-être incomplète —"
LOST = "Connexion perdue : reconnexion…"


def said(second: int, text: str, nick: str = "bob") -> str:
    return f"[10.0.{second}]-{nick}: {text}"


def counted(lines: tuple[str, ...]) -> int:
    return sum(1 for line in lines if not line.startswith("--- "))


def older(first: int, *lines: str) -> list[str]:
    """The answer to /history N avant K: its lines numbered from C{first}."""
    n = counted(lines)
    word = "lignes" if n > 1 else "ligne"
    head = f"--- historique ({n} {word}, n° {first} à {first + n - 1}) ---"
    return [head, *lines, END]


def unread(first: int, *lines: str, total: int | None = None) -> list[str]:
    """The answer to /unread: its lines numbered from C{first}; C{total}
    lines said since, if more than it gives."""
    n = counted(lines)
    said = total or n
    what = f"{said} message{'s' if said > 1 else ''} {SINCE}"
    if total is not None:
        what += f", voici les {n} derniers"
    return [f"--- {what} (n° {first} à {first + n - 1}) ---", *lines, UNREAD_END]


class Server:
    """The chat's side of every WebSocket the page opens: the welcome line,
    C{Bienvenue} to any /pseudo, and to each of the page's requests (/unread,
    /history, in order: C{asked}) the next scripted answer; none scripted,
    the request waits for L{reply}."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.script: list[list[str]] = []
        self.asked: list[str] = []
        self.received: list[str] = []
        self.waiting: list[Any] = []
        self.sockets: list[Any] = []
        page.route_web_socket("**/ws", self._connected)

    def _connected(self, ws: Any) -> None:
        self.sockets.append(ws)
        ws.on_message(lambda line: self._received(ws, line))
        ws.send(WELCOME)

    def _received(self, ws: Any, line: str) -> None:
        self.received.append(line)
        if line.startswith("/pseudo "):
            ws.send(f"Bienvenue {line.removeprefix('/pseudo ')}")
        elif line.startswith(("/unread", "/history")):
            self.asked.append(line)
            if self.script:
                self.send(ws, self.script.pop(0))
            else:
                self.waiting.append(ws)

    def send(self, ws: Any, lines: list[str]) -> None:
        for line in lines:
            ws.send(line)

    def reply(self, lines: list[str]) -> None:
        self.send(self.waiting.pop(0), lines)

    def until(self, done: Callable[[], bool]) -> None:
        """Wait (bounded) until C{done()}: what the page sends reaches the
        test while Playwright runs, as its events do."""
        deadline = time.monotonic() + WAIT / 1000
        while not done():
            assert time.monotonic() < deadline, self.received
            self.page.wait_for_timeout(20)

    def cut(self) -> None:
        self.sockets[-1].close()


def serve(route: Any) -> None:
    """The page's files, with the site's headers (its CSP)."""
    name = route.request.url.rsplit("/", 1)[1] or "index.html"
    headers = dict(SECURITY_HEADERS)
    if name not in PAGE_FILES:
        route.fulfill(status=404, headers=headers)
        return
    headers["Content-Type"] = PAGE_FILES[name]
    route.fulfill(status=200, headers=headers, body=(PAGE / name).read_bytes())


@pytest.fixture
def tab(browser: Any) -> Iterator[tuple[Any, Server, list[str]]]:
    """A tab on the scripted chat, and what it must never do: throw, or
    break the Content-Security-Policy (the browser says so on its console)."""
    context = browser.new_context(viewport={"width": 1000, "height": 600})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.route("http://chat.test/**", serve)
    server = Server(page)
    page.goto("http://chat.test/")
    yield page, server, errors
    context.close()


def join(page: Any, nick: str) -> None:
    page.get_by_label("Pseudo").fill(nick)
    page.get_by_label("Pseudo").press("Enter")


def lines(page: Any) -> list[list[str]]:
    result: list[list[str]] = page.evaluate(LINES)
    return result


def test_a_first_visit_shows_what_was_said_since_the_last_one(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    page.evaluate(WATCH)
    since = [
        SATURDAY,
        said(1, "samedi", "carol"),
        SUNDAY,
        said(2, "un"),
        said(3, "deux"),
    ]
    # A live line that comes after the page asked goes below the answer.
    server.script.append([said(4, "en direct"), *unread(120, *since)])
    # Too short to scroll: the page asks for the lines before, until the start.
    server.script.append(
        older(118, FRIDAY, said(0, "vendredi"), SATURDAY, said(1, "tôt"))
    )
    server.script.append([START])
    join(page, "alice")
    expect(page.locator("#log .separator").first).to_have_text(AT_START)
    page.wait_for_function(QUIET)

    assert lines(page) == [
        ["separator", AT_START],
        ["separator", "— vendredi 4 décembre 2026 —"],
        ["public history", "vendredi"],
        ["separator", "— samedi 5 décembre 2026 —"],
        ["public history", "tôt"],
        ["separator", "— 3 messages depuis votre dernière visite —"],
        ["separator", "— samedi 5 décembre 2026 —"],
        ["public history", "samedi"],
        ["separator", "— dimanche 6 décembre 2026 —"],
        ["public history", "un"],
        ["public history", "deux"],
        ["public", "en direct"],
    ]
    assert server.asked == ["/unread", "/history 50 avant 120", "/history 50 avant 118"]
    # The blocks went in while the log was busy, for a screen reader not to
    # read them out one by one; the live line as ever, announced.
    added = page.evaluate("() => window.added")
    assert added[0] == ["public", "en direct", False]
    assert all(busy for *_, busy in added[1:])
    # The history is no arrival: the user list is the server's.
    expect(page.locator("#users li")).to_have_count(0)
    assert errors == []


@pytest.mark.parametrize("answer", [NONE_SINCE, UNKNOWN])
def test_a_first_visit_with_nothing_new_shows_the_last_lines(
    tab: tuple[Any, Server, list[str]], answer: str
) -> None:
    """Nothing said since the last visit, or no visit known: the last
    lines, above the live ones. The block ends with the lines made before
    the page asked, the last ones come live since its arrival: shown once."""
    page, server, errors = tab
    arrival = "[10.0.3]-Connexion de alice"
    live = said(4, "en direct")
    server.script.append([answer])
    block = older(41, SUNDAY, said(1, "un"), said(2, "deux"), arrival, live)
    server.script.append([live, *block])
    server.script.append([START])
    join(page, "alice")
    expect(page.locator("#log .separator").first).to_have_text(AT_START)
    page.get_by_label("Message").fill("fin")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#log li").last).to_contain_text("fin")
    assert lines(page) == [
        ["separator", AT_START],
        ["separator", "— dimanche 6 décembre 2026 —"],
        ["public history", "un"],
        ["public history", "deux"],
        ["separator", EARLIER],
        ["public", "en direct"],
        ["public own", "fin"],
    ]
    assert server.asked == ["/unread", "/history 50 avant fin", "/history 50 avant 41"]
    assert errors == []


def test_a_reconnection_shows_exactly_the_lines_of_the_unread_answer(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script += [[NONE_SINCE], older(10, said(1, "un"), said(2, "deux")), [START]]
    join(page, "alice")
    expect(page.locator("#log .separator").first).to_have_text(AT_START)
    assert len(server.asked) == 3

    # A cut: what /unread gives goes at the cut, above a line that came
    # live after the page asked; the page's own departure and arrival,
    # if the server gives them, too.
    missed = [
        "[10.0.6]-Déconnection de alice",
        said(7, "manqué 1"),
        said(8, "manqué 2"),
    ]
    server.script.append([said(9, "depuis"), *unread(14, *missed)])
    n = len(lines(page))
    server.cut()
    expect(page.locator("#log li").last).to_contain_text("depuis")
    assert lines(page)[n:] == [
        ["error", LOST],
        ["separator", "— 3 messages depuis votre dernière visite —"],
        ["departure history", "alice s'en va"],
        ["public history", "manqué 1"],
        ["public history", "manqué 2"],
        ["public", "depuis"],
    ]
    assert server.asked[3:] == ["/unread"]

    # Nothing said meanwhile: nothing more shown.
    server.script.append([NONE_SINCE, said(10, "ensuite")])
    n = len(lines(page))
    server.cut()
    expect(page.locator("#log li").last).to_contain_text("ensuite")
    assert lines(page)[n:] == [["error", LOST], ["public", "ensuite"]]

    # More said than the server gives: shown as it says it.
    server.script.append(unread(300, said(11, "récent"), total=812))
    n = len(lines(page))
    server.cut()
    expect(page.locator("#log li").last).to_contain_text("récent")
    more = "— 812 messages depuis votre dernière visite, voici les 1 derniers —"
    assert lines(page)[n:] == [
        ["error", LOST],
        ["separator", more],
        ["public history", "récent"],
    ]

    # The server forgot the position (a restart without its store): the
    # last lines, after a separator that says so.
    server.script.append([UNKNOWN])
    server.script.append(older(1, said(12, "neuf"), "[10.0.13]-Connexion de alice"))
    n = len(lines(page))
    server.cut()
    expect(page.locator("#log .separator").last).to_have_text(INCOMPLETE)
    expect(page.locator("#log li").last).to_contain_text("neuf")
    assert lines(page)[n:] == [
        ["error", LOST],
        ["separator", INCOMPLETE],
        ["public history", "neuf"],
    ]

    # The history unreadable: said at the cut, the error line not shown raw.
    server.script.append([UNAVAILABLE])
    n = len(lines(page))
    server.cut()
    unavailable = "— messages manqués indisponibles pour le moment —"
    expect(page.locator("#log .separator").last).to_have_text(unavailable)
    assert lines(page)[n:] == [["error", LOST], ["separator", unavailable]]
    # Never more than /unread after a reconnection: the start was shown.
    assert server.asked[3:] == ["/unread"] * 4 + ["/history 50 avant fin", "/unread"]
    assert errors == []


def test_scrolling_up_loads_older_lines_and_keeps_the_view_in_place(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    last = [SUNDAY, *(said(n % 60, f"ligne {n}") for n in range(151, 201))]
    server.script += [[NONE_SINCE], older(151, *last)]
    join(page, "alice")
    expect(page.locator("#log li").last).to_contain_text(EARLIER)
    page.wait_for_function(QUIET)
    assert server.asked == ["/unread", "/history 50 avant fin"]  # a full view

    # Scrolled to the top: one request, however many times it is reached,
    # even while its answer is coming.
    page.evaluate(WATCH)
    page.evaluate(SCROLL_TO, 0)
    server.until(lambda: len(server.asked) == 3)
    assert server.asked[2] == "/history 50 avant 151"
    page.evaluate(SCROLL_TO, 100)
    page.evaluate(SCROLL_TO, 0)
    where = page.evaluate(WHERE, "ligne 151")
    saturday = [said(n % 60, f"ligne {n}") for n in range(101, 150)]
    block = older(101, SATURDAY, *saturday, SUNDAY, said(0, "ligne 150"))
    server.send(server.waiting[0], block[:10])
    page.wait_for_timeout(100)  # the first lines of the block are in
    page.evaluate(SCROLL_TO, 100)
    page.evaluate(SCROLL_TO, 0)
    server.reply(block[10:])
    expect(page.locator("#log li").first).to_have_text("— samedi 5 décembre 2026 —")
    # What the user looked at has not moved; Sunday's day line is said once.
    assert abs(page.evaluate(WHERE, "ligne 151") - where) <= 1
    shown = lines(page)
    assert shown[:2] == [
        ["separator", "— samedi 5 décembre 2026 —"],
        ["public history", "ligne 101"],
    ]
    assert shown[49:53] == [
        ["public history", "ligne 149"],
        ["separator", "— dimanche 6 décembre 2026 —"],
        ["public history", "ligne 150"],
        ["public history", "ligne 151"],
    ]
    assert shown.count(["separator", "— dimanche 6 décembre 2026 —"]) == 1
    added = page.evaluate("() => window.added")
    assert len(added) == 52 and all(busy for *_, busy in added)
    page.wait_for_function(QUIET)

    # Up again, to the start of the history: said, and nothing more asked.
    page.evaluate(SCROLL_TO, 0)
    server.until(lambda: len(server.asked) == 4)
    assert server.asked[2:] == ["/history 50 avant 151", "/history 50 avant 101"]
    server.reply([START])
    expect(page.locator("#log li").first).to_have_text(AT_START)
    page.evaluate(SCROLL_TO, 100)
    page.evaluate(SCROLL_TO, 0)
    page.get_by_label("Message").fill("/list")
    page.get_by_label("Message").press("Enter")
    server.until(lambda: server.received[-1] == "/list")
    assert len(server.asked) == 4
    assert errors == []


def test_a_server_that_keeps_no_history_adds_nothing_to_the_page(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script.append([OFF])
    server.script.append([OFF])  # the /history typed below
    join(page, "alice")
    expect(page.locator("#status")).to_have_text("connecté : alice")
    page.get_by_label("Message").fill("/history")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#log li").last).to_contain_text(OFF)
    assert lines(page) == [["command own", "/history"], ["notice", OFF]]
    assert server.asked == ["/unread", "/history"]
    assert errors == []


def test_a_history_typed_is_shown_as_it_comes(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script += [[NONE_SINCE], [START]]
    server.script.append(
        ["--- historique (2 lignes) ---", SUNDAY, said(1, "un"), said(2, "deux"), END]
    )
    join(page, "alice")
    expect(page.locator("#log .separator").first).to_have_text(AT_START)
    page.get_by_label("Message").fill("/history 2")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#log .separator").last).to_have_text("— fin de l'historique —")
    assert lines(page) == [
        ["separator", AT_START],
        ["command own", "/history 2"],
        ["separator", "— historique (2 lignes) —"],
        ["separator", "— dimanche 6 décembre 2026 —"],
        ["public history", "un"],
        ["public history", "deux"],
        ["separator", "— fin de l'historique —"],
    ]
    assert errors == []


def test_a_kicked_user_leaves_the_list_and_the_reason_is_shown(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script += [[NONE_SINCE], [START]]
    join(page, "alice")
    expect(page.locator("#status")).to_have_text("connecté : alice")
    server.sockets[-1].send("[10.0.1]-Connexion de bob")
    expect(page.locator("#users li")).to_have_text(["bob"])
    server.sockets[-1].send("[10.0.2]-Déconnection de bob (expulsé par op : spam)")
    expect(page.locator("#log li").last).to_have_class("departure")
    assert lines(page)[-1] == ["departure", "bob s'en va (expulsé par op : spam)"]
    expect(page.locator("#users li")).to_have_count(0)
    assert errors == []


def test_lines_missed_by_a_hidden_tab_count_as_unread(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script += [[NONE_SINCE], [START]]
    join(page, "alice")
    expect(page.locator("#log .separator")).to_have_text(AT_START)
    page.evaluate(HIDE)
    server.script.append(
        [*unread(5, said(1, "manqué"), said(2, "aussi")), said(3, "depuis")]
    )
    server.cut()  # its notice, two missed lines, one line since: 4 unread
    expect(page.locator("#log li").last).to_contain_text("depuis")
    expect(page).to_have_title("(4) chat")
    assert errors == []
