"""ChatClientProtocol over a StringTransport and a task.Clock, no sockets.

The server bytes below are those of ../shared/transcripts/ruby-server.txt and
../shared/transcripts/projet-py-server.txt, copied as they were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.python.failure import Failure

from chatproto import wire
from chatproto.client.events import (
    Departure,
    Disconnected,
    Event,
    Goodbye,
    Joined,
    NicknamePrompt,
    Notice,
    Private,
    Public,
    Refused,
    Registered,
    UserList,
    Welcome,
)
from chatproto.client.protocol import (
    ChatClientFactory,
    ChatClientProtocol,
    Timings,
    sanitize,
)
from chatproto.client.registration import Stage
from chatproto.client.servers import Dialect
from chatproto.client.userlist import ListBlock

E = TypeVar("E", bound=Event)

# -- What the Ruby server sent (ruby-server.txt) ----------------------------------
RUBY_WELCOME = (
    b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
)
RUBY_PROMPT = b"Entrez votre pseudo: \n"
RUBY_LIST_ALICE = (
    b"----------------------\nUtilisateurs en ligne:\n=>alice\n----------------------\n"
)
RUBY_LIST_TWO = (
    b"----------------------\nUtilisateurs en ligne:\n=>alice\n=>bob\n"
    b"----------------------\n"
)
RUBY_LIST_DAVE = (
    b"----------------------\nUtilisateurs en ligne:\n=>alice\n=>bob\n=>dave\n\n"
    b"----------------------\n"
)
RUBY_PUBLIC = b"[18.57.28]-alice: salut tout le monde\n"
RUBY_ACCENTS = b"[18.57.29]-bob: \xc3\xa7a va, \xc3\xa9l\xc3\xa8ve ?\n"
RUBY_PRIVATE = b"[18.57.30]-message priv\xc3\xa9 de alice: msg bob un secret\n"
RUBY_SLASH = b"[18.57.34]-alice: /help\n"
RUBY_EMPTY = b"[18.57.35]-alice: \n"
RUBY_TAKEN = b"Attention ce pseudo existe deja\n"
RUBY_INVALID = b"Rentrez un pseudo correct\n"
RUBY_BYE = b"ping\nDeconnexion\n"
RUBY_DEPARTURE = b"[18.57.42]-D\xc3\xa9connection de bob\nping\n"

# -- What projet.py sent (projet-py-server.txt) ----------------------------------
SEED_WELCOME = b"bienvenue dans le chat, enregistrez-vous avec la commande /pseudo\n"
SEED_PROMPT = b"Entrez votre pseudo\n"
SEED_LIST_ALICE = (
    b"----------------------\nUtilisateurs en ligne:\n=> alice\n\n"
    b"----------------------\n"
)
SEED_LIST_TWO = (
    b"----------------------\nUtilisateurs en ligne:\n=> alice\n\n=> bob\r\n\n"
    b"----------------------\n"
)
SEED_PUBLIC = b"[18.58.8]-alice: salut tout le monde\n"
SEED_PRIVATE = b"[18.58.8]-message priv\xc3\xa9 de alice: un secret\n"
SEED_TAKEN = b"Ce pseudo existe d\xc3\xa9j\xc3\xa0\nD\xc3\xa9connexion\n"
SEED_INVALID = (
    b"le pseudo propos\xc3\xa9 est invalide, car il ne correspond aux crit\xc3\xa8res"
    b" obligatoires d'un nom de pseudo d\xc3\xa9finis par le protocole\n"
)
SEED_BYE = b"Deconnexion\n"
SEED_DEPARTURE = b"[18.58.9]-D\xc3\xa9connection de bob\r\n"
# projet.py writes the departure of a user who never registered with the
# thread's name and no line ending.
SEED_UNTERMINATED = b"[18.58.9]-D\xc3\xa9connection de Thread-3"

# -- chatproto's own server's extra lines -------------------------------------------
OUR_GREETING = b"Bienvenue bob\n"
OUR_JOIN = b"[9.5.3]-Connexion de carol\n"


@dataclass
class Recorder:
    """A view that keeps every event, and can give up on a refusal the way
    the pipe interface does."""

    events: list[Event] = field(default_factory=list)
    protocol: ChatClientProtocol | None = None
    give_up_on_refusal: bool = False

    def show(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Refused) and self.give_up_on_refusal:
            assert self.protocol is not None
            self.protocol.give_up()


def segments(data: bytes, size: int = 65536) -> list[bytes]:
    """C{data} in the pieces a TCP transport reads (LineReceiver takes a
    long time over one big piece of many lines)."""
    return [data[start : start + size] for start in range(0, len(data), size)]


class SlowReader(StringTransportWithDisconnection):
    """A transport to a server that reads nothing until L{drain}: past
    C{bufferSize} bytes held, it pauses its producer, and resumes it once
    drained, as Twisted's TCP transport does."""

    bufferSize = 1024
    paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        held = len(self.value()) > self.bufferSize
        if held and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """What the server reads, all that was held."""
        data = self.value()
        self.clear()
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()
        return data


class Chat:
    """One client protocol on a StringTransport, with a fake clock."""

    def __init__(
        self,
        timings: Timings | None = None,
        give_up: bool = False,
        transport: StringTransportWithDisconnection | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.view = Recorder(give_up_on_refusal=give_up)
        factory = ChatClientFactory(self.view, self.clock, timings)
        self.proto = factory.buildProtocol(None)
        self.view.protocol = self.proto
        self.transport = transport or StringTransportWithDisconnection()
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        self.events_taken = 0

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.proto.dataReceived(chunk)

    def sent(self) -> bytes:
        """What the client wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def take(self) -> list[Event]:
        """The events shown since the last call."""
        events = self.view.events[self.events_taken :]
        self.events_taken = len(self.view.events)
        return events

    def shown(self) -> list[str]:
        """The lines a pipe would print for the events since the last call."""
        return [line for event in self.take() for line in event.lines]

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.view.events if isinstance(event, kind)]

    @property
    def connected(self) -> bool:
        return bool(self.transport.connected)

    def ending(self) -> Disconnected:
        """The final event, which must be the one Disconnected."""
        assert not self.connected
        last = self.view.events[-1]
        assert isinstance(last, Disconnected)
        assert len(self.of(Disconnected)) == 1
        assert self.clock.getDelayedCalls() == []
        return last

    def register_ruby(self, nick: str = "bob") -> None:
        self.feed(RUBY_WELCOME)
        self.proto.register(nick)
        self.feed(RUBY_PROMPT)
        self.feed(
            b"----------------------\nUtilisateurs en ligne:\n=>alice\n=>"
            + nick.encode()
            + b"\n----------------------\n"
        )
        assert self.proto.stage is Stage.REGISTERED
        self.sent()
        self.take()

    def register_seed(self, nick: str = "bob") -> None:
        self.feed(SEED_WELCOME)
        self.proto.register(nick)
        self.clock.advance(1)
        self.feed(SEED_PROMPT)
        self.clock.advance(1)
        self.feed(
            b"----------------------\nUtilisateurs en ligne:\n=> "
            + nick.encode()
            + b"\n\n----------------------\n"
        )
        assert self.proto.stage is Stage.REGISTERED
        self.clock.advance(1)
        self.sent()
        self.take()


def test_delimiter_is_lf() -> None:
    """The client splits on LF, as every server ends its lines with it."""
    assert ChatClientProtocol.delimiter == b"\n"


# -- The Ruby server --------------------------------------------------------------


def test_ruby_registration_step_by_step() -> None:
    """/pseudo, the prompt, the nickname, then the list block: each server
    line shown as it came, and the registration known."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    assert chat.take() == [
        Welcome(
            lines=(
                "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo",
            )
        )
    ]
    assert chat.proto.dialect is Dialect.RUBY
    chat.proto.send("/pseudo")
    assert chat.sent() == b"/pseudo\n"
    chat.feed(RUBY_PROMPT)
    assert chat.take() == [NicknamePrompt(lines=("Entrez votre pseudo: ",))]
    chat.proto.send("alice")
    assert chat.sent() == b"alice\n"
    chat.feed(RUBY_LIST_ALICE)
    assert chat.take() == [
        Registered(nickname="alice"),
        UserList(
            lines=(
                "----------------------",
                "Utilisateurs en ligne:",
                "=>alice",
                "----------------------",
            ),
            nicknames=("alice",),
        ),
    ]
    assert chat.proto.nickname == "alice"


def test_register_waits_for_each_answer() -> None:
    """register() sends /pseudo only after the welcome, and the nickname only
    after the prompt, so a server that reads line by line sees the talk in
    order; lines typed meanwhile wait their turn."""
    chat = Chat()
    chat.proto.register("bob")
    chat.proto.send("hello")
    assert chat.sent() == b""
    chat.feed(RUBY_WELCOME)
    assert chat.sent() == b"/pseudo\n"
    chat.feed(RUBY_PROMPT)
    assert chat.sent() == b"bob\n"
    chat.feed(RUBY_LIST_TWO)
    assert chat.sent() == b"hello\n"


def test_typed_registration_waits_too() -> None:
    """Lines piped in one go (/pseudo, the nickname, a message) go out one
    answer at a time."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    for line in ("/pseudo", "bob", "hello"):
        chat.proto.send(line)
    assert chat.sent() == b"/pseudo\n"
    chat.feed(RUBY_PROMPT)
    assert chat.sent() == b"bob\n"
    chat.feed(RUBY_LIST_TWO)
    assert chat.sent() == b"hello\n"
    assert chat.proto.nickname == "bob"


def test_ruby_crlf_tolerated() -> None:
    """A line ending in CRLF is the same line, without the CR."""
    chat = Chat()
    chat.feed(RUBY_WELCOME.replace(b"\n", b"\r\n"))
    assert chat.of(Welcome)[0].lines[0].endswith("/pseudo")


def test_ruby_messages() -> None:
    """Public lines, accents, the Ruby private line with its repeated
    'msg NICK ' (dropped from the text, kept in the shown line), an unknown
    slash command and an empty message are told apart."""
    chat = Chat()
    chat.register_ruby("bob")
    chat.feed(RUBY_PUBLIC, RUBY_ACCENTS, RUBY_PRIVATE, RUBY_SLASH, RUBY_EMPTY)
    assert chat.take() == [
        Public(
            lines=("[18.57.28]-alice: salut tout le monde",),
            time="18.57.28",
            sender="alice",
            text="salut tout le monde",
        ),
        Public(
            lines=("[18.57.29]-bob: ça va, élève ?",),
            time="18.57.29",
            sender="bob",
            text="ça va, élève ?",
        ),
        Private(
            lines=("[18.57.30]-message privé de alice: msg bob un secret",),
            time="18.57.30",
            sender="alice",
            text="un secret",
        ),
        Public(
            lines=("[18.57.34]-alice: /help",),
            time="18.57.34",
            sender="alice",
            text="/help",
        ),
        Public(lines=("[18.57.35]-alice: ",), time="18.57.35", sender="alice", text=""),
    ]


def test_ping_answered_never_shown() -> None:
    """ping gets pong at once, whatever else is going on, and no event."""
    chat = Chat()
    chat.feed(b"ping\n")
    assert chat.sent() == b"pong\n"
    chat.feed(b"ping\r\n")
    assert chat.sent() == b"pong\n"
    assert chat.take() == []


def test_pings_the_server_does_not_read_get_one_pong_once_it_does() -> None:
    """A server that floods pings and reads nothing makes the client hold
    no more than its transport's buffer: the pings that come meanwhile get
    one pong, and the user's lines wait, until the server reads."""
    slow = SlowReader()
    chat = Chat(transport=slow)
    chat.register_ruby()
    chat.feed(*segments(b"ping\n" * 100_000))
    held = slow.value()
    assert len(held) <= slow.bufferSize + len(b"pong\n")
    assert set(held.split(b"\n")) == {b"pong", b""}
    chat.proto.send("hello")
    assert chat.proto.waiting == 1
    assert slow.value() == held
    assert slow.drain() == held
    assert chat.sent() == b"pong\nhello\n"
    assert chat.proto.waiting == 0
    chat.proto.quit()
    assert chat.sent() == b"/quit\n"
    chat.feed(b"Deconnexion\n")
    # Closed, with the producer given back (a transport with a producer
    # would wait for it before closing).
    assert slow.producer is None
    assert chat.ending() == Disconnected(ok=True, reason="Left the chat.")


def test_a_server_that_reads_nothing_for_the_timeout_is_left() -> None:
    """The server may be slow to read what the client wrote, not stop: once
    it reads nothing for `timeout` seconds, the client leaves and says how
    many of the user's lines were never sent."""
    slow = SlowReader()
    # The pings come at once: missed_pings would take the quiet that follows
    # for a server gone.
    chat = Chat(Timings(timeout=5, missed_pings=100), transport=slow)
    chat.register_ruby()
    chat.feed(b"ping\n" * 1000)
    chat.clock.advance(4.9)
    slow.drain()  # read in time: the count starts again at the next hold
    chat.feed(b"ping\n" * 1000)
    chat.proto.send("a")
    chat.proto.send("b")
    chat.clock.advance(4.9)
    assert chat.connected
    chat.clock.advance(0.1)
    assert chat.ending() == Disconnected(
        ok=False,
        reason=(
            "The server stopped reading what the client sends (nothing read for"
            " 5 seconds): 2 lines never sent, and the last lines sent may be lost"
            " too."
        ),
    )


def test_ruby_departure_between_pings() -> None:
    """The departure line is shown; the ping in the same segment is not."""
    chat = Chat()
    chat.register_ruby("alice")
    chat.feed(RUBY_DEPARTURE)
    assert chat.take() == [
        Departure(
            lines=("[18.57.42]-Déconnection de bob",), time="18.57.42", nickname="bob"
        )
    ]
    assert chat.sent() == b"pong\n"


def test_ruby_list_with_blank_line() -> None:
    """The Ruby server's list after its unchecked nickname has a blank line:
    shown as sent, not taken for a user."""
    chat = Chat()
    chat.register_ruby("alice")
    chat.feed(RUBY_LIST_DAVE)
    (event,) = chat.take()
    assert isinstance(event, UserList)
    assert event.nicknames == ("alice", "bob", "dave")
    assert event.lines[-2:] == ("", "----------------------")


def test_ruby_quit_closes_after_deconnexion() -> None:
    """/quit, then Deconnexion: the Ruby server never closes, so the client
    does, and the session ends well."""
    chat = Chat()
    chat.register_ruby()
    chat.proto.quit()
    assert chat.sent() == b"/quit\n"
    chat.feed(RUBY_BYE)
    assert chat.sent() == b"pong\n"
    events = chat.take()
    assert events[0] == Goodbye(lines=("Deconnexion",))
    assert chat.ending() == Disconnected(ok=True, reason="Left the chat.")


def test_quit_waits_for_lines_typed_before() -> None:
    """Lines typed before /quit are sent before it."""
    chat = Chat()
    chat.register_ruby()
    chat.proto.send("a")
    chat.proto.send("/quit")
    chat.proto.send("b")
    assert chat.sent() == b"a\n/quit\n"


def test_ruby_taken_nickname() -> None:
    """'Attention ce pseudo existe deja' is a refusal; the Ruby server's
    thread is dead after it, so giving up closes the connection after a
    quiet time, without a word, and the session fails with one sentence."""
    chat = Chat(give_up=True)
    chat.feed(RUBY_WELCOME)
    chat.proto.register("alice")
    chat.feed(RUBY_PROMPT)
    chat.sent()
    chat.feed(RUBY_TAKEN)
    assert chat.of(Refused) == [
        Refused(
            lines=("Attention ce pseudo existe deja",), nickname="alice", taken=True
        )
    ]
    assert chat.proto.stage is Stage.SPENT
    assert chat.connected
    chat.clock.advance(Timings().quiet)
    assert chat.sent() == b""
    assert chat.ending() == Disconnected(
        ok=False,
        reason="The server refused the nickname 'alice': it is already taken.",
    )


def test_ruby_invalid_nickname_then_leave() -> None:
    """'Rentrez un pseudo correct' is a refusal; the server then takes any
    line for a nickname (the Ruby server without checking it), so giving up
    closes without a word."""
    chat = Chat(give_up=True)
    chat.feed(RUBY_WELCOME)
    chat.proto.send("/pseudo")
    chat.feed(RUBY_PROMPT)
    chat.proto.send("d")
    chat.sent()
    chat.feed(RUBY_INVALID)
    assert chat.of(Refused) == [
        Refused(lines=("Rentrez un pseudo correct",), nickname="d", taken=False)
    ]
    assert chat.proto.stage is Stage.PROMPTED
    assert chat.sent() == b""
    assert chat.ending() == Disconnected(
        ok=False, reason="The server refused the nickname 'd': it is not valid."
    )


def test_ruby_quit_before_registering() -> None:
    """Before registration the Ruby server answers /quit with its welcome:
    there is nothing to leave, the client closes and all is well."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    chat.proto.quit()
    assert chat.sent() == b"/quit\n"
    chat.feed(RUBY_WELCOME)
    assert chat.ending() == Disconnected(
        ok=True, reason="Left the chat before registering."
    )


def test_unsolicited_goodbye_is_a_failure() -> None:
    """Deconnexion the user did not ask for ends the session as a failure."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(b"Deconnexion\n")
    assert chat.ending() == Disconnected(
        ok=False, reason="The server ended the session."
    )


# -- projet.py ---------------------------------------------------------------------


def test_seed_registration() -> None:
    """projet.py's wording: lower-case welcome, prompt without a colon, list
    lines '=> NICK' each followed by an empty line."""
    chat = Chat()
    chat.feed(SEED_WELCOME)
    assert chat.proto.dialect is Dialect.SEED
    chat.proto.send("/pseudo")
    assert chat.sent() == b"/pseudo\n"
    chat.feed(SEED_PROMPT)
    assert chat.proto.stage is Stage.PROMPTED
    chat.proto.send("alice")
    chat.clock.advance(Timings().send_interval)
    assert chat.sent() == b"alice\n"
    chat.feed(SEED_LIST_ALICE)
    assert [type(e) for e in chat.view.events] == [
        Welcome,
        NicknamePrompt,
        Registered,
        UserList,
    ]
    assert chat.of(UserList)[0].nicknames == ("alice",)
    assert chat.shown()[-5:] == [
        "----------------------",
        "Utilisateurs en ligne:",
        "=> alice",
        "",
        "----------------------",
    ]


def test_seed_list_with_crlf_nickname() -> None:
    """'=> bob\\r\\n\\n': the CR goes, the nickname stays."""
    chat = Chat()
    chat.register_seed("alice")
    chat.feed(SEED_LIST_TWO)
    (event,) = chat.take()
    assert isinstance(event, UserList)
    assert event.nicknames == ("alice", "bob")
    assert not any("\r" in line for line in event.lines)


def test_seed_messages() -> None:
    """projet.py's public, private and CRLF-ended departure lines."""
    chat = Chat()
    chat.register_seed("bob")
    chat.feed(SEED_PUBLIC, SEED_PRIVATE, SEED_DEPARTURE)
    assert chat.take() == [
        Public(
            lines=("[18.58.8]-alice: salut tout le monde",),
            time="18.58.8",
            sender="alice",
            text="salut tout le monde",
        ),
        Private(
            lines=("[18.58.8]-message privé de alice: un secret",),
            time="18.58.8",
            sender="alice",
            text="un secret",
        ),
        Departure(
            lines=("[18.58.9]-Déconnection de bob",), time="18.58.9", nickname="bob"
        ),
    ]


def test_seed_taken_nickname_then_close() -> None:
    """'Ce pseudo existe déjà' and 'Déconnexion' in one segment, then the
    close: both lines shown, and the refusal is the reason."""
    chat = Chat()
    chat.feed(SEED_WELCOME)
    chat.proto.register("alice")
    chat.clock.advance(1)
    chat.feed(SEED_PROMPT)
    chat.feed(SEED_TAKEN)
    chat.transport.loseConnection()
    assert chat.shown()[-2:] == ["Ce pseudo existe déjà", "Déconnexion"]
    assert chat.ending() == Disconnected(
        ok=False,
        reason="The server refused the nickname 'alice': it is already taken.",
    )


def test_seed_taken_shows_both_lines() -> None:
    """The refusal and the Déconnexion after it are both shown, in order."""
    chat = Chat(give_up=True)
    chat.feed(SEED_WELCOME)
    chat.proto.register("alice")
    chat.clock.advance(1)
    chat.feed(SEED_PROMPT)
    chat.take()
    chat.feed(SEED_TAKEN)
    events = chat.take()
    assert [type(e) for e in events] == [Refused, Goodbye, Disconnected]
    assert [line for e in events for line in e.lines] == [
        "Ce pseudo existe déjà",
        "Déconnexion",
    ]


def test_seed_invalid_nickname_then_leave() -> None:
    """projet.py goes back to waiting for /pseudo after its invalid-nickname
    sentence; giving up sends /quit and waits for Deconnexion, so that
    projet.py does not spin on a dead socket."""
    chat = Chat(give_up=True)
    chat.feed(SEED_WELCOME)
    chat.proto.register("d")
    chat.clock.advance(1)
    chat.feed(SEED_PROMPT)
    chat.sent()
    chat.clock.advance(1)
    chat.feed(SEED_INVALID)
    (refused,) = chat.of(Refused)
    assert refused.taken is False
    assert refused.lines[0].startswith("le pseudo proposé est invalide")
    assert chat.proto.stage is Stage.WELCOMED
    assert chat.sent() == b"/quit\n"
    chat.feed(SEED_BYE)
    chat.transport.loseConnection()
    assert chat.ending() == Disconnected(
        ok=False, reason="The server refused the nickname 'd': it is not valid."
    )


def test_seed_quit_while_prompted() -> None:
    """Leaving while projet.py waits for a nickname: /quit (refused as a
    nickname, not shown as a refusal), then /quit again."""
    chat = Chat()
    chat.feed(SEED_WELCOME)
    chat.proto.send("/pseudo")
    chat.feed(SEED_PROMPT)
    chat.clock.advance(1)
    chat.sent()
    chat.proto.quit()
    assert chat.sent() == b"/quit\n"
    chat.feed(SEED_INVALID)
    assert chat.of(Refused) == []
    chat.clock.advance(1)
    assert chat.sent() == b"/quit\n"
    chat.feed(SEED_BYE)
    chat.transport.loseConnection()
    assert chat.ending() == Disconnected(ok=True, reason="Left the chat.")


def test_seed_lines_are_spaced() -> None:
    """projet.py takes each read for one message: the client writes one line
    at a time, send_interval apart."""
    timings = Timings(send_interval=0.05)
    chat = Chat(timings)
    chat.register_seed()
    for text in ("a", "b", "c"):
        chat.proto.send(text)
    assert chat.sent() == b"a\n"
    chat.clock.advance(0.05)
    assert chat.sent() == b"b\n"
    chat.clock.advance(0.05)
    assert chat.sent() == b"c\n"


def test_ruby_lines_are_not_spaced() -> None:
    """A server that reads lines gets them as fast as they come."""
    chat = Chat()
    chat.register_ruby()
    for text in ("a", "b", "c"):
        chat.proto.send(text)
    assert chat.sent() == b"a\nb\nc\n"


# -- Unterminated lines and several lines in a segment ----------------------------


def test_several_lines_in_one_segment() -> None:
    """Lines that arrive together are shown at once, in order."""
    chat = Chat()
    chat.register_seed("carol")
    chat.feed(SEED_PUBLIC + SEED_PRIVATE + SEED_DEPARTURE)
    assert len(chat.take()) == 3


def test_partial_line_shown_after_quiet_time() -> None:
    """A last line without its \\n is shown after `quiet` seconds without data,
    not before, and once."""
    chat = Chat()
    chat.register_seed("alice")
    chat.feed(SEED_PUBLIC + SEED_UNTERMINATED)
    assert [type(e) for e in chat.take()] == [Public]
    quiet = Timings().quiet
    chat.clock.advance(quiet * 0.9)
    assert chat.take() == []
    chat.clock.advance(quiet * 0.1)
    assert chat.take() == [
        Departure(
            lines=("[18.58.9]-Déconnection de Thread-3",),
            time="18.58.9",
            nickname="Thread-3",
        )
    ]
    chat.clock.advance(60)
    assert chat.take() == []


def test_partial_line_completed_later_is_not_shown_twice() -> None:
    """The \\n that ends a partial line already shown is not an empty line;
    what follows it is shown normally."""
    chat = Chat()
    chat.register_seed("alice")
    chat.feed(b"[1.2.3]-bob: hel")
    chat.clock.advance(1)
    assert chat.shown() == ["[1.2.3]-bob: hel"]
    chat.feed(b"\r\n[1.2.4]-bob: next\n")
    assert chat.shown() == ["[1.2.4]-bob: next"]


def test_partial_line_waits_while_data_flows() -> None:
    """Each new piece of the line restarts the quiet time."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(b"[1.2.3]-bob: a")
    chat.clock.advance(0.2)
    chat.feed(b"b")
    chat.clock.advance(0.2)
    assert chat.take() == []
    chat.feed(b"c\n")
    assert chat.shown() == ["[1.2.3]-bob: abc"]
    chat.clock.advance(1)
    assert chat.take() == []


def test_partial_line_shown_when_connection_closes() -> None:
    """A partial line is shown when the server closes, before the end."""
    chat = Chat()
    chat.register_seed("alice")
    chat.feed(SEED_UNTERMINATED)
    chat.transport.loseConnection()
    events = chat.take()
    assert [type(e) for e in events] == [Departure, Disconnected]
    assert events[-1] == Disconnected(
        ok=False, reason="The server closed the connection."
    )


def test_reading_paused_by_the_view_stops_the_transport_and_the_clocks() -> None:
    """While the view has too much to show (the terminal's backlog), the
    client reads nothing more: the transport is paused, a partial line is
    not taken for a whole one after the quiet time, and no silence counts
    as missed pings; once reading resumes, all of that starts again."""
    chat = Chat(Timings(missed_pings=3))
    chat.register_ruby()
    chat.feed(b"ping\n")
    chat.clock.advance(10)
    chat.feed(b"ping\n")
    chat.feed(b"[1.2.3]-bob: half of a li")
    chat.proto.pause_reading()
    assert chat.transport.producerState == "paused"
    chat.clock.advance(300)
    assert chat.connected
    assert chat.take() == []
    chat.proto.resume_reading()
    assert chat.transport.producerState == "producing"
    chat.feed(b"ne\n")
    assert chat.shown() == ["[1.2.3]-bob: half of a line"]
    chat.feed(b"[1.2.3]-bob: and a partial one")
    chat.clock.advance(Timings().quiet)
    assert chat.shown() == ["[1.2.3]-bob: and a partial one"]
    chat.clock.advance(30)
    assert not chat.connected
    assert "has sent nothing for 30 seconds" in chat.ending().reason


def test_reading_paused_in_the_middle_of_a_segment_takes_its_lines() -> None:
    """The view may pause reading while the client takes one segment: the
    lines of that segment are shown all the same, in order, and a partial
    line at its end waits for the rest while paused."""
    chat = Chat()
    chat.register_ruby()
    shown: list[str] = []

    class Pausing:
        def show(self, event: Event) -> None:
            shown.extend(event.lines)
            chat.proto.pause_reading()

    chat.proto.reader.view = Pausing()
    chat.feed(b"[1.2.3]-bob: one\n[1.2.3]-bob: two\n[1.2.3]-bob: thr")
    assert shown == ["[1.2.3]-bob: one", "[1.2.3]-bob: two"]
    chat.clock.advance(60)
    assert shown == ["[1.2.3]-bob: one", "[1.2.3]-bob: two"]
    chat.proto.resume_reading()
    chat.feed(b"ee\n")
    assert shown[2:] == ["[1.2.3]-bob: three"]


def test_list_block_never_closed_is_shown_after_quiet_time() -> None:
    """A user list without its closing rule is shown, as incomplete, after
    the quiet time."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(b"----------------------\nUtilisateurs en ligne:\n=>alice\n")
    assert chat.take() == []
    chat.clock.advance(Timings().quiet)
    (event,) = chat.take()
    assert isinstance(event, UserList)
    assert event.complete is False
    assert event.nicknames == ("alice",)


def test_message_inside_list_block_keeps_order() -> None:
    """A message that cuts a list block short (the Ruby server's threads
    interleave) is shown after what came before it."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(b"----------------------\nUtilisateurs en ligne:\n=>alice\n")
    chat.feed(RUBY_PUBLIC)
    chat.feed(b"----------------------\n")
    chat.clock.advance(Timings().quiet)
    assert chat.shown() == [
        "----------------------",
        "Utilisateurs en ligne:",
        "=>alice",
        "[18.57.28]-alice: salut tout le monde",
        "----------------------",
    ]


LIST_HEAD = b"----------------------\nUtilisateurs en ligne:\n"


def test_a_list_block_that_never_ends_is_cut_and_reading_goes_on() -> None:
    """A user list block longer than ListBlock.MAX_LINES is shown as far as it
    went, cut; the lines after it are shown as lines of their own."""
    chat = Chat()
    chat.register_ruby()
    limit = ListBlock.MAX_LINES
    chat.feed(*segments(LIST_HEAD + b"=>x\n" * (limit + 3)))
    chat.feed(RUBY_PUBLIC)
    events = chat.take()
    block = events[0]
    assert isinstance(block, UserList)
    assert (block.cut, block.complete) == (True, False)
    assert len(block.lines) == limit
    assert block.nicknames == ("x",) * (limit - 2)
    assert events[1:-1] == [Notice(lines=("=>x",))] * 5
    assert isinstance(events[-1], Public)


def test_a_list_block_of_long_lines_is_cut_by_its_size() -> None:
    """A list block of long lines is cut before it holds more than
    ListBlock.MAX_CHARS characters."""
    chat = Chat()
    chat.register_ruby()
    entry = "=>" + "y" * 60_000
    chat.feed(*segments(LIST_HEAD + (entry.encode() + b"\n") * 50))
    block, *rest = chat.take()
    assert isinstance(block, UserList)
    assert block.cut
    assert sum(map(len, block.lines)) <= ListBlock.MAX_CHARS
    assert len(block.lines) - 2 + len(rest) == 50
    assert rest[-1] == Notice(lines=(entry,))


def test_the_list_of_a_big_chat_is_shown_whole() -> None:
    """The bound leaves room for every user of a big chat: chatproto's
    /list of 50,000 users is one complete block."""
    names = [f"user{i}" for i in range(50_000)]
    chat = Chat()
    chat.register_ruby()
    chat.feed(*segments(wire.user_list(names, len(names))))
    (block,) = chat.take()
    assert isinstance(block, UserList)
    assert (block.cut, block.complete) == (False, True)
    assert block.nicknames == tuple(names)


def test_our_list_with_more_line() -> None:
    """chatproto's server may end a long list with '... et N autres': kept in
    the block, not taken for a user."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(
        b"----------------------\nUtilisateurs en ligne:\n=>alice\n"
        b"... et 5 autres (tapez /list pour tous les voir)\n----------------------\n"
    )
    (event,) = chat.take()
    assert isinstance(event, UserList)
    assert event.nicknames == ("alice",)
    assert len(event.lines) == 5


# -- chatproto's server -------------------------------------------------------------


def test_our_greeting_and_join_notice() -> None:
    """'Bienvenue NICK' is the registration; the join notice is its own event;
    an error line is shown as it came."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    chat.take()
    chat.proto.send("/pseudo bob")
    assert chat.sent() == b"/pseudo bob\n"
    chat.feed(OUR_GREETING, RUBY_LIST_TWO, OUR_JOIN)
    chat.feed("Erreur : alice n'est pas connecté\n".encode())
    events = chat.take()
    assert events[0] == Registered(lines=("Bienvenue bob",), nickname="bob")
    assert isinstance(events[1], UserList)
    assert events[2] == Joined(
        lines=("[9.5.3]-Connexion de carol",), time="9.5.3", nickname="carol"
    )
    assert events[3] == Notice(lines=("Erreur : alice n'est pas connecté",))


def test_leaving_at_the_nickname_prompt_closes() -> None:
    """At the prompt, the Ruby server and chatproto's both forget a closed
    connection (a /quit would be a nickname to the Ruby server): the client
    closes without a word."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    chat.proto.send("/pseudo")
    chat.feed(RUBY_PROMPT)
    chat.sent()
    chat.proto.quit()
    assert chat.sent() == b""
    assert chat.ending() == Disconnected(
        ok=True, reason="Left the chat before registering."
    )


# -- Time limits -----------------------------------------------------------------


def test_no_welcome() -> None:
    """A server that says nothing after the connection is given up on after
    the timeout, with one sentence."""
    chat = Chat(Timings(timeout=5))
    chat.clock.advance(4.9)
    assert chat.connected
    chat.clock.advance(0.1)
    assert chat.ending() == Disconnected(
        ok=False, reason="The server did not send a welcome line within 5 seconds."
    )


def test_no_prompt() -> None:
    """/pseudo with no prompt in answer: given up after the timeout."""
    chat = Chat(Timings(timeout=10))
    chat.feed(RUBY_WELCOME)
    chat.proto.register("bob")
    chat.clock.advance(10)
    assert chat.ending() == Disconnected(
        ok=False,
        reason="The server did not send the nickname prompt within 10 seconds.",
    )


def test_no_answer_to_quit() -> None:
    """A /quit the server never answers fails after the timeout, even if
    other lines come meanwhile."""
    chat = Chat(Timings(timeout=3))
    chat.register_ruby()
    chat.proto.quit()
    chat.clock.advance(2)
    chat.feed(RUBY_PUBLIC)
    chat.clock.advance(1)
    assert chat.ending() == Disconnected(
        ok=False, reason="The server did not send an answer to /quit within 3 seconds."
    )


def test_silence_after_pings_means_gone() -> None:
    """Once two pings show the interval, missed_pings intervals without a byte
    mean the server is gone; any byte restarts the count."""
    chat = Chat(Timings(missed_pings=3))
    chat.register_ruby()
    chat.feed(b"ping\n")
    chat.clock.advance(10)
    chat.feed(b"ping\n")
    chat.clock.advance(20)
    chat.feed(RUBY_PUBLIC)
    chat.clock.advance(29.9)
    assert chat.connected
    chat.clock.advance(0.1)
    assert chat.ending() == Disconnected(
        ok=False,
        reason=(
            "The server has sent nothing for 30 seconds although it pings every"
            " 10 seconds."
        ),
    )


def test_silence_without_pings_is_no_error() -> None:
    """projet.py never pings: an hour of quiet chat is just quiet."""
    chat = Chat()
    chat.register_seed()
    chat.clock.advance(3600)
    assert chat.connected
    assert chat.take() == []


def test_connection_lost_is_a_failure() -> None:
    """A close the user did not ask for ends the session as a failure."""
    chat = Chat()
    chat.register_ruby()
    chat.proto.connectionLost(Failure(ConnectionLost("Connection reset by peer")))
    chat.transport.connected = False
    ending = chat.view.events[-1]
    assert isinstance(ending, Disconnected)
    assert ending.ok is False
    assert ending.reason.startswith("The connection to the server was lost: ")
    assert chat.clock.getDelayedCalls() == []


def test_close_while_quitting_is_fine() -> None:
    """chatproto's server may close right after /quit: that is an answer."""
    chat = Chat()
    chat.register_ruby()
    chat.proto.quit()
    chat.transport.loseConnection()
    assert chat.ending() == Disconnected(ok=True, reason="Left the chat.")


# -- Harmless text ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "^[[2J"),
        ("\x1b]0;pwned\x07", "^[]0;pwned^G"),
        ("a\x00b\x7fc", "a^@b^?c"),
        ("\x9b31m", "\ufffd31m"),
        ("tab\there", "tab\there"),
        ("élève ✓", "élève ✓"),
        ("line\u2028break", "line\ufffdbreak"),
        ("\u202eevil\u202c", "\ufffdevil\ufffd"),
        ("a\u2067b\u2069", "a\ufffdb\ufffd"),
        ("zero\u200bwidth\ufeff", "zero\ufffdwidth\ufffd"),
        ("שלום\u200f!", "שלום\u200f!"),
    ],
)
def test_sanitize(raw: str, shown: str) -> None:
    """Controls become visible and inert; text, TAB and accents stay."""
    assert sanitize(raw) == shown


def test_escape_sequences_from_server_are_harmless() -> None:
    """No event carries an ESC, a BEL or a C1 control, whatever the server
    sends; invalid UTF-8 becomes U+FFFD."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(b"[1.2.3]-eve: \x1b[2J\x1b]0;title\x07\xc2\x9b0m\xff\n")
    (event,) = chat.take()
    assert isinstance(event, Public)
    assert event.text == "^[[2J^[]0;title^G\ufffd0m\ufffd"
    assert all(ord(c) >= 0x20 for c in event.lines[0])


def test_bidirectional_controls_from_server_are_replaced() -> None:
    """The embeddings, overrides and isolates that make a line read
    backwards reach no terminal: each becomes U+FFFD, as on the server."""
    controls = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
    chat = Chat()
    chat.register_ruby()
    chat.feed(f"[1.2.3]-eve: {controls}txt.exe\n".encode())
    (event,) = chat.take()
    assert isinstance(event, Public)
    assert event.text == "\ufffd" * 9 + "txt.exe"


def test_unknown_line_shown_as_it_came() -> None:
    """A line the client does not know is a Notice with the line itself."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(b"Le serveur s'arr\xc3\xaate, \xc3\xa0 bient\xc3\xb4t\n")
    assert chat.take() == [Notice(lines=("Le serveur s'arrête, à bientôt",))]


def test_overlong_line_is_cut_and_reading_goes_on() -> None:
    """A line longer than MAX_LENGTH is shown cut, the rest of it dropped,
    and the next line read as usual."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(b"x" * (ChatClientProtocol.MAX_LENGTH + 10))
    chat.feed(b"y" * 1000)
    chat.feed(b"yyy\n[1.2.3]-bob: next\n")
    events = chat.take()
    assert isinstance(events[0], Notice)
    assert events[0].lines[0].endswith("bytes, cut)")
    assert len(events[0].lines[0]) < 300
    assert events[1:] == [
        Public(lines=("[1.2.3]-bob: next",), time="1.2.3", sender="bob", text="next")
    ]


def test_an_endless_line_is_not_given_a_size_it_does_not_have() -> None:
    """10 MiB with no newline, read as TCP reads them: the notice says the
    line passed the limit, not a size it made up (it said 112640 bytes)."""
    chat = Chat()
    chat.register_ruby()
    for piece in segments(b"A" * 10 * 2**20 + b"\n[1.2.3]-bob: next\n"):
        chat.feed(piece)
    notice, after = chat.take()
    limit = ChatClientProtocol.MAX_LENGTH
    assert notice == Notice(lines=("A" * 200 + f"… (over {limit} bytes, cut)",))
    assert after.lines == ("[1.2.3]-bob: next",)
    chat.feed(b"B" * (limit + 1) + b"\n")
    assert chat.shown() == ["B" * 200 + f"… ({limit + 1} bytes, cut)"]


class LingeringTransport(StringTransport):
    """A transport whose close, like TLS's, waits for the other side."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def test_a_close_that_lingers_is_cut() -> None:
    """After Deconnexion the client closes; if the close hangs (TLS waiting
    for the server's close_notify), it is cut after `linger` seconds."""
    clock = Clock()
    view = Recorder()
    proto = ChatClientProtocol(view, clock, Timings(linger=2))
    transport = LingeringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(RUBY_WELCOME)
    proto.quit()
    proto.dataReceived(b"Deconnexion\n")
    assert transport.disconnecting
    clock.advance(1.9)
    assert not transport.aborted
    clock.advance(0.1)
    assert transport.aborted
