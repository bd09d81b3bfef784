"""The page's password field, "se souvenir de moi", search panel and day
lines, in a real browser (Debian's chromium, as in tests/test_web_browser.py).

The page and its Content-Security-Policy come from a real twistd; its
WebSocket is answered by the test itself (L{FakeChat}, through Playwright's
WebSocket routing), which plays the server's lines of docs/protocol.md for a
protected nickname, /history blocks with day lines and /search answers: the
page is tested against the contract, whatever the server it meets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import MARKS, WAIT, expect
from tests.web_server import WebChat, running

pytestmark = MARKS

WELCOME = "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo"
ASK_PASSWORD = "Ce pseudo est protégé : entrez son mot de passe"
TAKEN = "Attention ce pseudo existe deja"
RULE = "-" * 22
PASSWORD = "s3cret mot"
THROTTLED = "Erreur : trop d'essais de mot de passe, réessayez dans 30 secondes"
SATURDAY = "--- samedi 5 décembre 2026 ---"
SUNDAY = "--- dimanche 6 décembre 2026 ---"
SAVED = "() => localStorage.getItem('chatproto.remember')"
# Every line of a list: its class and its text, as in test_web_history_browser.
LINES = """(list) => [...list.querySelectorAll("li")].map((item) => [
  item.className,
  (item.querySelector(".text") ?? item).textContent,
])"""
# Everything the page shows or holds: its text and its fields' values.
EVERYTHING = """() => document.documentElement.textContent + "\\n" +
  [...document.querySelectorAll("input")].map((field) => field.value).join("\\n")"""


class FakeChat:
    """The server's side of every WebSocket of the page, played by the test:
    one user list, C{alice} protected by L{PASSWORD}, and what the page sent
    (C{received}, without C{pong}s)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.nick = ""

    def connect(self, ws: Any) -> None:
        asking: list[str] = []  # the nickname whose password comes next

        def answer(message: str | bytes) -> None:
            line = str(message)
            self.received.append(line)
            if asking:
                nick = asking.pop()
                if line == PASSWORD:
                    self.welcome(ws, nick)
                elif line == "encore":  # throttled: the next line is the
                    asking.append(nick)  # password again, as the server has it
                    ws.send(THROTTLED)
                else:
                    ws.send(TAKEN)
            elif line.startswith("/pseudo "):
                nick = line.removeprefix("/pseudo ")
                if nick == "alice":
                    asking.append(nick)
                    ws.send(ASK_PASSWORD)
                else:
                    self.welcome(ws, nick)
            elif line == "/unread":
                ws.send("Aucun message depuis votre dernière visite")
            elif line.startswith("/history "):
                self.history(ws, line)
            elif line.startswith("/search "):
                self.search(ws, line.removeprefix("/search "))
            elif line.startswith("/join #"):
                self.join(ws, line.removeprefix("/join "))

        ws.on_message(answer)
        ws.send(WELCOME)

    def welcome(self, ws: Any, nick: str) -> None:
        self.nick = nick
        for line in (f"Bienvenue {nick}", RULE, "Utilisateurs en ligne:", f"=>{nick}"):
            ws.send(line)
        ws.send(RULE)

    def join(self, ws: Any, room: str) -> None:
        """The answer to /join (docs/protocol.md, "Rooms"): the room, its
        members (dave, and the user last), its topic (the lobby has none)."""
        ws.send(f"Salon courant : {room}")
        for line in (RULE, "Utilisateurs en ligne:", "=>dave", f"=>{self.nick}", RULE):
            ws.send(line)
        if room != "#accueil":
            ws.send(
                f"Sujet de {room} : le plan de la semaine, voyez https://example.org"
            )

    def history(self, ws: Any, line: str) -> None:
        """The last lines (numbered, as the page asks for them, or not, as
        typed), nothing before them."""
        if line == "/history 50 avant 7":
            ws.send("--- début de l'historique ---")
            return
        numbered = line == "/history 50 avant fin"
        ws.send(f"--- historique (2 lignes{', n° 7 à 8' if numbered else ''}) ---")
        for kept in (SATURDAY, "[9.0.0]-dave: samedi", SUNDAY):
            ws.send(kept)
        ws.send("[9.0.1]-dave: dimanche")
        ws.send("--- fin de l'historique ---")

    def search(self, ws: Any, words: str) -> None:
        if words == "rien":
            ws.send("Aucune ligne ne contient « rien »")
            return
        if words == "mal":
            ws.send("Erreur : recherche impossible pour le moment, réessayez plus tard")
            return
        # A line of another user just before and just after the block.
        ws.send("[10.0.0]-carol: en direct avant")
        ws.send(f"--- recherche « {words} » (2 lignes) ---")
        ws.send(SATURDAY)
        ws.send("[9.0.0]-dave: le chat noir")
        ws.send(SUNDAY)
        ws.send("[9.0.1]-carol: un chat noir aussi")
        ws.send("--- fin de la recherche ---")
        ws.send("[10.0.1]-carol: en direct après")


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebChat]:
    with running(tmp_path_factory.mktemp("chat"), "--shutdown-timeout=2") as server:
        yield server


class Tab:
    """One browser context (its own localStorage) on the fake chat, with what
    it must never do recorded: throw, or break the Content-Security-Policy
    (the browser says so on its console)."""

    def __init__(
        self, browser: Any, chat: WebChat, fake: FakeChat, **context: Any
    ) -> None:
        self.context = browser.new_context(**context)
        self.context.route_web_socket("**/ws", fake.connect)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.goto(chat.url)

    def _console(self, message: Any) -> None:
        if message.type == "error":
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

    def connected(self, nick: str) -> None:
        expect(self.page.locator("#status")).to_have_text(f"connecté : {nick}")

    def lines(self, selector: str) -> list[list[str]]:
        result: list[list[str]] = self.page.locator(selector).evaluate(LINES)
        return result

    def saved(self) -> Any:
        text = self.page.evaluate(SAVED)
        return None if text is None else json.loads(text)


@pytest.fixture
def fake() -> FakeChat:
    return FakeChat()


def test_a_protected_nickname_asks_for_its_password_in_a_password_field(
    chat: WebChat, browser: Any, fake: FakeChat
) -> None:
    alice = Tab(browser, chat, fake)
    alice.join("alice")
    field = alice.page.get_by_label("Mot de passe")
    expect(field).to_be_visible()
    expect(field).to_be_focused()
    expect(field).to_have_attribute("type", "password")
    expect(field).to_have_attribute("autocomplete", "current-password")
    expect(alice.page.get_by_label("Pseudo")).to_be_hidden()
    expect(alice.page.get_by_label("Message")).to_be_hidden()

    # A wrong password: refused as a taken nickname, and the user tries again.
    alice.type_password("faux")
    expect(alice.page.locator("#join-error")).to_contain_text("Mot de passe refusé")
    expect(alice.page.get_by_label("Pseudo")).to_be_focused()
    expect(field).to_be_hidden()
    # Too many tries: the server's line says when to try again, and takes
    # the next line as the password again: the password field comes back.
    alice.join("alice")
    alice.type_password("encore")
    expect(alice.page.locator("#join-error")).to_have_text(THROTTLED)
    expect(field).to_be_focused()
    alice.type_password(PASSWORD)
    alice.connected("alice")
    expect(field).to_be_hidden()
    expect(alice.page.get_by_label("Message")).to_be_visible()
    assert fake.received[:5] == [
        "/pseudo alice",
        "faux",
        "/pseudo alice",
        "encore",
        PASSWORD,
    ]

    # A password typed in a command is sent, never shown nor kept.
    alice.page.get_by_label("Message").fill("/register autre1")
    alice.page.get_by_label("Message").press("Enter")
    expect(alice.page.locator("#log li .text").last).to_have_text("/register ••••••••")
    alice.page.get_by_label("Message").press("ArrowUp")
    expect(alice.page.get_by_label("Message")).to_have_value("")
    assert fake.received[-1] == "/register autre1"

    everything = alice.page.evaluate(EVERYTHING)
    for secret in ("s3cret", "faux", "encore", "autre1"):
        assert secret not in everything
    assert alice.saved() is None  # the box was not ticked: nothing kept
    assert alice.page.evaluate("() => localStorage.length") == 0
    assert alice.errors == []


def test_remember_me_saves_and_registers_by_itself_only_when_ticked(
    chat: WebChat, browser: Any, fake: FakeChat
) -> None:
    alice = Tab(browser, chat, fake)
    box = alice.page.get_by_label("se souvenir de moi")
    expect(box).not_to_be_checked()
    box.check()
    alice.join("alice")
    assert alice.saved() is None  # not before the registration succeeds
    alice.type_password(PASSWORD)
    alice.connected("alice")
    assert alice.saved() == {"nick": "alice", "password": PASSWORD}

    # The next load registers by itself: the password sent when asked,
    # without the field.
    fake.received.clear()
    alice.page.reload()
    alice.connected("alice")
    # (The page before the reload may still ask for older lines as it goes.)
    said = [line for line in fake.received if not line.startswith("/history")]
    assert said[:2] == ["/pseudo alice", PASSWORD]
    expect(alice.page.get_by_label("Mot de passe")).to_be_hidden()
    expect(alice.page.get_by_label("Message")).to_be_visible()

    # Unticking the box (still shown, alone, once registered) forgets.
    expect(box).to_be_checked()
    box.uncheck()
    assert alice.saved() is None
    alice.page.reload()
    expect(alice.page.get_by_label("Pseudo")).to_be_visible()
    expect(alice.page.get_by_label("Pseudo")).to_have_value("")
    expect(box).not_to_be_checked()

    # Without the box, nothing is kept, protected nickname or not.
    bob = Tab(browser, chat, fake)
    bob.join("bob")
    bob.connected("bob")
    assert bob.page.evaluate("() => localStorage.length") == 0
    assert alice.errors == bob.errors == []


def test_a_wrong_saved_password_is_forgotten(
    chat: WebChat, browser: Any, fake: FakeChat
) -> None:
    alice = Tab(browser, chat, fake)
    old = json.dumps({"nick": "alice", "password": "ancien"})
    alice.page.evaluate(f"() => localStorage.setItem('chatproto.remember', {old!r})")
    alice.page.reload()
    expect(alice.page.locator("#join-error")).to_contain_text("Mot de passe refusé")
    assert fake.received[-2:] == ["/pseudo alice", "ancien"]
    assert alice.saved() is None
    assert alice.errors == []


def test_search_answers_go_to_a_panel_of_their_own(
    chat: WebChat, browser: Any, fake: FakeChat
) -> None:
    bob = Tab(browser, chat, fake)
    panel = bob.page.get_by_role("region", name="Recherche")
    expect(bob.page.get_by_label("Rechercher")).to_be_hidden()  # not registered
    bob.join("bob")
    bob.connected("bob")
    expect(panel).to_be_hidden()

    search = bob.page.get_by_label("Rechercher")
    search.fill("  chat noir ")
    search.press("Enter")
    expect(panel.get_by_role("status")).to_have_text(
        "recherche « chat noir » (2 lignes)"
    )
    assert fake.received[-1] == "/search chat noir"
    assert bob.lines("#found") == [
        ["separator", "— samedi 5 décembre 2026 —"],
        ["public history", "le chat noir"],
        ["separator", "— dimanche 6 décembre 2026 —"],
        ["public history", "un chat noir aussi"],
    ]
    # The live lines around the block went to the conversation, the
    # block's lines did not.
    expect(bob.page.locator("#log li").last).to_contain_text("en direct après")
    log = bob.lines("#log")
    assert ["public", "en direct avant"] in log
    assert not [line for line in log if "chat noir" in line[1] or "---" in line[1]]

    # No match: one message in the panel, the earlier lines gone.
    search.fill("rien")
    search.press("Enter")
    expect(panel.get_by_role("status")).to_have_text(
        "Aucune ligne ne contient « rien »"
    )
    assert bob.lines("#found") == []
    # An error, there too.
    search.fill("mal")
    search.press("Enter")
    expect(panel.get_by_role("status")).to_have_text(
        "Erreur : recherche impossible pour le moment, réessayez plus tard"
    )
    expect(panel.get_by_role("status")).to_have_class("error")

    # A /search typed in the message box is answered in the panel too.
    panel.get_by_role("button", name="Fermer la recherche").click()
    expect(panel).to_be_hidden()
    bob.page.get_by_label("Message").fill("/search noir")
    bob.page.get_by_label("Message").press("Enter")
    expect(panel.get_by_role("status")).to_have_text("recherche « noir » (2 lignes)")
    panel.get_by_role("button", name="Fermer la recherche").press("Escape")
    expect(panel).to_be_hidden()
    assert bob.errors == []


def test_day_lines_of_a_history_block_are_separators(
    chat: WebChat, browser: Any, fake: FakeChat
) -> None:
    bob = Tab(browser, chat, fake)
    bob.join("bob")
    bob.connected("bob")
    earlier = "— messages précédents —"
    start = "— début de l'historique —"
    expect(bob.page.locator("#log .separator").first).to_have_text(start)
    history = [
        ["separator", "— samedi 5 décembre 2026 —"],
        ["public history", "samedi"],
        ["separator", "— dimanche 6 décembre 2026 —"],
        ["public history", "dimanche"],
    ]
    assert bob.lines("#log") == [["separator", start], *history, ["separator", earlier]]

    # A /history typed: the day lines are separators there too.
    bob.page.get_by_label("Message").fill("/history 2")
    bob.page.get_by_label("Message").press("Enter")
    end = "— fin de l'historique —"
    expect(bob.page.locator("#log .separator").last).to_have_text(end)
    assert bob.lines("#log")[-6:] == [
        ["separator", "— historique (2 lignes) —"],
        *history,
        ["separator", end],
    ]
    assert bob.errors == []
