"""The terminal client and rooms (docs/client.md, "Rooms"): the current room
from chatproto's `Salon courant : #NAME`, in the prompt; a room's lines
tagged with their room; the pipe printing every line as it came; and the
Ruby server and projet.py read exactly as before, whatever their lines
look like.

The room lines are those of /work/briefs/rooms-protocol.md (docs/protocol.md
"Rooms" once the server has them), byte for byte. In memory: a
StringTransport and a task.Clock (tests.test_client_protocol.Chat).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pyte
import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.color_depth import ColorDepth
from prompt_toolkit.output.vt100 import Vt100_Output

from chatproto.client.events import (
    ChatView,
    CurrentRoom,
    Departure,
    Event,
    Joined,
    Notice,
    Private,
    Public,
    Registered,
    RoomDeparture,
    RoomEvent,
    RoomJoined,
    RoomPublic,
    Topic,
    UserList,
)
from chatproto.client.pipe import PipeUI
from chatproto.client.registration import Stage
from chatproto.client.servers import Dialect
from chatproto.client.terminal import TtyUI, prompt_label, render
from tests.test_client_protocol import (
    OUR_GREETING,
    RUBY_ACCENTS,
    RUBY_BYE,
    RUBY_DEPARTURE,
    RUBY_EMPTY,
    RUBY_PRIVATE,
    RUBY_PROMPT,
    RUBY_PUBLIC,
    RUBY_SLASH,
    RUBY_WELCOME,
    SEED_DEPARTURE,
    SEED_PRIVATE,
    SEED_PUBLIC,
    Chat,
)
from tests.test_client_session import Harness

LIST_BOB = (
    b"----------------------\nUtilisateurs en ligne:\n=>bob\n----------------------\n"
)

# -- chatproto's lines for rooms (rooms-protocol.md) -------------------------------
JOIN_ANSWER = (
    "Salon courant : #salle-b\n"
    "----------------------\n"
    "Utilisateurs en ligne:\n"
    "=>alice\n"
    "=>bob\n"
    "----------------------\n"
    "Sujet de #salle-b : révisions du partiel\n"
).encode()
ROOM_LINES = (
    "[9.5.3]-#salle-b Connexion de carol\n"
    "[9.5.4]-#salle-b alice: on commence ?\n"
    "[9.5.5]-#autre dave: ici #autre: rien\n"
    "[9.5.6]-#salle-b Sujet : chapitre 3 (par alice) (par prof)\n"
    "[9.5.7]-#autre Départ de dave\n"
    "#autre n'a pas de sujet\n"
).encode()
OUR_JOIN_LOBBY = b"[9.5.9]-Connexion de erin\n"
PART_ANSWER = "Vous avez quitté #salle-b\nSalon courant : #accueil\n".encode()
ROOMS_BLOCK = (
    b"--- salons (3) ---\n"
    b"#accueil 4 membres\n"
    b"#autre 1 membre\n"
    b"#salle-b 2 membres\n"
    b"--- fin des salons ---\n"
)
ROOM_HISTORY = (
    b"--- historique (2 lignes) ---\n"
    b"[9.5.3]-#salle-b Connexion de carol\n"
    b"[9.5.4]-#salle-b alice: on commence ?\n"
    b"--- fin de l'historique ---\n"
)


def register_ours(chat: Chat, nick: str = "bob") -> None:
    """Register on chatproto's server: its greeting, then the list."""
    chat.feed(RUBY_WELCOME)
    chat.proto.register(nick)
    chat.feed(RUBY_PROMPT)
    chat.feed(OUR_GREETING.replace(b"bob", nick.encode()), LIST_BOB)
    assert chat.proto.stage is Stage.REGISTERED
    assert chat.proto.dialect is Dialect.CHATPROTO
    chat.sent()
    chat.take()


def joined(view: ChatView | None = None) -> Chat:
    """bob on chatproto's server, in #salle-b since /join salle-B; the
    events to C{view} if given (they are not recorded then)."""
    chat = Chat()
    if view is not None:
        chat.view.show = view.show  # type: ignore[method-assign]
    register_ours(chat)
    chat.proto.send("/join salle-B")
    assert chat.sent() == b"/join salle-B\n"
    chat.feed(JOIN_ANSWER)
    return chat


def lines_of(events: list[Event]) -> list[str]:
    return [line for event in events for line in event.lines]


# -- The protocol: the current room, the room's lines -------------------------------


def test_join_and_part_move_the_current_room() -> None:
    """/join and /part go as typed; `Salon courant` says where the user is,
    the list block and the topic that follow /join are shown as such, and
    none of it counts as a line refused."""
    chat = Chat()
    register_ours(chat)
    assert chat.proto.room is None
    chat.proto.send("/join salle-B")
    assert chat.sent() == b"/join salle-B\n"
    chat.feed(JOIN_ANSWER)
    events = chat.take()
    assert [type(event) for event in events] == [CurrentRoom, UserList, Topic]
    assert events[0] == CurrentRoom(
        lines=("Salon courant : #salle-b",), room="#salle-b"
    )
    assert isinstance(events[1], UserList)
    assert events[1].nicknames == ("alice", "bob")
    assert events[2] == Topic(
        lines=("Sujet de #salle-b : révisions du partiel",),
        room="#salle-b",
        text="révisions du partiel",
    )
    assert chat.proto.room == "#salle-b"
    chat.proto.send("/part")
    assert chat.sent() == b"/part\n"
    chat.feed(PART_ANSWER)
    assert chat.take() == [
        Notice(lines=("Vous avez quitté #salle-b",)),
        CurrentRoom(lines=("Salon courant : #accueil",), room="#accueil"),
    ]
    assert chat.proto.room == "#accueil"
    assert chat.proto.reader.undelivered == 0


def test_room_lines_are_read_with_their_room() -> None:
    """Arrivals, messages, topics and departures of rooms, the current one
    or another, each with its room; the lobby's lines stay the chat's own."""
    chat = joined()
    chat.take()
    chat.feed(ROOM_LINES, b"[9.5.8]-alice: dans le hall\n", OUR_JOIN_LOBBY)
    assert chat.take() == [
        RoomJoined(
            lines=("[9.5.3]-#salle-b Connexion de carol",),
            room="#salle-b",
            time="9.5.3",
            nickname="carol",
        ),
        RoomPublic(
            lines=("[9.5.4]-#salle-b alice: on commence ?",),
            room="#salle-b",
            time="9.5.4",
            sender="alice",
            text="on commence ?",
        ),
        RoomPublic(
            lines=("[9.5.5]-#autre dave: ici #autre: rien",),
            room="#autre",
            time="9.5.5",
            sender="dave",
            text="ici #autre: rien",
        ),
        Topic(
            lines=("[9.5.6]-#salle-b Sujet : chapitre 3 (par alice) (par prof)",),
            room="#salle-b",
            text="chapitre 3 (par alice)",
            time="9.5.6",
            setter="prof",
        ),
        RoomDeparture(
            lines=("[9.5.7]-#autre Départ de dave",),
            room="#autre",
            time="9.5.7",
            nickname="dave",
        ),
        Topic(lines=("#autre n'a pas de sujet",), room="#autre", text=None),
        Public(
            lines=("[9.5.8]-alice: dans le hall",),
            time="9.5.8",
            sender="alice",
            text="dans le hall",
        ),
        Joined(
            lines=("[9.5.9]-Connexion de erin",),
            time="9.5.9",
            nickname="erin",
        ),
    ]
    assert chat.proto.reader.undelivered == 0


def test_rooms_block_and_room_history_are_plain_lines() -> None:
    """/rooms' block is shown line by line as notices; /history in a room
    gives that room's lines, read as the room's; nothing is counted lost."""
    chat = joined()
    chat.take()
    chat.proto.send("/rooms")
    assert chat.sent() == b"/rooms\n"
    chat.feed(ROOMS_BLOCK)
    events = chat.take()
    assert lines_of(events) == ROOMS_BLOCK.decode().splitlines()
    assert all(type(event) is Notice for event in events)
    chat.feed(ROOM_HISTORY)
    events = chat.take()
    assert lines_of(events) == ROOM_HISTORY.decode().splitlines()
    assert [type(event) for event in events] == [Notice, RoomJoined, RoomPublic, Notice]
    assert chat.proto.reader.undelivered == 0


@pytest.mark.parametrize(
    "error",
    [
        "Erreur : tapez /join #SALON, SALON de 1 à 24 lettres a-z, chiffres, _ ou -",
        "Erreur : on ne quitte pas #accueil (tapez /quit pour quitter le chat)",
        "Erreur : vous n'êtes pas dans #salle",
        "Erreur : seul un opérateur peut changer le sujet",
        "Erreur : vous êtes déjà dans 20 salons, quittez-en un avec /part",
    ],
)
def test_a_refused_room_command_is_a_line_lost_and_moves_nothing(error: str) -> None:
    """The server's errors for /join, /part and /topic are error lines as
    any other: shown, counted as a line not delivered; the room stays."""
    chat = joined()
    chat.take()
    chat.feed(error.encode() + b"\n")
    assert chat.take() == [Notice(lines=(error,))]
    assert chat.proto.reader.undelivered == 1
    assert chat.proto.room == "#salle-b"


def test_room_lines_escaped_as_any_line() -> None:
    """Control characters in a room's line are shown in caret form, the
    bidirectional overrides as U+FFFD, before the line is read."""
    chat = joined()
    chat.take()
    chat.feed(b"[1.2.3]-#salle-b eve: \x1b[2J\xe2\x80\xaeevil\n")
    assert chat.take() == [
        RoomPublic(
            lines=("[1.2.3]-#salle-b eve: ^[[2J\ufffdevil",),
            room="#salle-b",
            time="1.2.3",
            sender="eve",
            text="^[[2J\ufffdevil",
        )
    ]


def test_no_room_line_before_the_server_says_a_current_room() -> None:
    """On chatproto's server, until the first `Salon courant`, a line that
    looks like a room's is shown as it was before rooms: a notice."""
    chat = Chat()
    register_ours(chat)
    line = "[1.2.3]-#salle-b alice: hello"
    chat.feed(line.encode() + b"\n")
    assert chat.take() == [Notice(lines=(line,))]
    assert chat.proto.room is None


def test_a_name_the_rule_refuses_is_no_room() -> None:
    """Only names the server shows (lower case, 1 to 24 of a-z 0-9 _ -)
    make a current room or a room's line."""
    chat = joined()
    chat.take()
    odd = [
        "Salon courant : #Salle",
        "Salon courant : #" + "a" * 25,
        "Salon courant : salle",
        "[1.2.3]-#Salle alice: hi",
        "[1.2.3]-# alice: hi",
    ]
    chat.feed("".join(line + "\n" for line in odd).encode())
    assert chat.take() == [Notice(lines=(line,)) for line in odd]
    assert chat.proto.room == "#salle-b"


# -- The Ruby server and projet.py: nothing changes ---------------------------------


RUBY_ODD = (
    # The Ruby server takes any line as a nickname after an invalid one
    # (ruby-server.txt): user '#salle-b bob' may be there, and its lines are
    # lobby lines.
    b"[18.57.31]-#salle-b bob: salut\n"
    b"[18.57.32]-#salle-b Connexion de carol\n"
    b"Sujet de #salle-b : rien\n"
)


def test_ruby_transcript_reads_as_before_whatever_it_holds() -> None:
    """The Ruby transcript's lines, and lines a Ruby user could make look like
    a room's (even `Salon courant`, which that server never sends), are read
    as they were before rooms: no room, no room event, the same events."""
    chat = Chat()
    chat.register_ruby("bob")
    assert chat.proto.dialect is Dialect.RUBY
    chat.feed(
        RUBY_PUBLIC,
        RUBY_ACCENTS,
        RUBY_PRIVATE,
        RUBY_SLASH,
        RUBY_EMPTY,
        b"Salon courant : #salle-b\n",
        RUBY_ODD,
        RUBY_DEPARTURE,
    )
    events = chat.take()
    assert not any(isinstance(event, RoomEvent) for event in events)
    assert [type(event) for event in events] == [
        Public,
        Public,
        Private,
        Public,
        Public,
        Notice,
        Notice,
        Notice,
        Notice,
        Departure,
    ]
    assert chat.proto.room is None
    for event in events:
        # The terminal shows each as before rooms, whatever the room.
        assert render(event, "#salle-b") == render(event)
    chat.proto.quit()
    chat.feed(RUBY_BYE)
    assert chat.ending().ok


def test_seed_lines_read_as_before() -> None:
    """projet.py's lines are never a room's either."""
    chat = Chat()
    chat.register_seed("bob")
    chat.feed(
        SEED_PUBLIC,
        SEED_PRIVATE,
        b"Salon courant : #salle\n",
        b"[18.58.9]-#salle bob: hi\n",
        SEED_DEPARTURE,
    )
    events = chat.take()
    assert [type(event) for event in events] == [
        Public,
        Private,
        Notice,
        Notice,
        Departure,
    ]
    assert chat.proto.room is None


# -- The pipe: every line as it came --------------------------------------------------


def test_pipe_prints_room_lines_as_they_came() -> None:
    """In a pipe, the answer to /join, the rooms' lines, the rooms block and
    /part's answer are printed byte for byte as the server sent them."""
    chat = Chat()
    out = io.StringIO()
    pipe = PipeUI(Harness().session, out, None, lambda *_: None)
    chat.view.show = pipe.show  # type: ignore[method-assign]
    register_ours(chat)
    out.truncate(0)
    out.seek(0)
    chat.proto.send("/join salle-B")
    sent = JOIN_ANSWER + ROOM_LINES + ROOMS_BLOCK + ROOM_HISTORY + PART_ANSWER
    chat.feed(sent)
    assert out.getvalue() == sent.decode()


# -- The terminal: the prompt, the tags -----------------------------------------------


def test_prompt_label() -> None:
    """Today's prompt until the server says a room; then the room after the
    nickname."""
    assert prompt_label(None, None) == "> "
    assert prompt_label("bob", None) == "bob> "
    assert prompt_label("bob", "#salle") == "bob #salle> "
    assert prompt_label("bob", "#accueil") == "bob #accueil> "


def test_prompt_label_cuts_a_huge_nickname() -> None:
    """Any server may greet with any nickname (the Ruby server takes any
    line as one): the prompt shows at most 24 characters of it."""
    assert prompt_label("N" * 24, None) == "N" * 24 + "> "
    assert prompt_label("N" * 60_000, "#a") == "N" * 23 + "… #a> "


class FakeSession:
    reasking = False
    asking_password = False
    waiting = 0


@contextlib.contextmanager
def xterm() -> Iterator[tuple[TtyUI, io.StringIO]]:
    """A TtyUI printing to an xterm that is a StringIO. (Not a fixture:
    prompt_toolkit keeps its terminal in a context variable, and under
    pytest-twisted a fixture's setup sets it in a context the test does not
    run in.)"""
    written = io.StringIO()
    output = Vt100_Output(
        written,
        lambda: Size(rows=24, columns=80),
        term="xterm",
        default_color_depth=ColorDepth.DEPTH_8_BIT,
    )
    with (
        create_pipe_input() as keys,
        create_app_session(input=keys, output=output),
    ):
        yield TtyUI(FakeSession()), written  # type: ignore[arg-type]


def prompt_of(ui: TtyUI) -> str:
    return "".join(text for _, text, *_ in ui.prompt_message())


class Screen:
    """What an xterm shows of C{written}: its lines, and the colour and
    weight of the text at a place (pyte reads the escape sequences)."""

    def __init__(self, written: io.StringIO) -> None:
        self.screen = pyte.Screen(100, 40)
        pyte.Stream(self.screen).feed(written.getvalue())
        self.lines = [line.rstrip() for line in self.screen.display]
        self.lines = self.lines[: max(i for i, x in enumerate(self.lines) if x) + 1]

    def style(self, row: int, text: str, nth: int = 0) -> tuple[str, bool]:
        """The colour and boldness of the C{nth} C{text} on line C{row}."""
        column = -1
        for _ in range(nth + 1):
            column = self.lines[row].index(text, column + 1)
        cell = self.screen.buffer[row][column]
        return cell.fg, cell.bold


def test_the_prompt_shows_the_current_room() -> None:
    """`bob> ` as today; `bob #salle-b> ` once the server says so; the lobby
    after /part; a new registration starts with no room again."""
    with xterm() as (ui, _):
        assert prompt_of(ui) == "> "
        ui.show(Registered(nickname="bob"))
        assert prompt_of(ui) == "bob> "
        ui.show(CurrentRoom(lines=("Salon courant : #salle-b",), room="#salle-b"))
        assert (ui.room, prompt_of(ui)) == ("#salle-b", "bob #salle-b> ")
        ui.show(CurrentRoom(lines=("Salon courant : #accueil",), room="#accueil"))
        assert prompt_of(ui) == "bob #accueil> "
        ui.show(Registered(nickname="bob2"))
        assert (ui.room, prompt_of(ui)) == (None, "bob2> ")


def test_lines_tagged_with_their_room() -> None:
    """Each line's text as it came; the current room's name in bold, another
    room's in colour and bold, the rest of the line as the lobby's of its
    kind (plain for a message, the notice colour for the others); the
    lobby's lines as today."""
    with xterm() as (ui, written):
        chat = joined(ui)
        assert prompt_of(ui) == "bob #salle-b> "
        written.truncate(0)
        written.seek(0)
        chat.feed(ROOM_LINES, b"[9.5.8]-alice: dans le hall\n", OUR_JOIN_LOBBY)
    screen = Screen(written)
    assert screen.lines == [
        *ROOM_LINES.decode().splitlines(),
        "[9.5.8]-alice: dans le hall",
        "[9.5.9]-Connexion de erin",
    ]
    here, there = ("default", True), ("green", True)
    notice, plain = ("cyan", False), ("default", False)
    assert [screen.style(0, "[9.5.3]"), screen.style(0, "#salle-b")] == [notice, here]
    assert screen.style(0, "Connexion de carol") == notice
    assert screen.style(1, "#salle-b") == here
    assert screen.style(1, "alice: on commence") == plain
    assert screen.style(2, "#autre") == there
    assert screen.style(2, "dave: ici") == plain
    assert screen.style(2, "#autre", nth=1) == plain  # in the text: no tag
    assert screen.style(3, "#salle-b") == here
    assert screen.style(3, "Sujet : chapitre 3") == notice
    assert [screen.style(4, "#autre"), screen.style(4, "Départ")] == [there, notice]
    assert [screen.style(5, "#autre"), screen.style(5, "n'a pas")] == [there, notice]
    assert screen.style(6, "[9.5.8]-alice: dans le hall") == plain
    assert screen.style(7, "[9.5.9]-Connexion de erin") == notice


def test_render_without_a_current_room_tags_every_room() -> None:
    """Before the view knows a current room, every room's name stands out."""
    event = RoomPublic(
        lines=("[1.2.3]-#salle dave: hi",),
        room="#salle",
        time="1.2.3",
        sender="dave",
        text="hi",
    )
    assert render(event) == [
        ("", "[1.2.3]-"),
        ("class:room", "#salle"),
        ("", " dave: hi"),
    ]
    assert render(event, "#salle")[1] == ("class:room-here", "#salle")
