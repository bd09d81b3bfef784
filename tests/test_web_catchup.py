"""What the page shows of a history block (catchUp.missed in app.js), run
under node without a browser: the lines the page asks for on registering,
and after a reconnection only those the cut made it miss."""

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
const { catchUp } = require(process.argv[1]);
const [block, before, after, nick, reconnected] = JSON.parse(process.argv[2]);
const key = (k) => (k.startsWith("own:") ? catchUp.ownKey(nick, k.slice(4)) : k);
const found = catchUp.missed(block, before.map(key), after.map(key), nick, reconnected);
process.stdout.write(JSON.stringify(found));
"""


def missed(
    block: list[str],
    before: list[str],
    after: list[str] = [],  # noqa: B006 (never changed)
    *,
    nick: str = "alice",
    reconnected: bool = True,
) -> dict[str, Any]:
    """C{catchUp.missed} on these lines; C{own:TEXT} is a line typed on the
    page (shown without the server's stamp)."""
    assert NODE is not None
    args = json.dumps([block, before, after, nick, reconnected])
    done = subprocess.run(
        [NODE, "-e", RUN, str(PAGE / "app.js"), args],
        capture_output=True,
        check=True,
        timeout=30,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def said(second: int, text: str, nick: str = "bob") -> str:
    return f"[10.0.{second}]-{nick}: {text}"


def test_on_arriving_the_page_shows_the_block_but_its_own_arrival() -> None:
    block = [said(1, "un"), said(2, "deux"), "[10.0.3]-Connexion de alice"]
    assert missed(block, [], reconnected=False) == {
        "lines": [said(1, "un"), said(2, "deux")],
        "gap": False,
    }


def test_an_earlier_visit_s_arrival_and_departure_are_history_on_arriving() -> None:
    """Past --join-notice-limit users, the page's arrival is not in the
    block: an earlier visit's, ended by its departure, stays."""
    block = ["[9.0.0]-Connexion de alice", "[9.0.5]-Déconnection de alice"]
    block.append(said(1, "un"))
    assert missed(block, [], reconnected=False)["lines"] == block


def test_an_earlier_visit_ended_by_a_kick_is_history_too() -> None:
    block = ["[9.0.0]-Connexion de alice"]
    block.append("[9.0.5]-Déconnection de alice (expulsé par op : spam)")
    assert missed(block, [], reconnected=False)["lines"] == block


def test_the_page_s_arrival_is_left_out_wherever_it_is_in_the_block() -> None:
    """In a cluster, a line of another node may be kept after it, and not
    be received yet when the block comes."""
    block = ["[10.0.3]-Connexion de alice", said(4, "pas encore reçu")]
    assert missed(block, [], reconnected=False)["lines"] == [said(4, "pas encore reçu")]


def test_lines_received_since_registering_are_not_shown_again() -> None:
    """The server sends the block after the lines made before the question
    that the asker had not been given: they end the block too."""
    block = [said(1, "avant"), "[10.0.2]-Connexion de alice", said(3, "pendant")]
    assert missed(block, [], [said(3, "pendant")], reconnected=False)["lines"] == [
        said(1, "avant")
    ]


def test_after_a_reconnection_only_the_lines_after_the_overlap_are_missed() -> None:
    before = [said(1, "un"), said(2, "deux")]
    block = [
        *before,
        "[10.0.3]-Déconnection de alice",
        said(4, "trois"),
        said(5, "quatre"),
        "[10.0.6]-Connexion de alice",
    ]
    assert missed(block, before) == {
        "lines": [said(4, "trois"), said(5, "quatre")],
        "gap": False,
    }


def test_an_identical_line_in_the_same_second_is_missed_once() -> None:
    """Two lines with the same text and stamp are two lines: the one shown
    before the cut hides only itself."""
    twin = said(4, "ok")
    block = [said(1, "un"), twin, twin, twin]
    assert missed(block, [said(1, "un"), twin])["lines"] == [twin, twin]


def test_lines_received_live_since_reconnecting_stay_below_the_missed_ones() -> None:
    block = [said(1, "un"), said(2, "manqué"), said(3, "vu en direct")]
    assert missed(block, [said(1, "un")], [said(3, "vu en direct")])["lines"] == [
        said(2, "manqué")
    ]


def test_a_live_twin_of_a_missed_line_hides_the_last_one() -> None:
    twin = said(2, "ok")
    block = [said(1, "un"), twin, said(2, "entre"), twin]
    assert missed(block, [said(1, "un")], [twin])["lines"] == [twin, said(2, "entre")]


def test_lines_ordered_otherwise_by_another_node_are_neither_lost_nor_doubled() -> None:
    """In a cluster, Redis may hold lines of two nodes in another order than
    one node showed them live: the page matches lines, not positions."""
    before = [said(1, "a", "bob"), said(1, "b", "carol"), said(2, "c", "bob")]
    block = [
        said(1, "b", "carol"),
        said(1, "a", "bob"),
        said(2, "x", "carol"),
        said(2, "c", "bob"),
        said(3, "y", "carol"),
    ]
    assert missed(block, before) == {
        "lines": [said(2, "x", "carol"), said(3, "y", "carol")],
        "gap": False,
    }


def test_a_block_longer_than_the_first_shows_nothing_older_than_the_page() -> None:
    """After a reconnection the page asks for more than it showed on
    arriving: the older lines are not missed ones."""
    block = [said(1, "plus ancien"), said(2, "premier vu"), said(3, "manqué")]
    assert missed(block, [said(2, "premier vu")])["lines"] == [said(3, "manqué")]


def test_a_line_typed_on_the_page_matches_its_stamped_copy() -> None:
    """The page shows its own lines without the server's stamp."""
    block = [said(1, "un"), said(2, "de moi", "alice"), said(3, "manqué")]
    assert missed(block, [said(1, "un"), "own:de moi"])["lines"] == [said(3, "manqué")]
    block = [said(1, "un"), said(2, "tapé après", "alice")]
    assert missed(block, [said(1, "un")], ["own:tapé après"])["lines"] == []


def test_a_history_lost_with_a_restart_is_shown_whole_as_maybe_incomplete() -> None:
    block = [
        "[11.0.0]-Connexion de bob",
        said(1, "nouveau"),
        "[11.0.2]-Connexion de alice",
    ]
    assert missed(block, [said(50, "avant le redémarrage")]) == {
        "lines": ["[11.0.0]-Connexion de bob", said(1, "nouveau")],
        "gap": True,
    }


def test_a_cut_in_which_nothing_was_said_shows_nothing() -> None:
    before = [said(1, "un")]
    block = [*before, "[10.0.2]-Déconnection de alice", "[10.0.3]-Connexion de alice"]
    assert missed(block, before) == {"lines": [], "gap": False}


def test_an_empty_history_on_arriving_shows_nothing() -> None:
    assert missed([], [], reconnected=False) == {"lines": [], "gap": False}


SATURDAY = "--- samedi 5 décembre 2026 ---"
SUNDAY = "--- dimanche 6 décembre 2026 ---"


def test_a_day_line_comes_back_before_the_missed_lines_of_its_day() -> None:
    before = [said(1, "un")]
    block = [SATURDAY, *before, SUNDAY, said(2, "manqué")]
    assert missed(block, before) == {"lines": [SUNDAY, said(2, "manqué")], "gap": False}


def test_a_day_line_with_no_missed_line_after_it_does_not_come_back() -> None:
    """A page open since Saturday that reconnects on Monday, nothing said
    since Sunday: nothing was missed, not even Sunday's day line."""
    before = [said(1, "samedi"), said(2, "dimanche")]
    block = [SATURDAY, before[0], SUNDAY, before[1]]
    assert missed(block, before) == {"lines": [], "gap": False}


def test_a_day_line_is_never_the_overlap_with_what_was_shown() -> None:
    """Day lines are no lines of the conversation: one shown before the
    cut matches nothing, so a block of other lines is all missed."""
    block = [SUNDAY, said(1, "après un redémarrage")]
    assert missed(block, [SUNDAY]) == {"lines": block, "gap": True}


def test_on_arriving_day_lines_stay_where_they_are_in_the_block() -> None:
    block = [
        SATURDAY,
        said(1, "un"),
        SUNDAY,
        said(2, "deux"),
        "[10.0.3]-Connexion de alice",
    ]
    assert missed(block, [], reconnected=False)["lines"] == block[:-1]


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
