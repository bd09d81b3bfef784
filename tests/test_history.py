"""The history of public lines, and /history (docs/protocol.md, "/history").

The in-memory history on a fake clock, then the command over the real
factory with in-memory transports."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from chatproto import wire
from chatproto.config import ServerConfig
from chatproto.history import Kept, MemoryHistory, search_words
from chatproto.registry import ClusterUnreachable
from chatproto.testing import Chat

END = b"--- fin de l'historique ---\n"


def last(history: MemoryHistory, count: int) -> list[bytes]:
    result: list[list[Kept]] = []
    history.last(count).addCallback(result.append)
    return [kept.line for kept in result[0]]


def found(history: MemoryHistory, words: Sequence[str], count: int) -> list[bytes]:
    result: list[list[Kept]] = []
    history.search(words, count).addCallback(result.append)
    return [kept.line for kept in result[0]]


def memory(**config: object) -> tuple[MemoryHistory, Clock]:
    clock = Clock()
    return MemoryHistory(ServerConfig(**config), clock), clock  # type: ignore[arg-type]


# The in-memory history


def test_the_history_gives_the_last_lines_oldest_first() -> None:
    history, _ = memory()
    for i in range(5):
        history.record(b"line %d\n" % i)
    assert last(history, 3) == [b"line 2\n", b"line 3\n", b"line 4\n"]
    assert last(history, 50) == [b"line %d\n" % i for i in range(5)]


def test_the_history_keeps_at_most_history_lines_lines() -> None:
    history, _ = memory(history_lines=3)
    for i in range(10):
        history.record(b"line %d\n" % i)
    assert len(history) == 3
    assert last(history, 10) == [b"line 7\n", b"line 8\n", b"line 9\n"]


def test_the_history_keeps_at_most_history_bytes_of_lines() -> None:
    """Long lines push the oldest out by their bytes, not their number."""
    history, _ = memory(history_lines=100, history_bytes=1024)
    for i in range(10):
        history.record(b"%d" % i + b"x" * 299 + b"\n")
    assert history.size <= 1024
    assert [line[:1] for line in last(history, 100)] == [b"7", b"8", b"9"]


def test_a_line_longer_than_the_byte_bound_is_not_kept() -> None:
    history, _ = memory(history_bytes=1024)
    history.record(b"short\n")
    history.record(b"x" * 2000 + b"\n")
    assert last(history, 10) == [b"short\n"]


def test_the_history_forgets_lines_older_than_history_age() -> None:
    """The stamp has no date: a line of yesterday must not read as today's."""
    history, clock = memory(history_age=3600)
    history.record(b"old\n")
    clock.advance(1800)
    history.record(b"newer\n")
    clock.advance(1801)
    assert last(history, 10) == [b"newer\n"]
    clock.advance(1800)
    assert last(history, 10) == []
    assert history.size == 0


def test_no_history_is_kept_with_zero_history_lines() -> None:
    history, _ = memory(history_lines=0)
    history.record(b"line\n")
    assert len(history) == 0


# The in-memory history's search (/search: tests/test_search.py)


def test_search_finds_a_word_whatever_its_case_and_accents() -> None:
    history, _ = memory()
    elephants = ["Éléphant", "l'éléphant", "ÉLÉPHANT rose", "un elephant"]
    for text in [*elephants, "éléphants", "éléphanteau", "elep"]:
        history.record(f"[1.2.3]-alice: {text}\n".encode())
    expected = [f"[1.2.3]-alice: {text}\n".encode() for text in elephants]
    assert found(history, ["elephant"], 20) == expected


def test_search_wants_every_word() -> None:
    history, _ = memory()
    for text in ["un chat gris", "un chat", "gris et chat", "chatte grise"]:
        history.record(f"[1.2.3]-alice: {text}\n".encode())
    assert found(history, ["chat", "gris"], 20) == [
        b"[1.2.3]-alice: un chat gris\n",
        b"[1.2.3]-alice: gris et chat\n",
    ]


def test_search_gives_the_most_recent_oldest_first() -> None:
    history, _ = memory()
    for i in range(30):
        history.record(b"[1.2.3]-alice: ligne %d\n" % i)
    assert found(history, ["ligne"], 20) == [
        b"[1.2.3]-alice: ligne %d\n" % i for i in range(10, 30)
    ]


def test_search_looks_at_the_nickname_not_the_stamp() -> None:
    history, _ = memory()
    history.record(b"[12.30.5]-alice: bonjour\n")
    assert found(history, ["12"], 20) == []
    assert found(history, ["alice"], 20) == [b"[12.30.5]-alice: bonjour\n"]


def test_search_reads_no_line_the_history_forgot() -> None:
    history, _ = memory(history_lines=2)
    for text in (b"chat un", b"chat deux", b"chat trois"):
        history.record(text + b"\n")
    assert found(history, ["chat"], 20) == [b"chat deux\n", b"chat trois\n"]


@pytest.mark.parametrize(
    ("text", "words", "holds"),
    [
        ("Straße", ["strasse"], True),  # casefold: ß is ss
        ("la ﬁn", ["fin"], True),  # NFKD: the ligature is f, i
        ("øelephant", ["elephant"], False),  # ø is a letter: one word
        ("élé-phant", ["elephant"], False),
        ("l'ÉLÉPHANT_rose", ["rose", "elephant"], True),
        ("ǅemal", ["dzemal"], True),
        ("日本語 chat", ["日本語", "chat"], True),
        ("日本 chat", ["日本語", "chat"], False),
        ("\udcff\udcfe chat", ["chat"], True),  # bytes that are not UTF-8
    ],
)
def test_search_folds_as_search_words_does(
    text: str, words: list[str], holds: bool
) -> None:
    """The first look at a line never passes over a match: every case
    gives what search_words says."""
    history, _ = memory()
    line = b"[1.2.3]-alice: " + text.encode("utf-8", "surrogateescape") + b"\n"
    history.record(line)
    assert found(history, words, 1) == ([line] if holds else [])


@given(
    st.lists(st.text(alphabet="aeEéÉèœŒßﬁøØ _'-.lLİı\u0301", max_size=12), max_size=8),
    st.lists(
        st.text(alphabet="aeéßﬁøl", min_size=1, max_size=3), min_size=1, max_size=3
    ),
)
def test_search_finds_what_search_words_finds(
    texts: list[str], queries: list[str]
) -> None:
    """Whatever the lines and the words, the lines found are those whose
    search_words hold every word, oldest first."""
    history, _ = memory()
    lines = [f"[1.2.3]-a: {text}\n".encode() for text in texts]
    for line in lines:
        history.record(line)
    words = [word for query in queries for word in search_words(query)]
    if not words:
        return
    expected = [
        line
        for line in lines
        if set(words) <= set(search_words(line.decode()[len("[1.2.3]-") :]))
    ]
    assert found(history, words, 100) == expected


def test_each_line_kept_has_a_larger_number_and_when_it_was_kept() -> None:
    history, clock = memory()
    history.record(b"un\n")
    clock.advance(5)
    history.record(b"deux\n")
    result: list[list[Kept]] = []
    history.last(2).addCallback(result.append)
    first, second = result[0]
    assert first.number < second.number
    assert (first.when, second.when) == (0, 5)
    assert history.limit == 100


# /history over the real factory


def test_history_sends_the_public_lines_exactly_as_they_were_sent() -> None:
    """Arrivals, lines and departures, with their stamps, between the markers."""
    chat = Chat()
    alice = chat.user("alice")
    first = chat.stamp() + b"-Connexion de alice\n"  # made, if heard by nobody
    bob = chat.user("bob")
    joined = chat.stamp() + b"-Connexion de bob\n"
    bob.send(b"bonjour\n")
    said = chat.stamp() + b"-bob: bonjour\n"
    chat.advance(5)
    carol = chat.user("carol")
    carol.send(b"/quit\n")
    left = chat.stamp() + "-Déconnection de carol\n".encode()
    arrived = chat.stamp() + b"-Connexion de carol\n"
    alice.take()
    alice.send(b"/history\n")
    assert alice.take() == (
        b"--- historique (5 lignes) ---\n"
        + first
        + joined
        + said
        + arrived
        + left
        + END
    )


def test_private_lines_are_never_in_the_history() -> None:
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"msg bob un secret\n")
    bob.take()
    bob.send(b"/history\n")
    assert b"secret" not in bob.take()


def test_history_n_sends_the_last_n_lines() -> None:
    chat = Chat(flood_rate=0)
    alice = chat.user("alice")
    for i in range(30):
        alice.send(b"ligne %d\n" % i)
    alice.take()
    alice.send(b"/history 2\n")
    stamp = chat.stamp()
    assert alice.take() == (
        b"--- historique (2 lignes) ---\n"
        + stamp
        + b"-alice: ligne 28\n"
        + stamp
        + b"-alice: ligne 29\n"
        + END
    )


def test_history_without_n_sends_twenty_lines() -> None:
    chat = Chat(flood_rate=0)
    alice = chat.user("alice")
    for i in range(30):
        alice.send(b"ligne %d\n" % i)
    alice.take()
    alice.send(b"/history\n")
    lines = alice.lines()
    assert lines[0] == b"--- historique (20 lignes) ---\n"
    assert lines[1].endswith(b"-alice: ligne 10\n")
    assert len(lines) == 22


def test_history_n_gives_at_most_history_lines() -> None:
    chat = Chat(flood_rate=0, history_lines=5)
    alice = chat.user("alice")
    for i in range(10):
        alice.send(b"ligne %d\n" % i)
    alice.take()
    alice.send(b"/history 1000\n")
    lines = alice.lines()
    assert lines[0] == b"--- historique (5 lignes) ---\n"
    assert lines[1].endswith(b"-alice: ligne 5\n")


def test_history_of_long_lines_sends_the_newest_in_half_max_output() -> None:
    """500 lines of 4 KiB are 2 MiB: in one write, more than max_output
    (1 MiB) waits for a reader on a slow link, which Output cuts as one
    that stopped reading (seen over loopback at 256 KB/s). The answer
    holds the newest lines that fit in half of max_output."""
    chat = Chat(flood_rate=0, history_lines=500, history_bytes=4 << 20)
    alice, bob = chat.user("alice"), chat.user("bob")
    for i in range(500):
        alice.send(b"%03d " % i + b"x" * 3990 + b"\n")
    alice.take()
    bob.take()
    bob.send(b"/history 500\n")
    answer = bob.take()
    lines = answer.splitlines(keepends=True)
    assert len(answer) <= chat.factory.config.max_output // 2 + 100
    assert lines[0] == b"--- historique (%d lignes) ---\n" % (len(lines) - 2)
    assert len(lines) - 2 == (1 << 19) // len(lines[1])  # as many as fit
    assert lines[-2].endswith(b"-alice: 499 " + b"x" * 3990 + b"\n")
    assert lines[-1] == END


def test_an_empty_history_still_has_both_markers() -> None:
    chat = Chat(join_notice_limit=0)  # no arrival line
    alice = chat.user("alice")
    alice.send(b"/history 1\n")
    assert alice.take() == b"--- historique (0 ligne) ---\n" + END


@pytest.mark.parametrize("argument", [b"0", b"-3", b"abc", b"2.5", b"\xd9\xa3", b"3 4"])
def test_a_bad_n_gets_a_clear_error(argument: bytes) -> None:
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"/history " + argument + b"\n")
    assert alice.take() == (
        "Erreur : tapez /history ou /history N, N un nombre de 1 à 100\n".encode()
    )
    assert bob.take() == b""


def test_history_says_so_when_the_server_keeps_none() -> None:
    chat = Chat(history_lines=0)
    alice = chat.user("alice")
    alice.send(b"/history\n")
    assert alice.take() == b"Erreur : ce serveur ne garde pas d'historique\n"


def test_history_is_for_registered_users_only() -> None:
    """Before registering, /history is a line like any other: the welcome."""
    chat = Chat()
    chat.user("alice").send(b"hello\n")
    newcomer = chat.connect()
    newcomer.take()
    newcomer.send(b"/history\n")
    assert newcomer.take() == wire.WELCOME


def test_registering_sends_nothing_of_the_history() -> None:
    """TCP and Ruby users see exactly today's bytes unless they ask."""
    chat = Chat()
    chat.user("alice").send(b"hello\n")
    bob = chat.connect()
    bob.take()
    bob.send(b"/pseudo bob\n")
    assert bob.take() == (b"Bienvenue bob\n" + wire.user_list(["alice", "bob"], 2))


def test_history_comes_after_the_public_lines_not_yet_given() -> None:
    """A line made in the same turn reaches the asker before the history
    (which holds it too): the order is the order the server made them."""
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.send(b"vite\n")
    alice.send(b"/history 1\n")
    said = chat.stamp() + b"-bob: vite\n"
    assert alice.take() == (said + b"--- historique (1 ligne) ---\n" + said + END)


def test_a_history_that_cannot_be_read_gets_a_clear_line() -> None:
    """A cluster's history in Redis may be unreachable: one French line."""

    class Unreachable(MemoryHistory):
        def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
            return fail(ClusterUnreachable("no connection to Redis"))

    chat = Chat()
    chat.factory.room.history = Unreachable(chat.factory.config, chat.clock)
    alice = chat.user("alice")
    alice.send(b"/history\n")
    assert (
        alice.take()
        == (
            "Erreur : historique impossible à lire pour le moment, réessayez plus "
            "tard\n"
        ).encode()
    )


def test_a_history_answer_that_comes_after_the_user_left_is_dropped() -> None:
    answer: Deferred[list[Kept]] = Deferred()

    class Slow(MemoryHistory):
        def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
            return answer

    chat = Chat()
    chat.factory.room.history = Slow(chat.factory.config, chat.clock)
    alice = chat.user("alice")
    alice.send(b"/history\n")
    alice.proto.transport.loseConnection()
    answer.callback([Kept(1, chat.clock.seconds(), b"late\n")])
    assert b"late" not in alice.take()


def test_the_lines_after_a_history_read_wait_for_its_answer() -> None:
    """A store's read runs in a thread: a pipe that sends /history then
    /quit (the client at the end of its input) must get the answer before
    Deconnexion, and a public line after it goes after the answer too."""
    answers: list[Deferred[list[Kept]]] = []

    class Slow(MemoryHistory):
        def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
            answers.append(Deferred())
            return answers[-1]

        def search(
            self, words: Sequence[str], count: int, room: str | None = None
        ) -> Deferred[list[Kept]]:
            answers.append(Deferred())
            return answers[-1]

    chat = Chat()
    chat.factory.room.history = Slow(chat.factory.config, chat.clock)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"/history\napres\n/search chat\n/quit\n")
    chat.advance(0)
    assert alice.take() == b"" and bob.take() == b""  # all wait
    answers[0].callback([Kept(1, chat.clock.seconds(), b"[1.2.3]-zoe: avant\n")])
    chat.advance(0)
    assert alice.take() == (b"--- historique (1 ligne) ---\n[1.2.3]-zoe: avant\n" + END)
    assert bob.take().endswith(b"-alice: apres\n")
    answers[1].callback([])
    chat.advance(0)
    assert alice.take() == "Aucune ligne ne contient « chat »\n".encode() + wire.BYE
    assert not alice.connected


def test_a_departure_announced_here_only_is_not_kept() -> None:
    """In a cluster, HERE is the departure of a user whose nickname another
    node's user holds now: the chat's history must not say that one left."""
    from chatproto.registry import Reach

    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    bob.session.say_goodbye(wire.BYE, reach=Reach.HERE)
    assert "Déconnection de bob".encode() in alice.take()
    alice.send(b"/history\n")
    assert "Déconnection".encode() not in alice.take()


def test_lines_delivered_from_another_node_are_not_kept_again() -> None:
    """Their origin node kept them: a second copy would be a duplicate."""
    chat = Chat(join_notice_limit=0)
    alice = chat.user("alice")
    chat.factory.deliver(b"[1.2.3]-zoe: from elsewhere\n")
    alice.take()
    alice.send(b"/history\n")
    assert alice.take() == b"--- historique (0 ligne) ---\n" + END


def test_help_lists_history() -> None:
    chat = Chat()
    alice = chat.user("alice")
    alice.send(b"/help\n")
    assert b"/history [N]" in alice.take()


# /history N: from 1 to the history's limit


class Limited(MemoryHistory):
    """A history whose limit is not --history-lines (the store's: 500)."""

    def __init__(self, config: ServerConfig, clock: Clock, limit: int) -> None:
        super().__init__(config, clock)
        self.limit = limit
        self.asked: list[int] = []

    def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
        self.asked.append(count)
        return super().last(count, room)


def test_history_n_goes_up_to_the_historys_limit() -> None:
    chat = Chat(flood_rate=0)
    history = Limited(chat.factory.config, chat.clock, 500)
    chat.factory.room.history = history
    alice = chat.user("alice")
    for argument in (b"500", b"501", b"100000000000000000000", b""):
        alice.send(b"/history " + argument + b"\n")
    assert history.asked == [500, 500, 500, 20]
    alice.take()
    alice.send(b"/history 0\n")
    assert alice.take() == (
        "Erreur : tapez /history ou /history N, N un nombre de 1 à 500\n".encode()
    )


def test_history_without_n_asks_at_most_the_limit() -> None:
    chat = Chat()
    history = Limited(chat.factory.config, chat.clock, 7)
    chat.factory.room.history = history
    alice = chat.user("alice")
    alice.send(b"/history\n/history 8\n")
    assert history.asked == [7, 7]


def test_a_history_with_no_limit_keeps_none() -> None:
    chat = Chat()
    chat.factory.room.history = Limited(chat.factory.config, chat.clock, 0)
    alice = chat.user("alice")
    alice.send(b"/history\n")
    assert alice.take() == b"Erreur : ce serveur ne garde pas d'historique\n"


# The options


def test_the_history_options_reach_the_config() -> None:
    from chatproto.tap import Options

    options = Options()
    options.parseOptions(
        ["--history-lines=500", "--history-bytes=65536", "--history-age=60"]
    )
    config = options["config"]
    assert (config.history_lines, config.history_bytes, config.history_age) == (
        500,
        65536,
        60.0,
    )


def test_the_history_defaults_are_100_lines_256_kib_and_12_hours() -> None:
    config = ServerConfig()
    assert (config.history_lines, config.history_bytes, config.history_age) == (
        100,
        256 * 1024,
        43200.0,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--history-lines=-1"], "--history-lines takes a whole number of at least 0."),
        (["--history-lines=lots"], "--history-lines takes a whole number, not 'lots'."),
        (["--history-age=0"], "--history-age takes a number of at least 1."),
        (
            ["--history-bytes=10"],
            "--history-bytes takes a whole number of at least 1024.",
        ),
    ],
)
def test_bad_history_values_are_explained(argv: list[str], message: str) -> None:
    from twisted.python.usage import UsageError

    from chatproto.tap import Options

    with pytest.raises(UsageError) as raised:
        Options().parseOptions(argv)
    assert str(raised.value) == message


def test_the_markers_are_no_line_a_client_acts_on() -> None:
    """Not a line the Ruby client exits on, nor the user list's rule, which
    our client takes for the start of a list block."""
    from chatproto.client.servers import RULE

    for marker in (wire.history_header(0), wire.history_header(20), END):
        assert marker.rstrip(b"\n") not in wire.CLIENT_EXITS
        assert not RULE.fullmatch(marker.decode().rstrip("\n"))


def test_the_factory_keeps_the_history_it_is_given_even_empty() -> None:
    """An empty MemoryHistory has a length of 0: it is still the one used."""
    from chatproto.server import ChatFactory

    given, clock = memory()
    assert ChatFactory(ServerConfig(), clock, history=given).history is given
