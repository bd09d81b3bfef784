"""/search, and the day lines of /history and /search blocks
(docs/protocol.md, "History" and "Search").

The commands over the real factory with in-memory transports, on a fake
clock; the days in a fixed time zone (Paris's). The in-memory history's own
search is in tests/test_history.py, the cluster's in
tests/test_history_cluster.py and tests/test_history_node.py."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator, Sequence

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from chatproto import wire
from chatproto.history import Kept, MemoryHistory
from chatproto.registry import ClusterUnreachable
from chatproto.testing import Chat

HISTORY_END = b"--- fin de l'historique ---\n"
SEARCH_END = b"--- fin de la recherche ---\n"
USAGE = "Erreur : tapez /search MOTS, de 1 à 8 mots et 200 caractères au plus\n"
ELEPHANTS = ["Éléphant", "l'éléphant", "ÉLÉPHANT rose", "un elephant"]


@pytest.fixture
def paris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server's local time is Paris's (UTC+1 in winter) for the test."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def paris_time(text: str) -> float:
    """C{YYYY-MM-DD HH:MM:SS} in Paris in winter, in seconds since the epoch."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")) - 3600


def chat_at(moment: str, **config: object) -> Chat:
    """A chat whose clock shows C{moment} (Paris), no user in it yet: no
    pings (the test jumps days), lines kept for 30 days, no arrival lines."""
    chat = Chat(ping_interval=0, history_age=30 * 86400, join_notice_limit=0, **config)
    chat.advance(paris_time(moment) - chat.clock.seconds())
    return chat


def at(chat: Chat, moment: str) -> None:
    chat.advance(paris_time(moment) - chat.clock.seconds())


def said(chat: Chat, nick: str, text: str) -> bytes:
    """The public line C{nick} made now with C{text}."""
    return chat.stamp() + f"-{nick}: {text}\n".encode()


# /search over the real factory


@pytest.mark.parametrize("words", ["elephant", "ELEPHANT", "éléphant", "Éléphant"])
def test_search_answers_with_the_lines_exactly_as_they_were_sent(words: str) -> None:
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice, bob = chat.user("alice"), chat.user("bob")
    lines = []
    for text in [*ELEPHANTS, "une souris"]:
        alice.send(text.encode() + b"\n")
        lines.append(said(chat, "alice", text))
    alice.take()
    bob.take()
    bob.send(b"/search  " + words.encode() + b" \n")
    assert bob.take() == (
        f"--- recherche « {words} » (4 lignes) ---\n".encode()
        + b"".join(lines[:4])
        + SEARCH_END
    )
    assert alice.take() == b""  # to the asker alone


def test_search_wants_every_word_of_the_users_line() -> None:
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice = chat.user("alice")
    for text in (b"un chat gris", b"un chat noir", b"gris souris"):
        alice.send(text + b"\n")
    alice.take()
    alice.send(b"/search Chat, gris!\n")
    assert alice.take() == (
        "--- recherche « Chat, gris! » (1 ligne) ---\n".encode()
        + said(chat, "alice", "un chat gris")
        + SEARCH_END
    )


def test_search_sends_the_twenty_most_recent_oldest_first() -> None:
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice = chat.user("alice")
    for i in range(30):
        alice.send(b"ligne %d\n" % i)
    alice.take()
    alice.send(b"/search ligne\n")
    lines = alice.lines()
    assert lines[0] == "--- recherche « ligne » (20 lignes) ---\n".encode()
    assert lines[1:-1] == [said(chat, "alice", f"ligne {i}") for i in range(10, 30)]
    assert lines[-1] == SEARCH_END


def test_no_match_is_one_line() -> None:
    chat = Chat()
    alice = chat.user("alice")
    alice.send(b"bonjour\n")
    alice.take()
    alice.send(b"/search  girafe  bleue \n")
    line = "Aucune ligne ne contient « girafe  bleue »\n".encode()
    assert alice.take() == line
    assert line.rstrip(b"\n") not in wire.CLIENT_EXITS


@pytest.mark.parametrize(
    "argument",
    [
        b"",
        b"   ",
        b"!!! ... ?",
        b"'_-",
        b"a b c d e f g h i",  # 9 words
        b"x" * 201,
    ],
)
def test_a_bad_search_gets_the_usage_line(argument: bytes) -> None:
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.take()
    alice.send(b"/search " + argument + b"\n")
    assert alice.take() == USAGE.encode()
    assert bob.take() == b""


def test_eight_words_and_two_hundred_characters_are_searched() -> None:
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice = chat.user("alice")
    alice.send(b"a b c d e f g h\n")
    alice.take()
    alice.send(b"/search h g f e d c b a\n")
    assert alice.take().startswith(
        "--- recherche « h g f e d c b a » (1 ligne)".encode()
    )
    long = "é" * 200  # characters, not bytes; the spaces around do not count
    alice.send(b"/search   " + long.encode() + b"  \n")
    assert alice.take() == f"Aucune ligne ne contient « {long} »\n".encode()


def test_search_says_so_when_the_server_keeps_no_history() -> None:
    chat = Chat(history_lines=0)
    alice = chat.user("alice")
    alice.send(b"/search chat\n")
    assert alice.take() == b"Erreur : ce serveur ne garde pas d'historique\n"


def test_search_is_for_registered_users_only() -> None:
    chat = Chat()
    chat.user("alice").send(b"chat\n")
    newcomer = chat.connect()
    newcomer.take()
    newcomer.send(b"/search chat\n")
    assert newcomer.take() == wire.WELCOME


def test_search_comes_after_the_public_lines_not_yet_given() -> None:
    chat = Chat(join_notice_limit=0)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.send(b"vite\n")
    alice.send(b"/search vite\n")
    line = said(chat, "bob", "vite")
    assert alice.take() == (
        line + "--- recherche « vite » (1 ligne) ---\n".encode() + line + SEARCH_END
    )


class Unreachable(MemoryHistory):
    """A history that cannot be read now (a cluster's Redis)."""

    def search(
        self, words: Sequence[str], count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        return fail(ClusterUnreachable("no connection to Redis"))


def test_a_search_that_cannot_be_read_gets_a_clear_line() -> None:
    chat = Chat()
    chat.factory.room.history = Unreachable(chat.factory.config, chat.clock)
    alice = chat.user("alice")
    alice.send(b"/search chat\n")
    line = "Erreur : recherche impossible pour le moment, réessayez plus tard\n"
    assert alice.take() == line.encode()


def test_a_search_answer_that_comes_after_the_user_left_is_dropped() -> None:
    answer: Deferred[list[Kept]] = Deferred()

    class Slow(MemoryHistory):
        def search(
            self, words: Sequence[str], count: int, room: str | None = None
        ) -> Deferred[list[Kept]]:
            return answer

    chat = Chat()
    chat.factory.room.history = Slow(chat.factory.config, chat.clock)
    alice = chat.user("alice")
    alice.send(b"/search late\n")
    alice.proto.transport.loseConnection()
    answer.callback([Kept(1, chat.clock.seconds(), b"late\n")])
    assert b"late" not in alice.take()


def test_search_asks_the_history_for_twenty_folded_words() -> None:
    asked: list[tuple[list[str], int]] = []

    class Asked(MemoryHistory):
        def search(
            self, words: Sequence[str], count: int, room: str | None = None
        ) -> Deferred[list[Kept]]:
            asked.append((list(words), count))
            return succeed([])

    chat = Chat()
    chat.factory.room.history = Asked(chat.factory.config, chat.clock)
    alice = chat.user("alice")
    alice.send("/search L'Éléphant, ROSE\n".encode())
    assert asked == [(["l", "elephant", "rose"], 20)]


def test_help_lists_search_in_one_line() -> None:
    chat = Chat()
    alice = chat.user("alice")
    alice.send(b"/help\n")
    line = "  /search MOTS       les 20 dernières lignes publiques qui ont ces mots\n"
    assert [line for line in alice.lines() if b"/search" in line] == [line.encode()]


# Day lines, in the server's local time


@pytest.mark.usefixtures("paris")
def test_the_lines_of_yesterday_come_after_their_day_line() -> None:
    """Midnight in Paris is 23:00 UTC: both lines are of one UTC day, and
    of two days in the server's local time."""
    chat = chat_at("2026-12-06 23:59:30")
    alice = chat.user("alice")
    alice.send(b"avant minuit\n")
    before = said(chat, "alice", "avant minuit")
    at(chat, "2026-12-07 00:00:10")
    alice.send(b"apr\xc3\xa8s minuit\n")
    after = said(chat, "alice", "après minuit")
    alice.take()
    alice.send(b"/history\n")
    assert alice.take() == (
        b"--- historique (2 lignes) ---\n"
        + "--- dimanche 6 décembre 2026 ---\n".encode()
        + before
        + after
        + HISTORY_END
    )


@pytest.mark.usefixtures("paris")
def test_each_earlier_day_has_its_line_and_today_none() -> None:
    chat = chat_at("2026-11-30 21:00:00")
    alice = chat.user("alice")
    expected = [b"--- historique (6 lignes) ---\n"]
    for moment, text, day in [
        ("2026-11-30 21:00:00", "lundi soir", "--- lundi 30 novembre 2026 ---"),
        ("2026-11-30 23:00:00", "lundi tard", None),
        ("2026-12-01 08:00:00", "mardi", "--- mardi 1er décembre 2026 ---"),
        ("2026-12-03 12:00:00", "jeudi", "--- jeudi 3 décembre 2026 ---"),
        ("2026-12-07 00:00:00", "minuit", None),
        ("2026-12-07 09:00:00", "lundi matin", None),
    ]:
        at(chat, moment)
        alice.send(f"{text}\n".encode())
        if day is not None:
            expected.append(f"{day}\n".encode())
        expected.append(said(chat, "alice", text))
    expected.append(HISTORY_END)
    alice.take()
    alice.send(b"/history\n")
    assert alice.lines() == expected


@pytest.mark.usefixtures("paris")
def test_a_history_of_today_has_no_day_line() -> None:
    chat = chat_at("2026-12-07 00:00:00")
    alice = chat.user("alice")
    alice.send(b"minuit\n")
    at(chat, "2026-12-07 23:59:59")
    alice.send(b"fin du jour\n")
    alice.take()
    alice.send(b"/history\n")
    assert alice.lines()[1:3] == [
        b"[0.0.0]-alice: minuit\n",
        b"[23.59.59]-alice: fin du jour\n",
    ]


@pytest.mark.usefixtures("paris")
def test_search_has_the_day_lines_of_history() -> None:
    chat = chat_at("2026-12-05 10:00:00")
    alice = chat.user("alice")
    alice.send(b"un chat samedi\n")
    saturday = said(chat, "alice", "un chat samedi")
    at(chat, "2026-12-06 10:00:00")
    alice.send(b"pas de chien\n")
    at(chat, "2026-12-07 10:00:00")
    alice.send(b"un chat lundi\n")
    monday = said(chat, "alice", "un chat lundi")
    alice.take()
    alice.send(b"/search chat\n")
    assert alice.take() == (
        "--- recherche « chat » (2 lignes) ---\n".encode()
        + "--- samedi 5 décembre 2026 ---\n".encode()
        + saturday
        + monday
        + SEARCH_END
    )


@pytest.mark.parametrize(
    ("date", "line"),
    [
        ("2026-12-01", "--- mardi 1er décembre 2026 ---"),
        ("2026-08-01", "--- samedi 1er août 2026 ---"),
        ("2026-02-28", "--- samedi 28 février 2026 ---"),
        ("2027-01-03", "--- dimanche 3 janvier 2027 ---"),
        ("2026-06-11", "--- jeudi 11 juin 2026 ---"),
    ],
)
def test_a_day_line_names_the_day_in_french(date: str, line: str) -> None:
    assert wire.day_line(time.strptime(date, "%Y-%m-%d")) == f"{line}\n".encode()


# No line a client acts on


def test_no_new_line_is_one_a_client_acts_on() -> None:
    """Not a line the Ruby client exits on, nor the user list's rule."""
    from chatproto.client.servers import RULE

    days = [time.strptime(f"2026-12-{d:02}", "%Y-%m-%d") for d in range(1, 8)]
    months = [time.strptime(f"2026-{m:02}-01", "%Y-%m-%d") for m in range(1, 13)]
    lines = [
        *(wire.day_line(day) for day in days + months),
        wire.search_header("Deconnexion", 1),
        wire.search_header("x", 20),
        wire.SEARCH_END,
        wire.notice(wire.SEARCH_NONE.format("Deconnexion")),
        wire.notice(wire.SEARCH_USAGE.format(8, 200)),
        wire.notice(wire.SEARCH_UNAVAILABLE),
    ]
    for line in lines:
        text = line.decode().rstrip("\n")
        assert text not in {exit.decode() for exit in wire.CLIENT_EXITS}
        assert not RULE.fullmatch(text)
