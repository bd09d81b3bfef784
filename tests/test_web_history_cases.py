"""The page's history against a server scripted line by line (Playwright's
WebSocket routing, in chromium, no twistd): the cases a real chat makes
only by chance, a cluster's late line, a lost history, Redis down, no
history kept. Each scripted answer is what docs/protocol.md says the
server sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chatproto import wire
from chatproto.web import PAGE, PAGE_FILES, SECURITY_HEADERS
from tests.test_web_browser import CHROMIUM, HIDE, WAIT, expect
from tests.test_web_history_browser import EARLIER, LINES, MISSED, browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]
__all__ = ["browser"]  # a fixture
WELCOME = wire.WELCOME.decode().rstrip("\n")
OFF = wire.HISTORY_OFF
UNAVAILABLE = wire.HISTORY_UNAVAILABLE
LOST = "Connexion perdue : reconnexion…"


def block(*lines: str) -> list[str]:
    """The answer to /history, one message a line."""
    head = wire.history_header(len(lines)).decode().rstrip("\n")
    return [head, *lines, wire.HISTORY_END.decode().rstrip("\n")]


def said(second: int, text: str, nick: str = "bob") -> str:
    return f"[10.0.{second}]-{nick}: {text}"


class Server:
    """The chat's side of every WebSocket the page opens: the welcome line,
    then, for each registration in turn, its scripted lines: those sent
    right after C{Bienvenue}, then, when the page asks /history, the rest."""

    def __init__(self, page: Any) -> None:
        self.script: list[tuple[list[str], list[str]]] = []
        self.asked: list[str] = []
        self.sockets: list[Any] = []
        page.route_web_socket("**/ws", self._connected)

    def _connected(self, ws: Any) -> None:
        self.sockets.append(ws)
        ws.on_message(lambda line: self._received(ws, line))
        ws.send(WELCOME)

    def _received(self, ws: Any, line: str) -> None:
        if line.startswith("/pseudo "):
            ws.send(f"Bienvenue {line.removeprefix('/pseudo ')}")
            for sent in self.script[0][0]:
                ws.send(sent)
        elif line.startswith("/history"):
            self.asked.append(line)
            for sent in self.script.pop(0)[1]:
                ws.send(sent)

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
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route("http://chat.test/**", serve)
    server = Server(page)
    page.goto("http://chat.test/")
    yield page, server, errors
    context.close()


def join(page: Any, nick: str) -> None:
    page.get_by_label("Pseudo").fill(nick)
    page.get_by_label("Pseudo").press("Enter")


def test_late_lines_lost_history_and_redis_down_across_reconnections(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    arrival = "[10.0.3]-Connexion de alice"
    live, late = said(4, "en direct"), said(5, "en retard")
    # Registering: a line comes live before the block and ends it; another
    # is in the block and comes live after it (a cluster's publication
    # overtaken by the history read): each is shown once.
    server.script.append(
        ([live], [*block(said(1, "un"), said(2, "deux"), arrival, late, live), late])
    )
    join(page, "alice")
    expect(page.locator("#log .separator")).to_have_text(EARLIER)
    page.get_by_label("Message").fill("fin")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#log li").last).to_contain_text("fin")
    assert page.evaluate(LINES) == [
        ["public history", "un"],
        ["public history", "deux"],
        ["public history", "en retard"],
        ["separator", EARLIER],
        ["public", "en direct"],
        ["public own", "fin"],
    ]
    assert server.asked == ["/history 51"]

    # A cut: the page asks for more, and shows only what it missed, above
    # a line received since reconnecting.
    again = said(9, "depuis")
    missed = [said(7, "manqué 1"), said(8, "manqué 2", "carol")]
    server.script.append(
        (
            [again],
            block(
                said(2, "deux"),
                late,
                live,
                said(6, "fin", "alice"),
                "[10.0.6]-Déconnection de alice",
                *missed,
                "[10.0.8]-Connexion de alice",
                again,
            ),
        )
    )
    server.cut()
    expect(page.locator("#log .separator").last).to_have_text(MISSED)
    assert page.evaluate(LINES)[6:] == [
        ["error", LOST],
        ["separator", MISSED],
        ["public history", "manqué 1"],
        ["public history", "manqué 2"],
        ["public", "depuis"],
    ]
    assert server.asked[1:] == ["/history 500"]

    # A restart lost the history: what there is, marked as maybe short.
    maybe = "— messages manqués pendant la coupure (d'autres ont pu être perdus) —"
    server.script.append(([], block("[11.0.0]-Connexion de bob", said(1, "neuf"))))
    server.cut()
    expect(page.locator("#log .separator").last).to_have_text(maybe)
    assert page.evaluate(LINES)[11:] == [
        ["error", LOST],
        ["separator", maybe],
        ["arrival history", "bob arrive"],
        ["public history", "neuf"],
    ]

    # Redis down: said at the cut, and the error line not shown raw.
    server.script.append(([], [UNAVAILABLE]))
    server.cut()
    unavailable = "— messages manqués indisponibles pour le moment —"
    expect(page.locator("#log .separator").last).to_have_text(unavailable)
    assert page.evaluate(LINES)[15:] == [["error", LOST], ["separator", unavailable]]
    assert errors == []


def test_a_server_that_keeps_no_history_adds_nothing_to_the_page(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script.append(([], [OFF]))
    server.script.append(([], [OFF]))  # the /history typed below
    join(page, "alice")
    expect(page.locator("#status")).to_have_text("connecté : alice")
    page.get_by_label("Message").fill("/history")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#log li").last).to_contain_text(OFF)
    assert page.evaluate(LINES) == [["command own", "/history"], ["notice", OFF]]
    assert server.asked == ["/history 51", "/history"]
    assert errors == []


def test_a_kicked_user_leaves_the_list_and_the_reason_is_shown(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script.append(([], block()))
    join(page, "alice")
    expect(page.locator("#status")).to_have_text("connecté : alice")
    server.sockets[-1].send("[10.0.1]-Connexion de bob")
    expect(page.locator("#users li")).to_have_text(["bob"])
    server.sockets[-1].send("[10.0.2]-Déconnection de bob (expulsé par op : spam)")
    expect(page.locator("#log li").last).to_have_class("departure")
    assert page.evaluate(LINES)[-1] == [
        "departure",
        "bob s'en va (expulsé par op : spam)",
    ]
    expect(page.locator("#users li")).to_have_count(0)
    assert errors == []


def test_lines_missed_by_a_hidden_tab_count_as_unread(
    tab: tuple[Any, Server, list[str]],
) -> None:
    page, server, errors = tab
    server.script.append(([], block()))
    join(page, "alice")
    expect(page.locator("#status")).to_have_text("connecté : alice")
    page.evaluate(HIDE)
    server.script.append(
        (
            [said(3, "depuis")],
            block(said(1, "manqué"), said(2, "aussi"), said(3, "depuis")),
        )
    )
    server.cut()  # its notice, two missed lines, one line since: 4 unread
    expect(page.locator("#log .separator")).to_have_text(MISSED)
    expect(page).to_have_title("(4) chat")
    assert errors == []
