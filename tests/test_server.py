"""The server's protocol, as docs/protocol.md has it, with exact bytes.

Each test drives the real factory over in-memory transports and a fake clock.
"""

from __future__ import annotations

import time

import pytest
from twisted.internet.defer import Deferred, fail

from chatproto import wire
from chatproto.cluster_messages import Kick
from chatproto.registry import ClusterUnreachable, MemoryRegistry
from chatproto.testing import Chat, Client, RecordingTransport

WELCOME = b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
PROMPT = b"Entrez votre pseudo: \n"
RULE = b"----------------------\n"


def block(*nicks: str) -> bytes:
    names = b"".join(b"=>" + n.encode() + b"\n" for n in nicks)
    return RULE + b"Utilisateurs en ligne:\n" + names + RULE


# §1 and §2: framing and registration


def test_connect_sends_the_welcome_line(chat: Chat) -> None:
    """A new connection is greeted with the Ruby server's exact line."""
    assert chat.connect().take() == WELCOME


def test_any_line_before_pseudo_repeats_the_welcome(chat: Chat) -> None:
    """Before /pseudo, any line gets the welcome again, as on the Ruby server."""
    alice = chat.connect()
    alice.take()
    alice.send(b"hello\n")
    assert alice.take() == WELCOME


def test_pseudo_then_nickname_registers_and_sends_the_list(chat: Chat) -> None:
    """/pseudo prompts (with its trailing space), the nickname registers."""
    alice = chat.connect()
    alice.take()
    alice.send(b"/pseudo\n")
    assert alice.take() == PROMPT
    alice.send(b"alice\n")
    assert alice.take() == b"Bienvenue alice\n" + block("alice")


def test_crlf_lines_work_like_lf_lines(chat: Chat) -> None:
    """A telnet or nc -C client, ending lines with CRLF, registers the same."""
    chat.user("alice")
    bob = chat.connect()
    bob.take()
    bob.send(b"/pseudo\r\n")
    assert bob.take() == PROMPT
    bob.send(b"bob\r\n")
    assert bob.take() == b"Bienvenue bob\n" + block("alice", "bob")


def test_a_line_split_across_reads_is_one_line(chat: Chat) -> None:
    """TCP may cut a line anywhere: the server reassembles it."""
    alice = chat.connect()
    alice.take()
    for byte in b"/pseudo\r\nalice\r\n":
        alice.send(bytes([byte]))
    assert alice.take() == PROMPT + b"Bienvenue alice\n" + block("alice")


def test_pseudo_with_the_nickname_on_one_line(chat: Chat) -> None:
    """/pseudo NICK is a shortcut for the two steps."""
    alice = chat.connect()
    alice.take()
    alice.send(b"/pseudo alice\n")
    assert alice.take() == b"Bienvenue alice\n" + block("alice")


@pytest.mark.parametrize(
    "nick",
    [b"d", b"abcdefghijklm", b"two words", b"bang!", b"\xc3\xa9lise", b"a.b", b""],
)
def test_invalid_nickname_is_refused_and_the_server_waits(
    chat: Chat, nick: bytes
) -> None:
    """An invalid nickname gets the exact refusal; the next line is a new try."""
    dave = chat.connect()
    dave.take()
    dave.send(b"/pseudo\n" + nick + b"\n")
    assert dave.take() == PROMPT + b"Rentrez un pseudo correct\n"
    assert dave.connected
    dave.send(b"dave\n")
    assert dave.take() == b"Bienvenue dave\n" + block("dave")


@pytest.mark.parametrize("nick", ["ab", "abcdefghijkl", "A_b-9", "__", "--"])
def test_valid_nicknames(chat: Chat, nick: str) -> None:
    """2 to 12 of letters, digits, _ and - are accepted."""
    chat.user(nick)


def test_taken_nickname_is_refused_case_insensitively(chat: Chat) -> None:
    """Alice blocks alice and ALICE; the connection may try another one."""
    chat.user("Alice")
    carol = chat.connect()
    carol.take()
    carol.send(b"/pseudo\nalice\n")
    assert carol.take() == PROMPT + b"Attention ce pseudo existe deja\n"
    carol.send(b"ALICE\n")
    assert carol.take() == b"Attention ce pseudo existe deja\n"
    carol.send(b"carol\n")
    assert carol.take() == b"Bienvenue carol\n" + block("Alice", "carol")


@pytest.mark.parametrize(
    ("held", "tried"),
    [
        ("alice", "aIice"),  # capital i for small L
        ("alice", "a1ice"),
        ("alice", "ALlCE"),
        ("Ian", "lan"),
        ("bob", "b0b"),
        ("B0B", "bob"),
        ("x10", "XLO"),
    ],
)
def test_a_look_alike_of_a_nickname_is_taken(chat: Chat, held: str, tried: str) -> None:
    """I, l and 1 look alike, and 0 and O: nobody passes for another by
    one of them, as by letter case; once the holder leaves, it is free."""
    first = chat.user(held)
    carol = chat.connect()
    carol.take()
    carol.send(f"/pseudo {tried}\n".encode())
    assert carol.take() == b"Attention ce pseudo existe deja\n"
    first.send(b"/quit\n")
    carol.send(f"/pseudo {tried}\n".encode())
    assert carol.take() == f"Bienvenue {tried}\n".encode() + block(tried)


def test_a_refused_look_alike_frees_nothing(chat: Chat) -> None:
    """A look-alike refused and gone leaves the nickname it looked like
    with its holder: the next look-alike is refused too."""
    chat.user("alice")
    for _ in range(2):
        carol = chat.connect()
        carol.take()
        carol.send(b"/pseudo aIice\n")
        assert carol.take() == b"Attention ce pseudo existe deja\n"
        carol.transport.loseConnection()


def test_releasing_a_look_alike_keeps_the_nickname_held() -> None:
    """The registry gives back a nickname only to its holder's name, in
    any case: releasing a look-alike that was never claimed frees nothing."""
    registry = MemoryRegistry()
    registry.claim("alice")
    registry.release("aIice")
    failures: list[object] = []
    registry.claim("a1ice").addErrback(failures.append)
    registry.release("ALICE")  # alice's own, in another case: freed
    registry.claim("a1ice").addErrback(failures.append)
    names: list[tuple[list[str], int]] = []
    registry.names().addCallback(names.append)
    assert names == [(["a1ice"], 1)] and len(failures) == 1


def test_pseudo_nick_answers_the_prompt_after_a_refusal(chat: Chat) -> None:
    """At the nickname prompt, C{/pseudo NICK} is the shortcut too: after a
    taken nickname, C{/pseudo dave} registers dave (the Ruby client exits
    on the "incorrect" line this used to get)."""
    chat.user("carol")
    dave = chat.connect()
    dave.take()
    dave.send(b"/pseudo carol\n")
    assert dave.take() == b"Attention ce pseudo existe deja\n"
    dave.send(b"/pseudo dave\n")
    assert dave.take() == b"Bienvenue dave\n" + block("carol", "dave")
    eve = chat.connect()
    eve.take()
    eve.send(b"/pseudo\n/pseudo eve\n")
    assert eve.take() == PROMPT + b"Bienvenue eve\n" + block("carol", "dave", "eve")


def test_nickname_keeps_its_case(chat: Chat) -> None:
    """The list and messages show the nickname as it was registered."""
    alice = chat.user("AlIcE")
    bob = chat.user("bob")
    alice.send(b"hi\n")
    assert bob.take() == chat.stamp() + b"-AlIcE: hi\n"


def test_a_freed_nickname_can_be_taken_again(chat: Chat) -> None:
    """After its owner leaves, a nickname is free, and goes to the end."""
    alice = chat.user("alice")
    chat.user("bob")
    alice.send(b"/quit\n")
    again = chat.user("Alice")
    again.send(b"/list\n")
    assert again.take() == block("bob", "Alice")


def test_quit_before_registering_closes_quietly(chat: Chat) -> None:
    """/quit works before registration too, and nobody is told."""
    bob = chat.user("bob")
    stranger = chat.connect()
    stranger.take()
    stranger.send(b"/quit\n")
    assert stranger.take() == b"Deconnexion\n"
    assert not stranger.connected
    assert bob.take() == b""


def test_unregistered_connection_is_closed_after_the_timeout() -> None:
    """A connection that does not register in time is told so and closed."""
    chat = Chat(registration_timeout=60)
    idle = chat.connect()
    idle.take()
    chat.advance(59.9)
    assert idle.connected
    chat.advance(0.2)
    assert (
        idle.take()
        == b"D\xc3\xa9lai d'enregistrement d\xc3\xa9pass\xc3\xa9, au revoir\n"
    )
    assert not idle.connected
    assert chat.clock.getDelayedCalls() == []


def test_registered_connection_outlives_the_registration_timeout() -> None:
    """Registering cancels the registration timer."""
    chat = Chat(registration_timeout=60, ping_interval=0)
    alice = chat.user("alice")
    chat.advance(120)
    assert alice.connected
    assert chat.clock.getDelayedCalls() == []


# §3: the user list


def test_list_shows_every_user_in_registration_order(chat: Chat) -> None:
    """/list answers the asker alone with the exact block."""
    alice = chat.user("alice")
    bob = chat.user("bob")
    chat.user("carol")
    alice.take()
    bob.take()
    alice.send(b"/list\n")
    assert alice.take() == block("alice", "bob", "carol")
    assert bob.take() == b""


def test_registration_list_is_bounded_and_says_how_many_more() -> None:
    """The block sent on registration shows list_limit names; /list shows all."""
    chat = Chat(list_limit=2, join_notice_limit=0)
    chat.user("alice")
    chat.user("bob")
    chat.user("carol")
    dave = chat.connect()
    dave.take()
    dave.send(b"/pseudo dave\n")
    more = b"... et 2 autres (tapez /list pour tous les voir)\n"
    assert dave.take() == (
        b"Bienvenue dave\n"
        + RULE
        + b"Utilisateurs en ligne:\n=>alice\n=>bob\n"
        + more
        + RULE
    )
    dave.send(b"/list\n")
    assert dave.take() == block("alice", "bob", "carol", "dave")


def test_registration_list_follows_who_is_first() -> None:
    """The bounded block is the first names of the moment: a newcomer among
    them, or one of them gone, changes it for the next newcomer (the
    registry keeps its first names between registrations)."""
    chat = Chat(list_limit=2, join_notice_limit=0)
    clients = {}

    def names_for(nick: str) -> bytes:
        clients[nick] = client = chat.connect()
        client.take()
        client.send(b"/pseudo " + nick.encode() + b"\n")
        return client.take().partition(b"Utilisateurs en ligne:\n")[2]

    def more(count: int) -> bytes:
        return f"... et {count} autres (tapez /list pour tous les voir)\n".encode()

    assert names_for("alice") == b"=>alice\n" + RULE
    assert names_for("bob") == b"=>alice\n=>bob\n" + RULE
    assert names_for("carol") == b"=>alice\n=>bob\n" + more(1) + RULE
    clients["carol"].send(b"/quit\n")  # not among the first two
    assert names_for("dave") == b"=>alice\n=>bob\n" + more(1) + RULE
    clients["alice"].send(b"/quit\n")
    assert names_for("eve") == b"=>bob\n=>dave\n" + more(1) + RULE
    clients["bob"].send(b"/quit\n")
    clients["dave"].send(b"/quit\n")
    assert names_for("fred") == b"=>eve\n=>fred\n" + RULE


# §4: messages


def test_public_line_goes_to_the_others_not_the_sender(chat: Chat) -> None:
    """A public line reaches every other registered user, exactly."""
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    alice.take()
    bob.take()
    stranger = chat.connect()
    stranger.take()
    alice.send(b"salut tout le monde\n")
    expected = chat.stamp() + b"-alice: salut tout le monde\n"
    assert bob.take() == expected
    assert carol.take() == expected
    assert alice.take() == b""
    assert stranger.take() == b"", "unregistered connections get no chat"


def test_accents_pass_through_unchanged(chat: Chat) -> None:
    """UTF-8 text is relayed byte for byte."""
    alice, bob = chat.user("alice"), chat.user("bob")
    bob.send(b"\xc3\xa7a va, \xc3\xa9l\xc3\xa8ve ?\n")
    assert alice.take().endswith(b"-bob: \xc3\xa7a va, \xc3\xa9l\xc3\xa8ve ?\n")


def test_timestamp_is_local_time_without_zero_padding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[H.M.S] is hours, minutes and seconds with no leading zeros."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    chat = Chat(ping_interval=0)
    try:
        alice, bob = chat.user("alice"), chat.user("bob")
        now = chat.clock.seconds()
        chat.clock.advance((9 * 3600 + 5 * 60 + 3 - now) % 86400)
        alice.send(b"x\n")
        assert bob.take() == b"[9.5.3]-alice: x\n"
        chat.clock.advance(9 * 3600 + 41 * 60 + 24)
        alice.send(b"y\n")
        assert bob.take() == b"[18.46.27]-alice: y\n"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_join_is_announced_to_the_others(chat: Chat) -> None:
    """While the chat is small, the others are told who arrived."""
    alice = chat.user("alice")
    chat.user("bob")
    assert alice.take() == chat.stamp() + b"-Connexion de bob\n"


def test_joins_are_not_announced_beyond_the_threshold() -> None:
    """Past join_notice_limit users, arrivals are silent."""
    chat = Chat(join_notice_limit=2)
    alice = chat.user("alice")
    chat.user("bob")
    assert alice.take() == chat.stamp() + b"-Connexion de bob\n"
    chat.user("carol")
    assert alice.take() == b""


def test_private_message_reaches_its_target_alone(chat: Chat) -> None:
    """msg NICK TEXT: the target gets the text only, nobody else anything."""
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    for c in (alice, bob, carol):
        c.take()
    alice.send(b"msg bob un secret\n")
    assert bob.take() == chat.stamp() + "-message privé de alice: un secret\n".encode()
    assert alice.take() == b""
    assert carol.take() == b""


def test_private_target_is_case_insensitive(chat: Chat) -> None:
    """msg ALICE reaches alice."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.send(b"msg ALICE coucou\n")
    assert alice.take() == chat.stamp() + "-message privé de bob: coucou\n".encode()


def test_private_text_keeps_its_spaces(chat: Chat) -> None:
    """Only the command and the target are cut off the text."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"msg bob  deux  espaces\n")
    assert bob.take().endswith(b"alice:  deux  espaces\n")


def test_private_message_to_an_absent_user_is_an_error(chat: Chat) -> None:
    """An unknown target: one error line to the sender, nothing to anyone."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"msg nobody hi\n")
    assert alice.take() == "Erreur : nobody n'est pas connecté\n".encode()
    assert bob.take() == b""


@pytest.mark.parametrize("line", [b"msg bob\n", b"msg bob   \n", b"msg \n", b"msg  \n"])
def test_private_message_without_text_is_an_error(chat: Chat, line: bytes) -> None:
    """msg with no text answers the sender with one line, sends nothing."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(line)
    answer = alice.lines()
    assert len(answer) == 1 and answer[0].startswith(b"Erreur : ")
    assert bob.take() == b""


@pytest.mark.parametrize(
    ("line", "word"),
    [
        (b"msg bob:salut", "bob:salut"),
        (b"msg bob, salut", "bob,"),
        (b"msg #a hi", "#a"),
    ],
)
def test_private_message_to_what_cannot_be_a_nickname(
    chat: Chat, line: bytes, word: str
) -> None:
    """A target no nickname can be is named as such: C{msg bob:salut} was
    answered "message privé vide pour bob:salut", a message that was not."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(line + b"\n")
    expected = f"Erreur : {word} n'est pas un pseudo, tapez msg PSEUDO TEXTE\n"
    assert alice.take() == expected.encode()
    assert bob.take() == b""


@pytest.mark.parametrize("line", [b"msgs are fun", b"message pour tous", b"msg"])
def test_msg_is_a_command_only_as_a_first_word(chat: Chat, line: bytes) -> None:
    """msgs or message start public lines."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(line + b"\n")
    assert bob.take() == chat.stamp() + b"-alice: " + line + b"\n"


@pytest.mark.parametrize("line", [b"\n", b"   \n", b"\t \r\n"])
def test_blank_lines_are_not_broadcast(chat: Chat, line: bytes) -> None:
    """Empty or space-only lines reach nobody."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(line)
    assert bob.take() == b""
    assert alice.take() == b""


def test_unknown_command_is_an_error_not_a_message(chat: Chat) -> None:
    """A /word the server does not know answers the sender only."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"/dance now\n")
    assert (
        alice.take() == b"Erreur : commande inconnue /dance (tapez /help pour l'aide)\n"
    )
    assert bob.take() == b""


def test_help_lists_the_commands(chat: Chat) -> None:
    """/help names every command and is seen by the asker alone."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"/help\n")
    text = alice.take()
    for command in (b"/pseudo", b"/list", b"msg PSEUDO", b"/quit", b"/help"):
        assert command in text
    assert bob.take() == b""


def test_pseudo_after_registering_is_refused(chat: Chat) -> None:
    """One cannot change nickname, nor take another's, once registered."""
    alice = chat.user("alice")
    alice.send(b"/pseudo bob\n")
    assert (
        alice.take()
        == "Erreur : vous êtes déjà enregistré sous le pseudo alice\n".encode()
    )


def test_no_extra_line_equals_a_line_the_ruby_client_exits_on(chat: Chat) -> None:
    """Users cannot make the server send a bare Deconnexion to others."""
    alice, bob = chat.user("alice"), chat.user("bob")
    for text in (b"Deconnexion", b"Rentrez un pseudo correct"):
        alice.send(text + b"\n")
        alice.send(b"msg bob " + text + b"\n")
    for line in bob.take().splitlines():
        assert line not in wire.CLIENT_EXITS


def test_quit_says_goodbye_and_announces_the_departure_once(chat: Chat) -> None:
    """/quit: Deconnexion to the quitter, then close; the others told once."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.send(b"/quit\n")
    assert bob.take() == b"Deconnexion\n"
    assert not bob.connected
    assert alice.take() == chat.stamp() + "-Déconnection de bob\n".encode()
    bob.transport.loseConnection()
    bob.proto.connectionLost(None)
    assert alice.take() == b""
    assert chat.factory.sessions.keys() == {"alice"}


def test_lost_connection_announces_the_departure_once(chat: Chat) -> None:
    """A dropped connection is announced once."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.transport.loseConnection()
    assert alice.take() == chat.stamp() + "-Déconnection de bob\n".encode()
    bob.proto.connectionLost(None)
    assert alice.take() == b""


def test_unregistered_departures_are_not_announced(chat: Chat) -> None:
    """Somebody who never registered leaves silently."""
    alice = chat.user("alice")
    for steps in (b"", b"/pseudo\n", b"/pseudo\nx\n", b"/pseudo\nalice\n"):
        other = chat.connect()
        other.send(steps)
        other.transport.loseConnection()
    assert alice.take() == b""


def test_lines_after_quit_are_ignored(chat: Chat) -> None:
    """Whatever follows /quit in the same read is not acted on."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.send(b"/quit\nnot said\n")
    assert alice.take() == chat.stamp() + "-Déconnection de bob\n".encode()


# §5: liveness


def test_registered_clients_are_pinged_every_interval() -> None:
    """ping, every interval, to registered clients only."""
    chat = Chat(ping_interval=10, registration_timeout=0)
    alice = chat.user("alice")
    stranger = chat.connect()
    stranger.take()
    alice.take()
    chat.advance(9)
    assert alice.take() == b""
    chat.advance(1)
    assert alice.take() == b"ping\n"
    alice.send(b"pong\n")
    chat.advance(10)
    assert alice.take() == b"ping\n"
    assert stranger.take() == b""


def test_pong_is_never_broadcast(chat: Chat) -> None:
    """pong resets the counter and reaches nobody, whatever the line ending."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"pong\npong\r\n")
    assert bob.take() == b""
    assert alice.take() == b""


def test_silent_client_is_dropped_after_missed_pings() -> None:
    """After 3 pings in a row without a pong, the next tick tells the client
    why and closes it, and its departure is announced once."""
    chat = Chat(ping_interval=10, max_missed_pings=3)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    for _ in range(3):
        chat.advance(10)
        alice.send(b"pong\n")
    assert bob.take() == b"ping\n" * 3
    assert bob.connected
    chat.advance(10)
    assert not bob.connected
    assert bob.take() == wire.notice(wire.PING_TIMEOUT)
    assert (
        alice.take() == b"ping\n" * 4 + chat.stamp() + "-Déconnection de bob\n".encode()
    )
    for _ in range(3):
        alice.send(b"pong\n")
        chat.advance(10)
    assert alice.take() == b"ping\n" * 3


def test_a_client_cut_for_missed_pings_is_told_why_in_one_line() -> None:
    """An nc user who does not answer ping learns why it is cut, in one
    French line that is none of the Ruby client's exit lines, then is
    closed (not aborted: the line is sent first)."""
    chat = Chat(ping_interval=10, max_missed_pings=1)
    alice = chat.user("alice")
    chat.advance(10)
    assert alice.take() == b"ping\n"
    chat.advance(10)
    line = wire.notice(wire.PING_TIMEOUT)
    assert alice.take() == line
    assert line.count(b"\n") == 1
    assert line.rstrip(b"\n") not in wire.CLIENT_EXITS
    assert not alice.connected
    assert not alice.transport.aborted


def test_answering_pings_keeps_a_client_forever() -> None:
    """A client that answers stays connected through many pings."""
    chat = Chat(ping_interval=10, max_missed_pings=2)
    alice = chat.user("alice")
    for _ in range(20):
        chat.advance(10)
        assert alice.take() == b"ping\n"
        alice.send(b"pong\n")
    assert alice.connected


def test_pong_in_a_read_of_its_own_ends_the_line_that_came_before() -> None:
    """A read of exactly "pong\\n" is the answer to a ping only when no line
    was under way: after the start of a line it ends that line, and after
    the start of an over-long one it ends what is skipped."""
    chat = Chat(ping_interval=10, max_line=16)
    alice, bob = chat.user("alice"), chat.user("bob")
    chat.advance(10)
    alice.take()
    bob.take()
    alice.send(b"salut ")
    alice.send(b"pong\n")
    assert bob.take() == chat.stamp() + b"-alice: salut pong\n"
    assert alice.session.missed_pings == 1, "that was no answer"
    alice.send(b"x" * 40)  # over max_line: skipped to its end
    alice.send(b"pong\n")
    assert alice.take() == wire.notice(wire.TOO_LONG.format(16))
    assert alice.session.missed_pings == 1
    alice.send(b"pong\n")
    assert alice.session.missed_pings == 0
    assert bob.take() == b""


def test_no_timer_runs_when_nobody_is_connected() -> None:
    """An empty chat has no delayed call: it costs no CPU."""
    chat = Chat()
    alice = chat.user("alice")
    bob = chat.user("bob")
    assert len(chat.clock.getDelayedCalls()) == 1, "one ping loop for all"
    alice.send(b"/quit\n")
    bob.transport.loseConnection()
    chat.advance(0)  # the end of the turn: the departures logged
    assert chat.clock.getDelayedCalls() == []


def test_no_timer_runs_once_the_last_member_is_kicked() -> None:
    """A kick takes its target out of the room without a departure of its
    own (moderation announces it): the ping loop stops all the same."""
    chat = Chat()
    bob = chat.user("bob")
    chat.factory.heard_kick(Kick("bob", 0, "alice", "198.51.100.4", "spam"))
    assert not bob.connected
    chat.advance(0)  # the end of the turn: the departure logged
    assert chat.clock.getDelayedCalls() == []


# Hostile input


@pytest.mark.parametrize(
    "payload",
    [
        b"\x1b[2J\x1b[H",  # clear the screen
        b"\x1b]0;owned\x07",  # retitle the terminal
        b"\xc2\x9b31m",  # 8-bit CSI
        b"a\rfake line",  # carriage return
        b"a\x08\x08\x08b",  # backspaces
        b"\x7f\x00\x05",
        "\u202eevil".encode(),  # right-to-left override
    ],
)
def test_control_characters_never_reach_another_user(
    chat: Chat, payload: bytes
) -> None:
    """C0 (but TAB), DEL, C1 and bidi overrides become U+FFFD, in every kind of line."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"x" + payload + b"\n")
    alice.send(b"msg bob y" + payload + b"\n")
    received = bob.take().decode()
    for char in received.rstrip("\n").replace("\n", ""):
        assert char == "\t" or char.isprintable(), repr(received)
    assert received.count("\n") == 2
    assert "\ufffd" in received


def test_tabs_are_kept(chat: Chat) -> None:
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"a\tb\n")
    assert bob.take().endswith(b"alice: a\tb\n")


def test_invalid_utf8_is_replaced_not_relayed(chat: Chat) -> None:
    """Bytes that are not UTF-8 reach others as U+FFFD, and nothing breaks."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"caf\xe9 \xff\xfe \xc3\n")
    assert (
        bob.take() == chat.stamp() + "-alice: caf\ufffd \ufffd\ufffd \ufffd\n".encode()
    )
    alice.send(b"/pseudo\xff\n")
    alice.send(b"encore\n")
    assert bob.take().endswith(b"alice: encore\n")


def test_invalid_utf8_nickname_is_refused(chat: Chat) -> None:
    dave = chat.connect()
    dave.take()
    dave.send(b"/pseudo\nd\xffve\n")
    assert dave.take() == PROMPT + b"Rentrez un pseudo correct\n"


def test_too_long_line_is_refused_and_the_connection_goes_on() -> None:
    """Over max_line bytes: one error line, nothing relayed; later lines work."""
    chat = Chat(max_line=100)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"x" * 101 + b"\nafter\n")
    assert (
        alice.take()
        == b"Erreur : ligne trop longue (plus de 100 octets), ignor\xc3\xa9e\n"
    )
    assert bob.take() == chat.stamp() + b"-alice: after\n"
    alice.send(b"y" * 100 + b"\r\n")
    assert bob.take() == chat.stamp() + b"-alice: " + b"y" * 100 + b"\n"


def test_endless_line_is_discarded_with_bounded_memory() -> None:
    """Kilobytes with no newline: the buffer stays small, the error is said
    once, and the line after the next newline is served, in its turn: each
    max_line bytes skipped cost a flood token."""
    chat = Chat(max_line=4096)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    chunk = b"A" * 4096
    for _ in range(10):  # 40 KiB, ten times max_line
        alice.send(chunk)
        assert alice.proto.buffered <= 4097 + len(chunk)
    assert alice.lines() == [
        b"Erreur : ligne trop longue (plus de 4096 octets), ignor\xc3\xa9e\n"
    ]
    alice.send(b"AAAA\nstill here\n")
    chat.advance(3)  # the tokens the line spent come back
    assert bob.take() == chat.stamp() + b"-alice: still here\n"
    assert alice.connected
    assert alice.take() == b""


def test_endless_lines_count_against_flood_control() -> None:
    """Megabytes of over-long lines are a flood like any other: the sender
    is told and cut, with its memory bounded all along, and announced once."""
    chat = Chat(max_line=4096)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    bob.take()
    chunk = b"A" * 65536
    for _ in range(64):  # 4 MiB
        alice.send(chunk)
        assert alice.proto.buffered <= 4097 + len(chunk)
        assert alice.session.waiting[0] <= 2 * 101
    assert alice.lines() == [
        b"Erreur : ligne trop longue (plus de 4096 octets), ignor\xc3\xa9e\n",
        "Trop de messages trop vite : vous êtes déconnecté\n".encode(),
    ]
    assert not alice.connected
    assert bob.take() == chat.stamp() + "-Déconnection de alice\n".encode()
    terminated = chat.user("carol", host="192.0.2.2")
    for _ in range(110):  # over-long lines that do end count as lines
        terminated.send(b"B" * 5000 + b"\n")
    assert not terminated.connected


def test_broadcast_encodes_the_line_once() -> None:
    """Every receiver is handed the very same bytes object."""
    chat = Chat(join_notice_limit=0, max_per_ip=0)
    alice = chat.user("alice")
    others = [chat.user(f"user{i}") for i in range(20)]
    for other in others:
        other.transport.writes.clear()
    alice.send(b"hello\n")
    chat.advance(0)
    written = [other.transport.writes for other in others]
    assert all(len(w) == 1 for w in written)
    assert len({id(w[0]) for w in written}) == 1


def test_lines_of_one_turn_go_out_in_one_write_per_user() -> None:
    """Public lines made in one reactor turn reach each user in one write,
    in order, without the sender's own; a private line made after them in the
    same turn arrives after them."""
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    chat.advance(0)
    for c in (alice, bob, carol):
        c.take()
        c.transport.writes.clear()
    alice.send(b"one\ntwo\n")
    bob.send(b"three\n")
    alice.send(b"msg carol four\n")
    chat.advance(0)
    stamp = chat.stamp()
    assert carol.transport.writes == [
        stamp + b"-alice: one\n" + stamp + b"-alice: two\n" + stamp + b"-bob: three\n",
        stamp + "-message privé de alice: four\n".encode(),
    ]
    assert bob.transport.writes == [stamp + b"-alice: one\n" + stamp + b"-alice: two\n"]
    assert alice.transport.writes == [stamp + b"-bob: three\n"]


def test_registration_cost_does_not_grow_with_the_chat() -> None:
    """Registering the 10,000th user writes no more than registering the
    10th: no notice to everyone, a bounded list to the newcomer."""
    chat = Chat(join_notice_limit=100, list_limit=100, max_per_ip=0, max_per_network=0)
    transports: list[RecordingTransport] = []

    def register(nick: str) -> None:
        client = chat.connect()
        transports.append(client.transport)
        client.send(b"/pseudo " + nick.encode() + b"\n")

    def cost_of_registering(nick: str) -> tuple[int, int]:
        """(writes to anybody, bytes to the newcomer)"""
        chat.advance(0)
        before = sum(len(t.writes) for t in transports)
        register(nick)
        chat.advance(0)
        after = sum(len(t.writes) for t in transports)
        return after - before, len(transports[-1].value())

    for n in range(1, 10):
        register(f"u{n}")
    writes_10, _bytes_10 = cost_of_registering("u10")
    for n in range(11, 10_000):
        register(f"u{n}")
    writes_10k, bytes_10k = cost_of_registering("u10000")
    assert len(chat.factory.sessions) == 10_000
    assert writes_10k <= writes_10
    assert bytes_10k < 100 * len(b"=>u1234\n") + 500


# Flood control


def test_a_burst_passes_then_lines_wait_their_turn_in_order() -> None:
    """5 lines go at once; the rest follow at 2 per second, in order."""
    chat = Chat(flood_burst=5, flood_rate=2, flood_queue=20)
    alice, bob = chat.user("alice"), chat.user("bob")
    chat.advance(10)
    alice.send(b"pong\n")
    bob.send(b"pong\n")
    bob.take()
    alice.send(b"".join(b"line %d\n" % i for i in range(9)))
    got = [line.split(b": ", 1)[1] for line in bob.lines()]
    assert got == [b"line %d\n" % i for i in range(5)]
    chat.advance(0.5)
    assert [line.split(b": ", 1)[1] for line in bob.lines()] == [b"line 5\n"]
    chat.advance(1.5)
    got = [line.split(b": ", 1)[1] for line in bob.lines()]
    assert got == [b"line 6\n", b"line 7\n", b"line 8\n"]
    assert alice.connected


def test_a_pasted_stack_trace_is_delivered_whole_in_order() -> None:
    """A paste is not a flood: 60 lines (3 KB) in one read, with the default
    limits, go out paced by the flood rate, every one, in order, and the
    author stays."""
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob", host="192.0.2.2")
    chat.advance(10)
    alice.send(b"pong\n")
    bob.send(b"pong\n")
    bob.take()
    paste = [b'  File "app.py", line %d, in handler' % i for i in range(60)]
    alice.send(b"".join(line + b"\n" for line in paste))
    got: list[bytes] = []
    for _ in range(40):
        chat.advance(1)
        alice.send(b"pong\n")  # a live client answers the pings meanwhile
        got += [line.split(b": ", 1)[1] for line in bob.lines() if b"-alice: " in line]
    assert got == [line + b"\n" for line in paste]
    assert alice.connected
    assert b"Trop de messages" not in alice.take()


def test_the_flood_queue_is_bounded_in_bytes_too() -> None:
    """Lines waiting their turn are bounded in bytes as well as in number:
    past flood_queue_bytes, the sender is told and cut."""
    chat = Chat(flood_queue=100, flood_queue_bytes=1000)
    alice, bob = chat.user("alice"), chat.user("bob", host="192.0.2.2")
    bob.take()
    alice.take()
    alice.send((b"z" * 299 + b"\n") * 7)  # 4 go at once, 900 bytes wait
    assert alice.connected
    alice.send(b"z" * 299 + b"\n")  # 1,200 bytes wait
    assert alice.take().endswith(wire.FLOODED)
    assert not alice.connected


def test_pongs_are_not_counted_against_the_flood_limit() -> None:
    """A pong that answers a ping skips the flood limit: a client out of
    tokens is still alive to the server."""
    chat = Chat(flood_burst=1, flood_rate=0.01, flood_queue=20, ping_interval=10)
    alice, bob = chat.user("alice"), chat.user("bob")  # their burst is spent
    for _ in range(6):
        chat.advance(10)
        alice.send(b"pong\n")
        bob.send(b"pong\n")
    assert alice.connected and bob.connected
    assert alice.session.waiting == (0, 0)


def test_unasked_pongs_count_as_lines_and_are_never_relayed() -> None:
    """A pong with no ping pending counts against the flood limit, and is
    neither shown to anyone nor treated as a message."""
    chat = Chat(flood_burst=3, flood_rate=1, flood_queue=20)
    alice, bob = chat.user("alice"), chat.user("bob")
    chat.advance(5)
    bob.take()
    alice.send(b"pong\npong\npong\nhello\n")
    assert bob.take() == b""
    chat.advance(1)
    assert bob.take() == chat.stamp() + b"-alice: hello\n"


def test_a_flooder_is_told_and_disconnected() -> None:
    """Past the queue bound, the flooder is told why and cut; what its burst
    allowed went out first; others stay."""
    chat = Chat(flood_burst=5, flood_rate=2, flood_queue=20)
    alice, bob = chat.user("alice"), chat.user("bob")
    bob.take()
    alice.take()
    alice.send(b"spam\n" * 100)
    said = alice.take()
    assert said.endswith("Trop de messages trop vite : vous êtes déconnecté\n".encode())
    assert not alice.connected
    received = bob.lines()
    assert received[-1] == chat.stamp() + "-Déconnection de alice\n".encode()
    assert received[:-1] == [chat.stamp() + b"-alice: spam\n"] * 4  # 5, less /pseudo
    assert len(chat.clock.getDelayedCalls()) == 1, "only the ping loop is left"


# Slow readers


def test_a_client_that_stops_reading_is_cut_and_others_get_everything() -> None:
    """When a transport's buffer stays full past max_output, its client is
    disconnected and announced once; every other client gets every line."""
    chat = Chat(max_output=10_000, flood_rate=0)
    alice, bob, slow = chat.user("alice"), chat.user("bob"), chat.user("slow")
    bob.take()
    # What a TCP transport does when its buffer fills:
    slow.buffer_full()
    for i in range(200):
        alice.send(b"message %d %s\n" % (i, b"x" * 100))
        chat.advance(0.01)  # the turn ends, the line is written; time passes
    assert not slow.connected
    assert slow.transport.aborted
    lines = bob.lines()
    messages = [line for line in lines if b"-alice: message" in line]
    assert [int(m.split(b"message ")[1].split()[0]) for m in messages] == list(
        range(200)
    )
    assert sum(b"-D\xc3\xa9connection de slow\n" in line for line in lines) == 1


def test_a_reader_that_catches_up_is_kept() -> None:
    """resumeProducing (the buffer drained) clears the count."""
    chat = Chat(max_output=10_000, flood_rate=0)
    alice, reader = chat.user("alice"), chat.user("reader")
    for _ in range(5):
        reader.buffer_full()
        for i in range(50):
            alice.send(b"message %d %s\n" % (i, b"x" * 100))
            chat.advance(0)
        reader.buffer_drained()
    assert reader.connected


# Connection limits


def test_connections_per_address_are_limited() -> None:
    """The 17th connection from one address is told and closed; others pass."""
    chat = Chat(max_per_ip=16)
    clients = [chat.connect("198.51.100.7") for _ in range(16)]
    assert all(c.connected for c in clients)
    extra = chat.connect("198.51.100.7")
    assert (
        extra.take()
        == b"Trop de connexions depuis votre adresse, r\xc3\xa9essayez plus tard\n"
    )
    assert not extra.connected
    assert chat.connect("198.51.100.8").connected
    clients[0].transport.loseConnection()
    assert chat.connect("198.51.100.7").connected


def test_an_ipv6_network_counts_as_one_address() -> None:
    """Addresses of one /64 (what one subscriber gets) share one limit, and
    an IPv4 client over an IPv4-mapped address counts as that IPv4."""
    chat = Chat(max_per_ip=2)
    first = [chat.connect(f"2001:db8:0:7::{n}") for n in (1, 2)]
    assert all(c.connected for c in first)
    assert not chat.connect("2001:db8:0:7::ffff:3").connected
    assert chat.connect("2001:db8:0:8::1").connected
    assert chat.connect("203.0.113.5").connected
    assert chat.connect("::ffff:203.0.113.5").connected
    assert not chat.connect("::ffff:203.0.113.5").connected


def test_total_connections_are_limited() -> None:
    chat = Chat(max_connections=3, max_per_ip=0)
    clients = [chat.connect() for _ in range(3)]
    extra = chat.connect()
    assert extra.take() == b"Le serveur est plein, r\xc3\xa9essayez plus tard\n"
    assert not extra.connected
    clients[1].transport.loseConnection()
    assert chat.connect().connected


# Shutdown


def test_shutdown_tells_everyone_then_closes() -> None:
    """Each client gets one French line, then Deconnexion, then nothing."""
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    stranger = chat.connect()
    for c in (alice, bob, stranger):
        c.take()
    done = chat.factory.shutdown()
    fired: list[object] = []
    done.addCallback(fired.append)
    for c in (alice, bob, stranger):
        assert c.take() == "Le serveur s'arrête, à bientôt\nDeconnexion\n".encode()
        assert not c.connected
    assert fired == [None]
    assert chat.clock.getDelayedCalls() == []


def test_shutdown_cuts_clients_that_do_not_go() -> None:
    """A client whose connection does not close is cut after the timeout."""
    chat = Chat(shutdown_timeout=5, close_timeout=60)
    alice = chat.user("alice")
    close = alice.transport.loseConnection

    def stuck() -> None:  # closes only when aborted
        if alice.transport.aborted:
            close()

    alice.transport.loseConnection = stuck  # type: ignore[method-assign]
    fired: list[object] = []
    chat.factory.shutdown().addCallback(fired.append)
    assert fired == []
    chat.advance(5)
    assert fired == [None]
    assert alice.transport.aborted


def test_a_bug_in_a_handler_costs_one_line_not_the_connection(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error answers with one line; the next line works."""
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    calls = []

    def broken(sender: object, text: str) -> None:
        calls.append(text)
        raise RuntimeError("bug")

    monkeypatch.setattr(chat.factory, "say", broken)
    alice.send(b"first\n")
    assert alice.take() == b"Erreur interne du serveur, votre ligne est perdue\n"
    monkeypatch.undo()
    alice.send(b"second\n")
    assert bob.take() == chat.stamp() + b"-alice: second\n"
    assert calls == ["first"]


class UnreachableRelay:
    """A cluster link whose store cannot be reached."""

    def __init__(self) -> None:
        self.published: list[bytes] = []

    def publish(self, line: bytes) -> None:
        self.published.append(line)

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        return fail(ClusterUnreachable("down"))


def test_private_line_while_the_cluster_is_unreachable_says_so() -> None:
    """A private line to nobody here, when the other nodes cannot be asked,
    gets its own French error, not 'not connected'."""
    chat = Chat()
    relay = UnreachableRelay()
    chat.factory.room.relay = relay
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take()
    alice.send(b"msg zoe hello\n")
    assert (
        alice.take()
        == (
            "Erreur : message privé pour zoe impossible pour le moment, "
            "réessayez plus tard\n"
        ).encode()
    )
    alice.send(b"msg bob local\n")
    assert bob.take() == chat.stamp() + "-message privé de alice: local\n".encode()
    alice.send(b"public\n")
    assert relay.published[-1] == chat.stamp() + b"-alice: public\n"


def test_a_reader_over_the_bound_gets_a_grace_period() -> None:
    """Above max_output, a client is cut only once it stayed there for a
    second (a reader that keeps up drains a burst in that time), or at once
    past four times the bound."""
    chat = Chat(max_output=10_000, flood_rate=0)
    alice, reader = chat.user("alice"), chat.user("reader")

    def say(data: bytes) -> None:
        alice.send(data)
        chat.advance(0)  # the turn ends: the batch is written

    reader.buffer_full()
    say(b"x" * 4000 + b"\n" + b"y" * 4000 + b"\n" + b"z" * 4000 + b"\n")
    chat.advance(0.9)
    say(b"r\n")
    assert reader.connected, "over the bound for 0.9 s only"
    reader.buffer_drained()  # it read everything
    reader.buffer_full()
    say(b"w" * 4000 + b"\n" + b"v" * 4000 + b"\n" + b"s" * 4000 + b"\n")
    chat.advance(0.9)
    say(b"q\n")
    assert reader.connected, "the count started again when it caught up"
    chat.advance(0.2)
    say(b"u\n")
    assert not reader.connected, "over the bound for more than a second"
    late = chat.user("late")
    late.buffer_full()
    for _ in range(11):
        alice.send(b"t" * 4000 + b"\n")
    chat.advance(0)
    assert not late.connected, "past four times the bound: no grace"


def test_a_busy_chat_writes_at_most_one_batch_per_batch_delay() -> None:
    """With batch_delay, a line after a quiet spell goes out in its own
    reactor turn; lines made less than batch_delay after the last batch wait
    for it to pass, and go out together; a private line does not wait but
    the public lines before it go first."""
    chat = Chat(batch_delay=0.005, batch_threshold=0, flood_rate=0)
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    chat.advance(0.01)  # the join notices go out
    chat.advance(0.01)  # and the chat is quiet
    carol.transport.writes.clear()
    stamp = chat.stamp()
    alice.send(b"one\n")
    chat.advance(0)
    assert carol.transport.writes == [stamp + b"-alice: one\n"]
    chat.advance(0.002)
    bob.send(b"two\n")
    chat.advance(0.002)
    alice.send(b"three\n")
    chat.advance(0.0009)
    assert carol.transport.writes == [stamp + b"-alice: one\n"]
    chat.advance(0.0001)
    assert carol.transport.writes == [
        stamp + b"-alice: one\n",
        stamp + b"-bob: two\n" + stamp + b"-alice: three\n",
    ]
    carol.transport.writes.clear()
    bob.send(b"four\n")
    alice.send(b"msg carol five\n")
    assert carol.transport.writes[0] == stamp + b"-bob: four\n"
    assert carol.transport.writes[1].endswith(b"-message priv\xc3\xa9 de alice: five\n")


def test_lines_wait_for_a_batch_only_while_the_chat_is_busy() -> None:
    """Below batch_threshold deliveries per second nothing waits; above it
    (measured over the last second) a line made within batch_delay of the
    previous batch waits for it; once the chat is quiet again, nothing
    waits."""
    chat = Chat(batch_delay=0.02, batch_threshold=40, flood_rate=0)
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    chat.advance(1)
    carol.take()

    def lines_a_second(n: int) -> None:
        for _ in range(n):
            alice.send(b"hop\n")
            chat.advance(1 / n)
        carol.take()

    lines_a_second(10)  # 30 deliveries a second: no waiting
    alice.send(b"quiet\n")
    assert carol.take().endswith(b"-alice: quiet\n")
    lines_a_second(20)  # 60 a second, for two seconds: lines wait
    lines_a_second(20)
    alice.send(b"one\n")
    chat.advance(0.001)
    bob.send(b"two\n")
    assert carol.take() == b""
    chat.advance(0.02)
    one, two = carol.transport.writes[-1].splitlines()  # in one write
    assert (one.endswith(b"-alice: one"), two.endswith(b"-bob: two")) == (True, True)
    carol.take()
    chat.advance(5)  # quiet again
    bob.send(b"three\n")
    assert carol.take().endswith(b"-bob: three\n")
    chat.advance(0.001)
    bob.send(b"four\n")
    assert carol.take().endswith(b"-bob: four\n")


def test_a_line_made_during_a_pass_joins_it() -> None:
    """A pass serves pass_size users per reactor turn; a line made between two
    chunks goes, in the same write as the first, to the users the pass has
    yet to serve, and to the others in the next pass. Each user gets every
    line once, in order, and its own lines never."""
    chat = Chat(flood_rate=0, join_notice_limit=0, pass_size=2)
    users = [chat.user(nick) for nick in ("alice", "bob", "carol", "dave", "eve")]
    alice, bob, carol, dave, eve = users
    chat.advance(1)
    for user in users:
        user.transport.writes.clear()
    alice.send(b"one\n")
    chat.turn()  # the first chunk: alice (its own line: nothing) and bob
    assert bob.transport.writes[-1].endswith(b"-alice: one\n")
    assert carol.transport.writes == []
    bob.send(b"two\n")  # read between two chunks
    chat.turn()  # carol and dave: both lines, one write
    for user in (carol, dave):
        [data] = user.transport.writes
        assert data.endswith(b"-alice: one\n" + chat.stamp() + b"-bob: two\n")
        assert data.count(b"\n") == 2
    chat.advance(0)  # eve, then a second pass for alice and bob
    [data] = eve.transport.writes
    assert data.count(b"\n") == 2
    assert [w.split(b"-", 1)[1] for w in alice.transport.writes] == [b"bob: two\n"]
    assert [w.split(b"-", 1)[1] for w in bob.transport.writes] == [b"alice: one\n"]
    assert chat.factory.room.fanout.kept == 0, "every user has every line: none is kept"
    assert chat.clock.getDelayedCalls() != []  # the ping loop only
    assert all("_run_pass" not in repr(c) for c in chat.clock.getDelayedCalls())


def test_a_private_line_waits_for_the_public_lines_before_it() -> None:
    """A user the pass has not reached yet is given the public lines made
    before a private line to it, first."""
    chat = Chat(flood_rate=0, join_notice_limit=0, pass_size=1)
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    chat.advance(1)
    carol.transport.writes.clear()
    alice.send(b"public\n")
    bob.send(b"and another\n")
    chat.turn()  # alice only
    bob.send(b"msg carol private\n")
    public, private = carol.transport.writes
    assert public.endswith(b"-alice: public\n" + chat.stamp() + b"-bob: and another\n")
    assert private.endswith(b"-message priv\xc3\xa9 de bob: private\n")
    chat.advance(0)
    assert len(carol.transport.writes) == 2, "and not twice"


def test_who_is_not_in_the_chat_gets_no_public_line() -> None:
    """Lines still on their way (a pass not done) never reach a connection
    that has not registered, nor one that registers after they were made
    (found by the property test: the welcome line caught it up)."""
    chat = Chat(flood_rate=0, pass_size=1)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"avant\n")
    newcomer = chat.connect()
    assert newcomer.transport.value() == wire.WELCOME
    newcomer.transport.clear()
    newcomer.send(b"/pseudo carol\n")
    chat.advance(0)
    got = newcomer.take()
    assert b"avant" not in got and b"Connexion de" not in got
    assert got.startswith(b"Bienvenue carol\n")
    assert bob.take().count(b"-alice: avant\n") == 1


def test_talkers_get_their_writes_at_once() -> None:
    """By default (--nodelay talkers) Nagle's algorithm is turned off for a
    user once it sends a line after registering (public, private or a
    command), and for nobody else."""
    chat = Chat()
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    assert not any(c.transport.nodelay for c in (alice, bob, carol))
    alice.send(b"bonjour\n")
    bob.send(b"msg alice salut\n")
    chat.advance(0)
    assert (alice.transport.nodelay, bob.transport.nodelay) == (True, True)
    assert not carol.transport.nodelay
    carol.send(b"/list\n")
    assert carol.transport.nodelay


@pytest.mark.parametrize(("choice", "expected"), [("all", True), ("none", False)])
def test_nodelay_for_all_or_none(choice: str, expected: bool) -> None:
    chat = Chat(nodelay=choice)
    alice, bob = chat.user("alice"), chat.user("bob")
    assert bob.transport.nodelay is expected
    alice.send(b"bonjour\n")
    assert alice.transport.nodelay is expected


# Cuts during a pass


def stalled(client: Client) -> Client:
    """A user whose transport stopped taking bytes (its TCP buffer is full)."""
    client.buffer_full()
    return client


def test_a_reader_cut_during_a_pass_is_announced_once_to_those_served_after_it() -> (
    None
):
    """A reader cut by the pass's own write (over four times max_output)
    leaves; its departure joins the pass: the users served after it get it
    once, with the line, and never again in the next pass."""
    chat = Chat(flood_rate=0, join_notice_limit=0, max_output=1000, pass_size=100)
    alice, first = chat.user("alice"), chat.user("first")
    slow = stalled(chat.user("slow"))
    after = [chat.user(f"after{i}") for i in range(3)]
    chat.advance(1)
    for user in (first, *after):
        user.take()
    alice.send(b"x" * 4050 + b"\n")
    chat.advance(1)
    assert not slow.connected
    departure = chat.stamp() + "-Déconnection de slow\n".encode()
    for user in (first, *after):
        got = user.take()
        assert got.count(b"-alice: xxx") == 1
        assert got.count(departure) == 1, user.session.nick


def test_many_readers_cut_in_one_pass_are_each_announced_once() -> None:
    """More readers cut in one pass than a batch holds (64 lines): every
    departure reaches every user present once, and the sender is not told
    its line was lost (it was not)."""
    chat = Chat(
        flood_rate=0, join_notice_limit=0, max_output=1000, pass_size=1000, max_per_ip=0
    )
    alice, bob = chat.user("alice"), chat.user("bob")
    readers = [stalled(chat.user(f"r{i}")) for i in range(80)]
    chat.advance(1)
    bob.take()
    alice.take()
    alice.send(b"x" * 4050 + b"\n")
    chat.advance(1)
    assert not any(r.connected for r in readers)
    assert len(chat.factory.sessions) == 2
    got = bob.take()
    assert got.count(b"-alice: xxx") == 1
    for i in range(80):
        assert got.count(f"-Déconnection de r{i}\n".encode()) == 1
    assert b"Erreur" not in alice.take()


def test_many_readers_cut_by_a_sender_line_do_not_fail_the_sender() -> None:
    """A sender whose line completes a full batch (64 lines) makes the server
    give every line at once; readers cut then leave, and the sender's line
    is neither lost nor reported lost."""
    chat = Chat(
        flood_rate=0, join_notice_limit=0, max_output=1000, pass_size=1000, max_per_ip=0
    )
    alice, bob = chat.user("alice"), chat.user("bob")
    readers = [stalled(chat.user(f"r{i}")) for i in range(80)]
    chat.advance(1)
    bob.take()
    alice.take()
    alice.send(b"".join(b"%d %s\n" % (i, b"y" * 100) for i in range(64)))
    chat.advance(1)
    assert b"Erreur" not in alice.take()
    assert not any(r.connected for r in readers)
    got = bob.take()
    assert [
        int(line.split(b": ")[1].split()[0])
        for line in got.splitlines()
        if b"-alice: " in line
    ] == list(range(64))
    for i in range(80):
        assert got.count(f"-Déconnection de r{i}\n".encode()) == 1


def test_a_ping_round_that_cuts_many_readers_pings_everyone_else() -> None:
    """Pings give each user its pending lines first; readers cut then leave,
    and the round goes on for the users after them."""
    chat = Chat(
        flood_rate=0,
        join_notice_limit=0,
        max_output=1000,
        pass_size=1,
        ping_interval=10,
        max_per_ip=0,
    )
    alice = chat.user("alice")
    readers = [stalled(chat.user(f"r{i}")) for i in range(80)]
    bob = chat.user("bob")
    chat.advance(1)
    bob.take()
    alice.send(b"x" * 4050 + b"\n")
    chat.advance(9)  # the ping round comes before the pass has reached everyone
    assert not any(r.connected for r in readers)
    chat.advance(1)
    got = bob.take()
    assert got.count(b"ping\n") == 1
    assert got.count(b"-alice: xxx") == 1
    for i in range(80):
        assert got.count(f"-Déconnection de r{i}\n".encode()) == 1


def test_a_registrant_cut_by_its_own_welcome_leaves_no_session() -> None:
    """A client that stopped reading before it registered may be cut by the
    welcome itself (found by the property test): it is not left in the chat
    as a session without a connection, and its nickname is free again."""
    chat = Chat(max_output=20)  # cut at once past 80 bytes held
    slow = stalled(chat.connect())
    slow.send(b"alice\n")  # not a command: the welcome again, 71 bytes held
    assert slow.connected
    slow.send(b"/pseudo alice\n")
    assert not slow.connected
    assert chat.factory.sessions == {}
    chat.user("alice")


# The end of a client's input


def test_a_client_that_closes_its_side_quits_after_its_last_line() -> None:
    """A client that closes its side of the connection (nc -N, a script)
    has its waiting lines sent, at the flood rate, and a last line without
    its newline too; then it quits as with /quit: Deconnexion, announced once."""
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob", host="192.0.2.2")
    chat.advance(10)
    alice.send(b"pong\n")
    bob.send(b"pong\n")
    bob.take()
    alice.take()
    alice.send(b"".join(b"line %d\n" % i for i in range(11)) + b"last")
    alice.proto.readConnectionLost()
    assert alice.connected, "its lines are still waiting their turn"
    for _ in range(8):
        chat.advance(0.5)
    got = [line.split(b"-", 1)[1] for line in bob.lines()]
    assert got == [b"alice: line %d\n" % i for i in range(11)] + [
        b"alice: last\n",
        "Déconnection de alice\n".encode(),
    ]
    assert alice.take().endswith(b"Deconnexion\n")
    assert not alice.connected
    quiet = chat.connect(host="192.0.2.3")
    quiet.proto.readConnectionLost()
    assert quiet.take().endswith(b"Deconnexion\n")
    assert not quiet.connected
