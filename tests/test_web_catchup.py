"""The page's pure helpers (C{blocks}, C{withoutPassword}, C{mentions} and
C{roomName} in app.js), run under node without a browser: the headers of
the blocks the page asks for, whose numbers identify the lines (never their
text), the lines of a block that the page got live (after a cut, where the
server cannot know which it got: by the stamped lines it had), what a
mention is, and a room's name from a link or a field."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from chatproto.web import PAGE

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs node")

RUN = """
const { blocks } = require(process.argv[1]);
const [name, args] = JSON.parse(process.argv[2]);
process.stdout.write(JSON.stringify(blocks[name](...args) ?? null));
"""


def call(name: str, *args: Any) -> Any:
    """C{blocks.NAME(...ARGS)} in app.js, under node."""
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", RUN, str(PAGE / "app.js"), json.dumps([name, args])],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return json.loads(done.stdout)


def test_the_header_of_what_was_said_since_the_last_visit() -> None:
    """The separator shows the header without its numbers; the page keeps
    the first line's number, to ask for the lines before it."""
    since = "depuis votre dernière visite"
    assert call("head", f"--- 3 messages {since} (n° 120 à 124) ---") == {
        "kind": "unread",
        "text": f"3 messages {since}",
        "first": 120,
    }
    assert call("head", f"--- 1 message {since} (n° 7 à 7) ---") == {
        "kind": "unread",
        "text": f"1 message {since}",
        "first": 7,
    }
    more = f"--- 812 messages {since}, voici les 500 derniers (n° 1313 à 1812) ---"
    assert call("head", more) == {
        "kind": "unread",
        "text": f"812 messages {since}, voici les 500 derniers",
        "first": 1313,
    }


def test_the_header_of_older_lines_and_of_a_plain_history() -> None:
    assert call("head", "--- historique (50 lignes, n° 51 à 100) ---") == {
        "kind": "history",
        "text": "historique (50 lignes)",
        "first": 51,
    }
    assert call("head", "--- historique (1 ligne, n° 1 à 1) ---") == {
        "kind": "history",
        "text": "historique (1 ligne)",
        "first": 1,
    }
    # /history N, as typed: no numbers, nothing the page counts on.
    assert call("head", "--- historique (2 lignes) ---") == {
        "kind": "history",
        "text": "historique (2 lignes)",
        "first": None,
    }


@pytest.mark.parametrize(
    "line",
    [
        "--- fin de l'historique ---",
        "--- début de l'historique ---",
        "--- fin des messages depuis votre dernière visite ---",
        "--- lundi 7 décembre 2026 ---",
        "--- recherche « x » (2 lignes) ---",
        "--- historique (2 lignes, n° 1 à) ---",
        "--- 3 messages depuis votre dernière visite ---",
        "[10.0.0]-bob: --- historique (2 lignes, n° 1 à 2) ---",
        "Aucun message depuis votre dernière visite",
    ],
)
def test_no_other_line_is_a_header(line: str) -> None:
    assert call("head", line) is None


def test_day_lines() -> None:
    assert call("isDay", "--- lundi 7 décembre 2026 ---") is True
    assert call("isDay", "--- mardi 1er décembre 2026 ---") is True
    assert call("isDay", "--- début de l'historique ---") is False
    assert call("isDay", "[10.0.0]-bob: --- lundi 7 décembre 2026 ---") is False


def said(second: int, text: str, nick: str = "bob") -> str:
    return f"[10.0.{second}]-{nick}: {text}"


def test_the_last_lines_asked_on_arriving_stop_before_the_page_s_arrival() -> None:
    """The lines after it came live: the last arrival of the nickname, in
    any case, is the page's (an earlier visit's is history)."""
    block = [
        "[9.0.0]-Connexion de alice",
        "[9.0.5]-Déconnection de alice",
        said(1, "un"),
        "[10.0.2]-Connexion de Alice",
        said(3, "reçu en direct"),
    ]
    assert call("beforeArrival", block, "alice") == block[:3]
    # A line that says the words is no arrival.
    block = [said(1, "Connexion de alice", "carol"), said(2, "deux")]
    assert call("beforeArrival", block, "alice") == block


def test_without_the_page_s_arrival_the_whole_block_is_shown() -> None:
    """Past --join-notice-limit users, arrivals are not said."""
    block = ["--- dimanche 6 décembre 2026 ---", said(1, "un"), said(2, "deux")]
    assert call("beforeArrival", block, "alice") == block
    assert call("beforeArrival", [], "alice") == []


def test_a_reconnection_s_unread_leaves_out_the_lines_the_page_had() -> None:
    """After a cut, /unread gives every line since the last ping the page
    answered: those it got live, or said itself, are not shown again, each
    leaving out one equal line; a day line left alone goes too."""
    day = "--- lundi 7 décembre 2026 ---"
    block = [
        "--- dimanche 6 décembre 2026 ---",
        said(1, "reçu"),
        said(2, "dit", "alice"),
        day,
        said(3, "deux fois"),
        said(3, "deux fois"),
        "[10.0.4]-#salle alice: dans le salon",
        said(5, "manqué"),
        "[10.0.6]-Déconnection de alice",
    ]
    heard = [said(0, "avant"), said(1, "reçu"), said(3, "deux fois")]
    own = ["alice: dit", "#salle alice: dans le salon", "alice: jamais arrivé"]
    assert call("unheard", block, heard, own) == [
        day,
        said(3, "deux fois"),
        said(5, "manqué"),
        "[10.0.6]-Déconnection de alice",
    ]
    # Nothing new: nothing left; nothing had: the whole block.
    assert call("unheard", block[:4], heard, own) == []
    assert call("unheard", block, [], []) == block
    # The text of a line is no stamped line: "reçu" said again is shown.
    assert call("unheard", [said(9, "reçu")], heard, own) == [said(9, "reçu")]
    # The page's own arrival (which it never gets live) is among what it
    # said: a connection cut before its first ping gets it back.
    block = ["[9.59.58]-Connexion de alice", said(1, "reçu")]
    assert call("unheard", block, heard, ["Connexion de alice"]) == []


WITHOUT_PASSWORD = """
const { withoutPassword } = require(process.argv[1]);
process.stdout.write(JSON.stringify(JSON.parse(process.argv[2]).map(withoutPassword)));
"""


def test_a_password_typed_in_a_command_is_hidden_from_what_the_page_shows() -> None:
    """The page shows a line it sends, and keeps it for the arrow keys:
    never with a password in it."""
    assert NODE is not None
    typed = [
        "/register s3cret mot",
        "/unregister s3cret",
        "/pseudo alice s3cret",
        "/op s3cret",
        "  /register   s3cret",
        "/pseudo alice",
        "/register",
        "/search s3cret",
        "je dis /register s3cret",
    ]
    done = subprocess.run(
        [NODE, "-e", WITHOUT_PASSWORD, str(PAGE / "app.js"), json.dumps(typed)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert json.loads(done.stdout) == [
        "/register ••••••••",
        "/unregister ••••••••",
        "/pseudo alice ••••••••",
        "/op ••••••••",
        "  /register   ••••••••",
        "/pseudo alice",
        "/register",
        "/search s3cret",
        "je dis /register s3cret",
    ]


MENTIONS = """
const { mentions } = require(process.argv[1]);
const [nick, texts] = JSON.parse(process.argv[2]);
process.stdout.write(JSON.stringify(texts.map((text) => mentions(text, nick))));
"""


def test_a_mention_is_the_nickname_as_a_word_whatever_its_case() -> None:
    """What raises a desktop notification in a hidden tab: the nickname as
    a word of its own, not inside a longer word or nickname."""
    assert NODE is not None
    texts = {
        "alice, tu es là ?": True,
        "salut Alice": True,
        "@ALICE !": True,
        "alice": True,
        "pour (alice)": True,
        "malice": False,
        "alice_2 arrive": False,
        "alice-bis": False,
        "alices": False,
        "bonjour à tous": False,
        "malice puis alice": True,
    }
    given = json.dumps(["Alice", list(texts)])
    done = subprocess.run(
        [NODE, "-e", MENTIONS, str(PAGE / "app.js"), given],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert dict(zip(texts, json.loads(done.stdout), strict=True)) == texts


ROOM_NAMES = """
const { roomName } = require(process.argv[1]);
const texts = JSON.parse(process.argv[2]);
process.stdout.write(JSON.stringify(texts.map((text) => roomName(text))));
"""


def test_a_room_s_name_from_a_link_or_a_field() -> None:
    """As the server writes it (lower case, with its #), whatever was typed;
    null for a name that breaks the rule (docs/protocol.md, "Rooms"): the
    page says so and sends nothing."""
    assert NODE is not None
    texts = {
        "salle": "#salle",
        " #Salle-B_2 ": "#salle-b_2",
        "#" + "a" * 24: "#" + "a" * 24,
        "": None,
        "#": None,
        "a" * 25: None,
        "pas de blanc": None,
        "élève": None,
        "##salle": None,
        "<b>x</b>": None,
        "salle\n/quit": None,
    }
    done = subprocess.run(
        [NODE, "-e", ROOM_NAMES, str(PAGE / "app.js"), json.dumps(list(texts))],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert json.loads(done.stdout) == list(texts.values())


def test_a_room_s_last_lines_stop_before_the_page_s_arrival_in_it() -> None:
    """A room's lines are tagged with its name: its arrival is found too."""
    lines = [
        "[9.0.0]-#salle Connexion de alice",
        "[9.0.1]-#salle alice: avant",
        "[9.0.2]-#salle Connexion de Bob",
        "[9.0.3]-#salle alice: après",
    ]
    assert call("beforeArrival", lines, "bob") == lines[:2]
