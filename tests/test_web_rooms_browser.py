"""The page's rooms in a real browser (Debian's chromium, as in
tests/test_web_browser.py) on a real twistd: a phone opens a link to a
room, a desktop joins it by the field and by a click, lines go between them
in the room, unread counts in the list of rooms, the user lists follow the
room, a TCP user of the lobby sees none of the room's lines.

With CHATPROTO_SCREENSHOT=docs/web.png, it also saves the README's
screenshot (the desktop, in a room, another room's unread count listed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatproto.operators import make_hash
from tests.browser import MARKS, expect
from tests.test_twistd import register
from tests.test_web_browser import HIDE, SHOW, Page
from tests.test_web_notify_browser import WRAP, shown
from tests.web_server import WebChat, running

pytestmark = MARKS

PHONE: dict[str, Any] = {
    "viewport": {"width": 360, "height": 740},
    "is_mobile": True,
    "has_touch": True,
}
OPERATOR = "mot de passe d'opératrice"
DESKTOP: dict[str, Any] = {"viewport": {"width": 1100, "height": 640}}
# What was sent on the page's WebSocket, recorded by an init script.
SENT = """
window.sent = [];
const realSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (line) {
  window.sent.push(String(line));
  return realSend.call(this, line);
};
"""


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[WebChat]:
    """The chat, carol its operator (to set a room's topic)."""
    operators = tmp_path / "operators"
    operators.write_text(f"carol:{make_hash(OPERATOR, n=2**4)}\n")
    with running(
        tmp_path, "--shutdown-timeout=2", "--operators", str(operators)
    ) as server:
        yield server


class Tab(Page):
    """A user's tab, with the rooms' parts of the page."""

    def room(self, name: str, hidden: bool = False) -> Any:
        """The button of the room C{name} (without its #) in the list (on a
        phone, in a panel that may be closed: C{hidden})."""
        return self.page.locator("#room-list").get_by_role(
            "button",
            name=re.compile(f"^#{re.escape(name)}(,|$)"),
            include_hidden=hidden,
        )

    def shows(self, name: str) -> None:
        """The page shows the room C{#name}, current in the list."""
        expect(self.page.locator("#room-title")).to_have_text(f"#{name}")
        current = self.room(name, hidden=True)
        expect(current).to_have_attribute("aria-current", "true")

    def members(self) -> Any:
        return self.page.locator("#users li")

    def join_room(self, name: str) -> None:
        field = self.page.get_by_label("Salon", exact=True)
        field.fill(name)
        field.press("Enter")


def open_panel(tab: Tab, summary: str) -> None:
    """On a phone, the panel (rooms or people) opened by its summary."""
    details = tab.page.locator(
        "details", has=tab.page.locator("summary", has_text=summary)
    )
    if details.get_attribute("open") is None:
        tab.page.locator("summary", has_text=summary).click()


def test_two_pages_chat_in_a_room_the_lobby_sees_none_of_it(
    chat: WebChat, browser: Any
) -> None:
    carol = register(chat.port, "carol")
    heard = b""  # what the TCP user got

    # A phone opens the link to #salle: it registers as ever, then is in
    # #salle, the link kept as it was.
    anna = Tab(browser, chat.url + "#salle", **PHONE)
    anna.join("anna")
    expect(anna.page.locator("#status")).to_have_text("connecté : anna")
    anna.shows("salle")
    assert anna.page.url.endswith("/#salle")
    expect(anna.page.locator("#rooms summary")).to_contain_text("#salle")
    open_panel(anna, "Salons")
    expect(anna.page.locator("#room-list li")).to_have_text(["#accueil", "#salle"])
    expect(anna.members()).to_have_count(1)
    anna.say("premier dans le salon")
    heard += carol.until(b"-Connexion de anna\n")

    # A desktop joins #salle by the field: its last lines (before its
    # arrival) shown as the lobby's are, its members listed.
    bruno = Tab(
        browser, chat.url, script=WRAP, permissions=["notifications"], **DESKTOP
    )
    bruno.join("bruno")
    expect(bruno.page.locator("#status")).to_have_text("connecté : bruno")
    bruno.shows("accueil")
    expect(bruno.members()).to_have_text(["carol", "anna", "bruno"])
    bruno.join_room("#Salle")
    bruno.shows("salle")
    assert bruno.page.url.endswith("/#salle")
    expect(bruno.entry("premier dans le salon")).to_have_class("public history")
    expect(bruno.log.locator(".separator")).to_have_text(["— messages précédents —"])
    expect(bruno.members()).to_have_text(["anna", "bruno"])
    expect(anna.entry("bruno arrive")).to_have_class("arrival")
    open_panel(anna, "Présents")
    expect(anna.members()).to_have_text(["anna", "bruno"])

    # Lines between them in the room; the TCP user of the lobby gets none.
    anna.say("bonjour <b>salle</b>")
    expect(bruno.entry("bonjour")).to_contain_text("anna")
    expect(bruno.entry("bonjour")).to_contain_text("bonjour <b>salle</b>")
    assert bruno.log.locator("b").count() == 0
    bruno.say("salut anna")
    expect(anna.entry("salut anna").locator("mark")).to_have_text("anna")
    carol.send(b"dans le hall\n")
    expect(bruno.log).not_to_contain_text("dans le hall")  # the lobby's, apart
    expect(anna.log).not_to_contain_text("dans le hall")

    # Bruno clicks the lobby: its lines, not the room's.
    bruno.room("accueil").click()
    bruno.shows("accueil")
    assert not bruno.page.url.endswith("#salle")
    expect(bruno.entry("dans le hall")).to_contain_text("carol")
    expect(bruno.log).not_to_contain_text("bonjour")
    expect(bruno.members()).to_have_text(["carol", "anna", "bruno"])

    # A line in #salle meanwhile: one unread, in the list, not in the lobby.
    anna.say("tu es parti ?")
    expect(bruno.room("salle")).to_have_accessible_name("#salle, 1 non lu")
    expect(bruno.room("salle").locator(".badge")).to_have_text("1")
    expect(bruno.log).not_to_contain_text("tu es parti")
    expect(bruno.page).to_have_title("chat")  # seen in the list: not the title's

    # Hidden, a mention in #salle notifies, with the room.
    bruno.page.evaluate(HIDE)
    anna.say("bruno, tu reviens ?")
    expect(bruno.room("salle")).to_have_accessible_name(
        "#salle, 2 non lus, vous êtes mentionné"
    )
    expect(bruno.page).to_have_title("(1) chat")
    assert shown(bruno) == [["anna vous mentionne dans #salle", "bruno, tu reviens ?"]]
    bruno.page.evaluate(SHOW)
    expect(bruno.page).to_have_title("chat")

    # The screenshot: a conversation in a room, another room's count listed.
    carol.send(b"/join #projet\n")
    heard += carol.until(b"Salon courant : #projet\n")
    bruno.join_room("projet")
    bruno.shows("projet")
    carol.send(f"/op {OPERATOR}\n".encode())
    heard += carol.until("Vous êtes opérateur".encode())
    carol.send(b"/topic la maquette, pour lundi\n")
    expect(bruno.page.locator("#topic")).to_have_text("la maquette, pour lundi")
    expect(bruno.entry("change le sujet")).to_contain_text(
        "carol change le sujet : la maquette, pour lundi"
    )
    carol.send(b"le plan est sur le tableau\n")
    expect(bruno.entry("le plan")).to_contain_text("carol")
    bruno.say("je le recopie")
    heard += carol.until(b"recopie\n")
    carol.send(b"merci bruno\n")
    expect(bruno.entry("merci")).to_be_visible()
    anna.say("on commence dans 5 minutes")
    expect(bruno.room("salle").locator(".badge")).to_have_text("3")
    screenshot = os.environ.get("CHATPROTO_SCREENSHOT")
    if screenshot:
        bruno.page.screenshot(path=screenshot)
    # A topic is text, never HTML.
    carol.send(b"/topic le plan du <i>projet</i>\n")
    expect(bruno.page.locator("#topic")).to_have_text("le plan du <i>projet</i>")
    expect(bruno.entry("change le sujet").last).to_contain_text("<i>projet</i>")
    assert bruno.page.locator("#conversation i").count() == 0

    # A click on #salle: its lines, the unread ones with them, the count gone.
    bruno.room("salle").click()
    bruno.shows("salle")
    expect(bruno.entry("tu es parti")).to_be_visible()
    expect(bruno.entry("on commence")).to_be_visible()
    expect(bruno.room("salle")).to_have_accessible_name("#salle")
    expect(bruno.room("salle").locator(".badge")).to_have_count(0)
    expect(bruno.log).not_to_contain_text("le plan")

    # The TCP user left the lobby's conversation: none of #salle's lines
    # reached it, the lines of #projet (its room) did.
    carol.send(b"/join #accueil\n")
    heard += carol.until(b"Salon courant : #accueil\n")
    for text in (b"premier", b"bonjour", b"tu es parti", b"tu reviens", b"on commence"):
        assert text not in heard
    assert b"-#projet bruno: je le recopie\n" in heard
    assert b"-Connexion de bruno\n" in heard  # the lobby's lines, as ever

    # Leaving the server takes carol out of every room's list.
    bruno.room("projet").click()
    bruno.shows("projet")
    expect(bruno.members()).to_have_text(["carol", "bruno"])
    carol.send(b"/quit\n")
    expect(bruno.members()).to_have_text(["bruno"])
    expect(bruno.entry("carol s'en va")).to_have_count(0)  # the lobby's line

    # /part typed, and the button: back in the lobby, the room gone.
    bruno.say("/part")
    bruno.shows("accueil")
    expect(bruno.page.locator("#room-list li")).to_have_text(["#accueil", "#salle"])
    expect(bruno.entry("carol s'en va")).to_have_class("departure")
    bruno.room("salle").click()
    bruno.shows("salle")
    bruno.page.get_by_role("button", name="quitter #salle").click()
    bruno.shows("accueil")
    expect(bruno.page.locator("#room-list li")).to_have_text(["#accueil"])
    expect(anna.entry("bruno quitte #salle")).to_have_class("departure")
    expect(anna.members()).to_have_text(["anna"])

    # /join typed in the message field.
    bruno.say("/join #salle")
    bruno.shows("salle")
    expect(bruno.members()).to_have_text(["anna", "bruno"])

    for tab in (anna, bruno):
        assert tab.dialogs == []
        assert tab.errors == []


def test_the_list_of_rooms_with_the_keyboard(chat: WebChat, browser: Any) -> None:
    tab = Tab(browser, chat.url + "#un", **DESKTOP)
    tab.join("kim")
    tab.shows("un")
    # A new room's history: nothing before the page's arrival; too short
    # to scroll, the page asks for older lines, in that room, to the start.
    expect(tab.log.locator(".separator")).to_have_text(["— début de l'historique —"])
    tab.join_room("deux")
    tab.shows("deux")
    expect(tab.page.locator("#room-list li")).to_have_text(["#accueil", "#deux", "#un"])

    # One Tab stop: the shown room; the arrows move, Enter shows.
    tab.page.get_by_label("Salon", exact=True).focus()
    tab.page.keyboard.press("Shift+Tab")
    expect(tab.room("deux")).to_be_focused()
    tab.page.keyboard.press("ArrowUp")
    expect(tab.room("accueil")).to_be_focused()
    tab.page.keyboard.press("End")
    expect(tab.room("un")).to_be_focused()
    tab.page.keyboard.press("Enter")
    tab.shows("un")
    assert tab.page.url.endswith("/#un")
    tab.page.keyboard.press("Home")
    tab.page.keyboard.press("Enter")
    tab.shows("accueil")
    assert tab.errors == []


def test_a_link_to_a_room_that_breaks_the_rule_is_said_not_sent(
    chat: WebChat, browser: Any
) -> None:
    tab = Tab(
        browser, chat.url + "#<img src=x onerror=alert(1)>", script=SENT, **DESKTOP
    )
    expect(tab.log.locator("li.error")).to_contain_text(
        "Le lien nomme un salon incorrect : « <img src=x onerror=alert(1)> »"
    )
    tab.join("lou")
    expect(tab.page.locator("#status")).to_have_text("connecté : lou")
    tab.shows("accueil")
    # The field: refused the same way, nothing sent.
    tab.join_room("pas de blanc")
    expect(tab.log.locator("li.error").last).to_contain_text(
        "Nom de salon incorrect : « pas de blanc »"
    )
    tab.say("/join #ok")  # a line after them, which the server answers
    tab.shows("ok")
    sent: list[str] = tab.page.evaluate("() => window.sent")
    assert [line for line in sent if "join" in line] == ["/join #ok"]
    assert tab.log.locator("img").count() == 0
    assert tab.dialogs == []
    assert tab.errors == []


def test_after_a_restart_the_page_is_in_its_rooms_again(
    chat: WebChat, browser: Any
) -> None:
    tab = Tab(browser, chat.url + "#salle", **DESKTOP)
    tab.join("noe")
    tab.shows("salle")
    tab.join_room("autre")
    tab.shows("autre")
    tab.room("salle").click()
    tab.shows("salle")
    tab.say("avant la coupure")

    chat.stop()
    expect(tab.page.locator("#status")).to_have_text(re.compile(r"reconnexion…"))
    chat.start()
    expect(tab.page.locator("#status")).to_have_text("connecté : noe", timeout=30_000)
    # Both rooms joined again, the shown one current: a TCP user in it
    # gets the page's lines.
    tab.shows("salle")
    expect(tab.members()).to_have_text(["noe"])
    expect(tab.log.locator(".separator").last).to_have_text(
        "— la conversation ci-dessus est peut-être incomplète —"
    )
    dan = register(chat.port, "dan")
    dan.send(b"/join #salle\n")
    dan.until(b"=>dan\n----------------------\n")
    expect(tab.members()).to_have_text(["noe", "dan"])
    tab.say("après la coupure")
    assert dan.until(b"coupure\n").endswith("-#salle noe: après la coupure\n".encode())
    dan.send(b"/rooms\n")
    assert b"#autre 1 membre\n" in dan.until(b"--- fin des salons ---\n")
    assert tab.errors == []


def test_a_join_refused_leaves_the_page_where_it_was(
    tmp_path: Path, browser: Any
) -> None:
    """The server's error is said; the page waits for no answer any more:
    the next /join shows its room. Of two /join in flight, the page shows
    the last one's room."""
    server = WebChat(tmp_path, "--shutdown-timeout=2", "--rooms-per-user=1")
    server.start()
    try:
        tab = Tab(browser, server.url + "#un", **DESKTOP)
        tab.join("zoe")
        tab.shows("un")
        tab.join_room("deux")
        expect(tab.log.locator("li.error").last).to_contain_text(
            "Erreur : vous êtes déjà dans 1 salons"
        )
        tab.shows("un")
        expect(tab.page.locator("#room-list li")).to_have_text(["#accueil", "#un"])
        tab.say("/part #un")
        tab.shows("accueil")
        expect(tab.entry("Vous avez quitté #un")).to_be_visible()
        tab.say("/join #trois")
        tab.say("/join #accueil")
        tab.shows("accueil")
        expect(tab.page.locator("#room-list li")).to_have_text(["#accueil", "#trois"])
        tab.room("trois").click()
        tab.shows("trois")
        assert tab.errors == []
    finally:
        server.stop()
