"""What each line of the server means, and how the session ends.

A L{ServerReader} takes the server's lines (sanitised, without the pings,
which are the connection's) and recognises which server it talks to (the
L{Dialect}: chatproto's, the Ruby C{server.rb}, C{projet.py}), moves the
L{Registration} on, assembles the user list block (L{ListBlock}), tunes
the pacing of the L{Outbox} to the server, follows the user's current room
(chatproto's C{Salon courant : #NAME}), and shows each line to the view
as an event. What a line asks of the connection (close, leave, wait no
more), it asks through L{ClientConnection}, which
L{chatproto.client.protocol.ChatClientProtocol} is.

An L{Outcome} holds how the session ends, once something has decided it:
the verdict the last L{Disconnected} event carries.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from chatproto.client.events import (
    ChatView,
    CurrentRoom,
    Disconnected,
    Event,
    NicknamePrompt,
    Notice,
    PasswordPrompt,
    Refused,
    Registered,
    Welcome,
)
from chatproto.client.pacing import Outbox
from chatproto.client.registration import Registration, Stage
from chatproto.client.servers import (
    ANSWERS,
    CURRENT_ROOM,
    ERROR,
    FLOOD,
    GOODBYES,
    GREETING,
    INVALID_RUBY,
    INVALID_SEED_START,
    PASSWORD_PROMPT,
    PROMPTS,
    RULE,
    TAKEN,
    THROTTLED,
    UNAVAILABLE,
    WELCOMES,
    Dialect,
    chat_event,
    room_event,
)
from chatproto.client.userlist import ListBlock

__all__ = ["ClientConnection", "Outcome", "ServerReader"]


class Outcome:
    """How the session ends: the verdict of its last L{Disconnected}, once
    something decided it, or judged from how the connection was lost."""

    def __init__(self) -> None:
        #: C{(ok, reason)} once decided.
        self.verdict: tuple[bool, str] | None = None

    def settle(self, ok: bool, reason: str) -> None:
        """Decide the verdict, unless it is decided already."""
        if self.verdict is None:
            self.verdict = (ok, reason)

    def final(self, reason: Failure, left: bool, undelivered: int) -> Disconnected:
        """The last event: the verdict, or else what the loss of the
        connection (for C{reason}) means, the user having C{left} or not;
        C{undelivered} lines make a clean end a failure."""
        ok, why = self.verdict or _judge_loss(reason, left)
        if ok and undelivered:
            # Left cleanly, yet the server refused some lines: a failure.
            n = undelivered
            lines = f"{n} line{' was' if n == 1 else 's were'}"
            why = f"{why.removesuffix('.')}, but {lines} not delivered"
            ok, why = (
                False,
                why + f" (the server refused {'it' if n == 1 else 'them'}).",
            )
        return Disconnected(ok=ok, reason=why)


def _judge_loss(reason: Failure, left: bool) -> tuple[bool, str]:
    if left:
        return True, "Left the chat."
    if reason.check(ConnectionDone):
        return False, "The server closed the connection."
    return False, f"The connection to the server was lost: {_describe(reason)}."


def _describe(reason: Failure) -> str:
    message = reason.getErrorMessage().strip().rstrip(".")
    return message or type(reason.value).__name__


class ClientConnection(Protocol):
    """What a L{ServerReader} asks of the connection."""

    #: C{/quit} was written: only C{Deconnexion} or the close answers it.
    quit_sent: bool

    def answered(self) -> None:
        """A line answered what the connection waited for, if anything."""

    def close(self) -> None:
        """Close the connection, politely."""

    def give_up(self, reason: str | None = None) -> None:
        """Leave now, as a failure."""

    def goodbye(self, text: str) -> None:
        """The server said C{Deconnexion} (C{text})."""

    def flooded(self, text: str) -> None:
        """The server cut the client for flooding (C{text})."""


class ServerReader:
    """Recognising what each of the server's lines means, and showing it."""

    def __init__(
        self,
        view: ChatView,
        registration: Registration,
        outbox: Outbox,
        outcome: Outcome,
        connection: ClientConnection,
    ) -> None:
        self.view = view
        self.registration = registration
        self.outbox = outbox
        self.outcome = outcome
        self.connection = connection
        #: Which server this is, as far as its lines have told so far.
        self.dialect = Dialect.UNKNOWN
        #: Lines of the user the server refused: answered with an error
        #: line, or before registration with the welcome again.
        self.undelivered = 0
        #: The user list block being assembled, if one is open.
        self.block: ListBlock | None = None
        #: The user's current room (C{#salle}), as the server last said it
        #: (C{Salon courant : #salle}); None until it has, and always with
        #: a server that has no rooms.
        self.room: str | None = None

    def line(self, text: str) -> None:
        """One line of the server, sanitised, but a ping."""
        if self.block is not None and self.block.take(text):
            if self.block.complete:
                self.flush_block()
            return
        self.flush_block()
        self._handle(text)

    def flush_block(self) -> None:
        """Show the open user list block, as far as it went."""
        block, self.block = self.block, None
        if block is not None:
            self.view.show(block.event())

    def _handle(self, text: str) -> None:
        lines = (text,)
        registration = self.registration
        if registration.stage is Stage.CONNECTED:
            # Whatever its wording, the first line is the server's greeting.
            registration.stage = Stage.WELCOMED
        registered = registration.stage is Stage.REGISTERED
        if text in WELCOMES:
            if self._welcome(text):
                return
        elif text in PROMPTS and not registered:
            registration.stage = Stage.PROMPTED
            self.view.show(NicknamePrompt(lines=lines))
        elif text == PASSWORD_PROMPT and registration.stage is Stage.NICK_SENT:
            registration.asked_password()
            self.view.show(PasswordPrompt(lines=lines))
        elif (
            not registered
            and (
                text == INVALID_RUBY
                or text.startswith(INVALID_SEED_START)
                or text in TAKEN
            )
        ) or (registration.stage is Stage.NICK_SENT and THROTTLED.fullmatch(text)):
            self._refused(text)
        elif text in GOODBYES:
            self.connection.goodbye(text)
        elif text == FLOOD:
            self.connection.flooded(text)
            return
        elif text == UNAVAILABLE and registration.stage is Stage.NICK_SENT:
            self._unavailable(text)
        elif not registered and (greeting := GREETING.fullmatch(text)):
            self._registered(greeting["nick"], lines)
        elif RULE.fullmatch(text):
            if registration.stage is Stage.NICK_SENT or (
                registration.stage is Stage.WELCOMED and registration.candidate
            ):
                self._registered(registration.candidate, ())
            self.block = ListBlock(text)
        elif registered and (room := self._room_event(text)):
            self.view.show(room)
        elif event := chat_event(text, registration.nickname):
            self.view.show(event)
        else:
            if registration.stage is Stage.ASKED:
                # Another wording of the prompt: the server waits for a nickname.
                registration.stage = Stage.PROMPTED
            if ERROR.match(text) and text not in ANSWERS:
                self.undelivered += 1
            self.view.show(Notice(lines=lines))
        if not self.connection.quit_sent:
            # Any line answers the welcome, /pseudo or the nickname; only
            # Deconnexion (or the close) answers /quit.
            self.connection.answered()

    def _room_event(self, text: str) -> Event | None:
        """The event of a line about a room, once this server is known to
        have rooms: chatproto's (its C{Bienvenue NICK}), and only after its
        first C{Salon courant} line. Before that, and always with the Ruby
        server or projet.py, every line means what it always meant: a Ruby
        nickname may be C{#a b}, whose public lines look like a room's."""
        if self.dialect is not Dialect.CHATPROTO:
            return None
        if current := CURRENT_ROOM.fullmatch(text):
            self.room = current["room"]
            return CurrentRoom(lines=(text,), room=self.room)
        if self.room is None:
            return None
        return room_event(text)

    def _welcome(self, text: str) -> bool:
        """Tell whether this welcome answers a line sent before registering
        (and so not what the client waits for)."""
        if self.dialect is not Dialect.CHATPROTO:
            self.dialect = WELCOMES[text]
        self.outbox.spaced = self.dialect is Dialect.SEED
        if self.dialect is Dialect.SEED:
            self.outbox.pacing = False  # spaced by send_interval instead
        self.view.show(Welcome(lines=(text,)))
        if self.registration.stage is Stage.REGISTERED:
            return False
        if self.registration.early:
            # The answer to a line sent before registering (docs/protocol.md,
            # "Connecting and registering"): nobody received it. The server
            # answers in order, so where the registration stands does not
            # change.
            self.registration.early -= 1
            self.undelivered += 1
            return True
        if self.connection.quit_sent:
            # The Ruby server answers every line but /pseudo with its welcome
            # before registration: there is no session there to end.
            self.outcome.settle(True, "Left the chat before registering.")
            self.connection.close()
        else:
            self.registration.stage = Stage.WELCOMED
        return False

    def _refused(self, text: str) -> None:
        taken = text in TAKEN
        why = None
        if THROTTLED.fullmatch(text):
            # Tried again on a new connection, as after a taken nickname.
            taken, why = True, "too many password tries"
        elif self.registration.password_sent:
            # chatproto's server answers /pseudo NICK PASSWORD for a NICK
            # nobody protects as if the whole line were the nickname.
            why = (
                "it is in use, or the password is wrong"
                if taken
                else "it is not valid, or no password protects it"
            )
        nickname = self.registration.refused(taken, self.dialect)
        if nickname == "/quit":
            # The answer to the /quit that projet.py took for a nickname.
            self.view.show(Notice(lines=(text,)))
            return
        event = Refused(lines=(text,), nickname=nickname, taken=taken, why=why)
        self.outcome.verdict = (False, event.sentence)
        self.view.show(event)

    def _unavailable(self, text: str) -> None:
        """The cluster could not register the nickname: the server waits
        for another try, which may succeed once the outage ends."""
        nickname = self.registration.unavailable()
        self.view.show(Notice(lines=(text,)))
        delay = self.registration.retry_delay()
        if delay is None:
            self.outcome.verdict = (False, self.registration.outage(nickname))
            self.connection.give_up()
            return
        # The nickname goes first, after the wait (which holds the queue).
        self.outbox.queue.appendleft(nickname)
        self.outbox.hold(delay)

    def _registered(self, nickname: str, lines: tuple[str, ...]) -> None:
        self.registration.registered(nickname)
        self.outcome.verdict = None
        if lines and self.dialect is Dialect.RUBY:
            self.dialect = Dialect.CHATPROTO
        elif not lines and self.dialect is Dialect.RUBY:
            # Only the user list: the Ruby server, which has no flood control.
            self.outbox.pacing = False
        self.view.show(Registered(lines=lines, nickname=nickname))
