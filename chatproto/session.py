"""One user's session, whatever carries its lines (TCP or a WebSocket).

A L{Session} is fed one line at a time by its front end (the TCP line
protocol, L{chatproto.server.ChatServerProtocol}, or the WebSocket one) and
writes bytes back through a L{Connection}. It holds the user's state
(welcomed, naming, joining, chatting, gone) and dispatches each line by it;
its lines wait their turn in its L{Inbox} (chatproto/inbox.py: flood
control), and the commands of docs/protocol.md are the functions of the
command table of chatproto/commands.py (L{chatproto.commands.COMMANDS}),
which the server hands it (L{Server.commands}). It knows nothing of
sockets.
What users share (who is in the chat, the public lines, the limits per
address) is the server's: the L{Server} interface below, which
L{chatproto.server.ChatFactory} implements.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import wire
from chatproto.accounts import Account, Unavailable
from chatproto.inbox import STILL_TOO_LONG, TOO_LONG, Inbox
from chatproto.logs import Burst, TurnLog
from chatproto.operators import Throttled
from chatproto.registry import (
    ClusterUnreachable,
    NicknameTaken,
    Reach,
    Registry,
    valid_nickname,
)
from chatproto.text import clean

if TYPE_CHECKING:
    from chatproto.accounts import Protection
    from chatproto.config import ServerConfig
    from chatproto.history import History
    from chatproto.metrics import Metrics
    from chatproto.positions import Positions


class Rooms(Protocol):
    """What the commands use of the server's named rooms
    (L{chatproto.rooms.Rooms})."""

    def history(self, session: Session) -> History:
        """The history of the session's current room."""

    def join(self, session: Session, argument: str) -> None: ...
    def part(self, session: Session, argument: str) -> None: ...
    def list_rooms(self, session: Session, argument: str) -> None: ...
    def list_names(self, session: Session) -> None: ...
    def topic(self, session: Session, argument: str, operator: bool) -> None: ...


log = Logger()

# The users cut for their own doing, logged once per reactor turn
# (chatproto/logs.py), before their departures.
SLOW_READER = Burst(
    log,
    "slow_reader",
    "{nick} stopped reading ({backlog} bytes pending): disconnected",
    "{count} stopped reading, disconnected: {names}",
    "{nick} ({address}, {backlog} bytes pending)",
    ("nick", "backlog"),
    order=1,
)
FLOODED = Burst(
    log,
    "flood",
    "{nick} flooded: disconnected",
    "{count} flooded, disconnected: {names}",
    "{nick} ({address})",
    ("nick",),
    order=1,
)


class ChatError(Exception):
    """A request the server refuses; its text is sent to the requester."""


class _Protected(Exception):
    """The nickname claimed is protected: it was given back, and its
    password is asked for."""

    def __init__(self, nick: str) -> None:
        super().__init__(nick)
        self.nick = nick


class _Gone(Exception):
    """The user left while its nickname was looked up: nothing is claimed."""


class State(enum.Enum):
    WELCOMED = "welcomed"  # connected, has not asked for a nickname
    NAMING = "naming"  # sent /pseudo: the next line is the nickname
    PASSWORD = "password"  # the nickname is protected: the next line is its password
    JOINING = "joining"  # the registry is deciding on the nickname
    CHATTING = "chatting"  # registered
    GONE = "gone"  # left, kicked or disconnected: nothing more is written


# What the per-line paths compare a state with: on Python 3.11 reading a
# member off its enum class costs some 100 ns (a module global: 10 ns), and
# a line is compared three to eight times on its way in.
GONE: Final = State.GONE
CHATTING: Final = State.CHATTING


class Connection(Protocol):
    """What a session needs from its front end: an ordered way out.

    L{chatproto.output.Output} is the TCP one."""

    def open(self, owner: Session) -> None:
        """The session is admitted: it writes from now on."""

    def write(self, data: bytes) -> None:
        """Send bytes (whole lines), after those written before."""

    def close(self, *lines: bytes) -> None:
        """Send these last lines, then close."""

    def abort(self) -> None:
        """Close at once, dropping what is not sent."""

    def talking(self) -> None:
        """The user talks: from now on, send each write at once."""


class Waiting(Protocol):
    """A user's named rooms (chatproto/rooms.py's Member, in the session's
    C{rooms} slot), each a log of lines with the user's place in it:
    whatever writes to the user writes first the lines of its rooms and
    the lobby's, merged in the order made (chatproto/fanout.py)."""

    def owed(self) -> bool:
        """Whether one of its rooms has lines it has not been given."""

    def take(self, lobby: tuple[Any, int] | None) -> bytes:
        """Its rooms' lines not given yet, merged with the lobby's from
        C{lobby} (chatproto/fanout.py's Log, which imports this module, and
        the user's place), handed to the caller to write."""


class Server(Protocol):
    """All a session knows of the chat it is in: the server's
    L{chatproto.server.ChatFactory}, which hands the calls about the chat
    to its L{chatproto.room.Room}."""

    config: ServerConfig
    clock: IReactorTime
    metrics: Metrics

    @property
    def registry(self) -> Registry: ...
    @property
    def history(self) -> History: ...
    @property
    def commands(self) -> Mapping[str, Command]:
        """Every command, by name (chatproto/commands.py), and C{msg}."""

    @property
    def protection(self) -> Protection:
        """The protected nicknames (chatproto/accounts.py)."""

    @property
    def positions(self) -> Positions:
        """The users' read positions, for /unread (chatproto/positions.py)."""

    @property
    def rooms(self) -> Rooms:
        """The named rooms (chatproto/rooms.py)."""

    def admit(self, session: Session) -> bytes | None:
        """Count a new session in, or the line that says why not."""

    def tokens_for(self, host: str | None, now: float) -> float:
        """The flood tokens a new session from C{host} starts with."""

    def remember_tokens(self, host: str | None, tokens: float, at: float) -> None:
        """What a closing session from C{host} left of its flood burst."""

    def registered(self, session: Session) -> None:
        """The session has a nickname now (it is no squatter)."""

    def catch_up(self, session: Session) -> None:
        """Write to the session the public lines it has not been given."""

    def join(self, session: Session, greeting: bytes = b"") -> None:
        """The session registered: it joins the chat, and is sent
        C{greeting} then the user list."""

    def depart(
        self, session: Session, reach: Reach = Reach.EVERYWHERE, reason: str = "lost"
    ) -> None:
        """A user left; C{reason} is one of metrics.DEPARTURES."""

    def forget(self, session: Session) -> None: ...
    def say(self, sender: Session, text: str) -> None: ...
    def whisper(self, sender: str, target: str, text: str) -> Deferred[bool]: ...
    @property
    def moderation(self) -> Moderator: ...
    @property
    def user_log(self) -> TurnLog:
        """The log of the events about users (chatproto/logs.py)."""


class Moderator(Protocol):
    """What a session uses of the server's moderation
    (L{chatproto.moderation.Moderation}): one method a command."""

    def is_operator(self, session: Session, command: str) -> bool:
        """Whether C{session} may use C{command}, an operator's; if not, it
        is told so."""

    def op(self, session: Session, argument: str) -> Deferred[Any] | None: ...
    def kick(self, session: Session, argument: str) -> None: ...
    def ban(self, session: Session, argument: str) -> None: ...
    def unban(self, session: Session, argument: str) -> None: ...
    def list_bans(self, session: Session, argument: str) -> None: ...
    def operates(self, session: Session) -> bool:
        """Whether C{session} is an operator (nothing said if not)."""


class Session:
    """One user through its life: admitted, named, chatting, gone; each of
    its lines dispatched by its state.

    Lines come in through L{line_received} (and L{line_too_long},
    L{skipped} for lines past max_line) and wait their turn in its
    L{Inbox}, which flood control lets out (chatproto/inbox.py). Pongs that
    answer a ping skip the inbox. Before registering, a user may ask for a
    nickname, /help or /quit (a protected nickname asks for its password:
    the next line); once registered, its lines are public lines, private
    ones (C{msg}), or the commands of the server's table (chatproto/commands.py).

    Invariants: nothing is written once the state is GONE; C{seen} (the
    number of the last public line this user was given, -1 when not in the
    chat) is written by the room's L{FanOut} only; C{rooms} (its named
    rooms and their lines waiting for it, None while it never joined one)
    by chatproto/rooms.py only.
    """

    # One per connection, 10,000 of them: slots, not a dictionary each.
    __slots__ = (
        "_asked",
        "_busy",
        "_draining",
        "_ended",
        "_talking",
        "connection",
        "host",
        "inbox",
        "missed_pings",
        "nick",
        "rooms",
        "seen",
        "server",
        "state",
    )

    # Which front end carries it, for the metrics by front end: a WebSocket
    # session's class says "web" (a class attribute: no slot per session).
    front_end: ClassVar[str] = "tcp"

    def __init__(
        self, server: Server, connection: Connection, host: str | None
    ) -> None:
        self.server = server
        self.connection = connection
        self.host = host  # its source(): what the per-address limits count
        self.nick: str | None = None
        self.state = State.WELCOMED
        self.missed_pings = 0
        self.seen = -1
        self.rooms: Waiting | None = None
        self.inbox = Inbox(server)
        self._busy = False  # a registry call is under way: lines wait for it
        self._draining = False
        self._ended = False  # the input ended: it quits after its lines
        self._talking = False
        self._asked: str | None = None  # the protected nickname of PASSWORD

    @property
    def waiting(self) -> tuple[int, int]:
        """The lines waiting their turn, and their bytes."""
        return self.inbox.waiting

    # Life

    def start(self) -> None:
        """The front end is connected: admit the user, or say why not."""
        server = self.server
        refusal = server.admit(self)
        if refusal is not None:
            self.state = State.GONE
            self.connection.close(refusal)
            return
        config = server.config
        now = server.clock.seconds()
        self.inbox.start(server.tokens_for(self.host, now), now)
        self.connection.open(self)
        if config.nodelay == "all":
            self._talking = True
            self.connection.talking()
        self.send(wire.WELCOME)

    def lost(self) -> None:
        """The front end is disconnected, for whatever reason."""
        self._leave(reason="lost")
        left = self.inbox.close()
        if left is not None:  # admitted: what it spent of its burst stays spent
            self.server.remember_tokens(self.host, *left)
        self.state = State.GONE
        self.server.forget(self)

    def send(self, data: bytes) -> None:
        """Write bytes to this user, unless it is gone.

        Public lines this user has not been given yet go first, so that it
        sees every line in the order the server made them."""
        if self.state is GONE:
            return
        self.server.catch_up(self)
        self.connection.write(data)

    def overflowed(self, backlog: int) -> None:
        """Its reader stopped taking what is sent (see Output)."""
        if self.state is GONE:
            return
        self.server.user_log.add(
            SLOW_READER, nick=self.nick, address=self.host, backlog=backlog
        )
        self.drop("slow_reader")

    def drop(self, reason: str = "lost") -> None:
        """Disconnect at once, without flushing (a dead or stuck peer);
        C{reason}: why it leaves (metrics.DEPARTURES)."""
        self._leave(reason=reason)
        self.state = State.GONE
        self.connection.abort()

    def say_goodbye(
        self, *lines: bytes, reach: Reach = Reach.EVERYWHERE, reason: str = "quit"
    ) -> None:
        """Leave the chat with these last lines, the departure announced as
        far as C{reach} says (a cluster may have announced it already);
        C{reason}: why it leaves (metrics.DEPARTURES)."""
        self._leave(reach, reason)
        self._close(*lines)

    def make_room(self) -> None:
        """This user never registered and is the oldest such: it is closed,
        told why, so that a newcomer gets in (see Admission.admit). One
        already closing just goes."""
        if self.state is not GONE:
            self._close(wire.notice(wire.MADE_ROOM))

    def _close(self, *lines: bytes) -> None:
        """Say the last lines, then close once they are sent (or too late)."""
        self.state = State.GONE
        self.connection.close(*lines)

    def _leave(self, reach: Reach = Reach.EVERYWHERE, reason: str = "lost") -> None:
        if self.state is CHATTING:
            self.state = State.GONE
            self.server.depart(self, reach, reason)

    # Input: lines, over-long lines, the end of input

    def line_received(self, line: bytes) -> None:
        """A line (without its newline) from the user."""
        if self.state is GONE:
            return
        if line == b"pong" and self.missed_pings:
            self.missed_pings = 0  # the answer to a ping: not counted
            return
        self.inbox.add(line)
        self._queued()

    def line_too_long(self, size: int) -> None:
        """A line of C{size} bytes, past max_line: not kept. It takes its
        turn like a line (one entry that gets the error line) and costs one
        token more per max_line bytes beyond the first."""
        if self.state is GONE:
            return
        self.inbox.too_long(size)
        self._queued()

    def skipped(self, size: int) -> None:
        """C{size} more bytes of an over-long line that has not ended yet,
        skipped: each max_line of them costs a token, so that endless lines
        are bounded by flood control too."""
        if self.state is GONE:
            return
        if self.inbox.skipped(size):
            self._queued()

    def charge(self) -> None:
        """A frame that carries no line came from the user (a WebSocket
        ping or pong): it costs a token as a line does, so that such frames
        are bounded by flood control too (each costs the server as much as
        a short line)."""
        if self.state is GONE:
            return
        self.inbox.charge(1)
        self._queued()

    def input_ended(self) -> None:
        """The user's input is over (a half-closed connection): as if it had
        typed /quit after its last line, which still goes out first, at the
        flood rate."""
        if self.state is GONE:
            return
        self._ended = True
        self._drain()

    def _queued(self) -> None:
        """Something joined the inbox: let the bucket drain it, and cut a
        user whose waiting lines pass either bound."""
        self._drain()
        inbox = self.inbox
        if inbox.lines and self.state is not GONE and inbox.flooded():
            self.server.user_log.add(FLOODED, nick=self.nick, address=self.host)
            self.say_goodbye(wire.FLOODED, reason="flood")

    def _drain(self) -> None:
        """Handle each line the bucket lets out, while no registry call is
        under way; then, once the input ended and nothing waits, quit."""
        if self._draining:  # a handler finished synchronously: the loop goes on
            return
        self._draining = True
        inbox = self.inbox
        resume = self._drain
        try:
            while inbox.lines and not self._busy and self.state is not GONE:
                line = inbox.take(resume)
                if line is None:
                    break
                self._handle(line)
        finally:
            self._draining = False
        ended = self._ended and not inbox.lines and not self._busy
        if ended and self.state is not GONE:
            self.say_goodbye(wire.BYE, reason="quit")

    # Dispatch, by state

    def _handle(self, raw: bytes) -> None:
        if raw == b"pong":  # unasked for: it counted as a line, and does nothing
            return
        if raw == TOO_LONG:
            self.send(wire.notice(wire.TOO_LONG.format(self.server.config.max_line)))
            return
        if raw == STILL_TOO_LONG:
            return
        text = clean(raw)
        try:
            if self.state is CHATTING:
                self._chat(text)
            elif self.state is State.NAMING:
                self._naming(text)
            elif self.state is State.PASSWORD:
                self._password(text)
            else:
                self._welcomed(text)
        except ChatError as e:
            self.send(wire.notice(str(e)))
        except Exception:
            self._unexpected(Failure())

    def _welcomed(self, text: str) -> None:
        command, _, argument = text.strip().partition(" ")
        if command == "/pseudo":
            self._ask_nickname(argument.strip())
        elif command == "/quit":
            self.say_goodbye(wire.BYE, reason="quit")
        elif command == "/help":
            self.send(wire.HELP)
        else:
            self.send(wire.WELCOME)

    def _naming(self, text: str) -> None:
        """The answer to the prompt: a nickname, or a command (C{/pseudo NICK}
        is the shortcut here too, as after a refused nickname)."""
        nick = text.strip()
        if nick.partition(" ")[0] in ("/quit", "/pseudo", "/help"):
            self._welcomed(nick)
        else:
            self._claim(nick)

    def _chat(self, text: str) -> None:
        if not self._talking and self.server.config.nodelay == "talkers":
            self._talking = True
            self.connection.talking()
        stripped = text.strip()
        if stripped.startswith("/"):
            # any blank ends the command (a tab too): the client and the
            # page hide what follows /register and /op as a password, and
            # the unknown command's error would show it
            command, *rest = stripped.split(None, 1)
            argument = rest[0] if rest else ""
            entry = self.server.commands.get(command)
            if entry is None:
                raise ChatError(wire.UNKNOWN_COMMAND.format(command))
            if entry.operators_only and not self.server.moderation.is_operator(
                self, command
            ):
                return
            entry.handler(self, argument.strip())
        elif text.startswith("msg "):
            self.server.commands["msg"].handler(self, text[4:])
        elif stripped:
            self.server.say(self, text)

    def _unexpected(self, failure: Failure) -> None:
        log.failure("unexpected error for {nick}", failure, nick=self.nick)
        self.send(wire.notice(wire.INTERNAL_ERROR))

    def send_names(self, names: tuple[list[str], int]) -> None:
        """Send the user list (the answer to /list, and on joining)."""
        self.send(wire.user_list(*names))

    # Registration: a nickname, claimed from the registry; a protected one
    # once its password is checked (chatproto/accounts.py)

    def _ask_nickname(self, argument: str) -> None:
        """C{/pseudo}, C{/pseudo NICK} or C{/pseudo NICK PASSWORD}."""
        nick, _, password = argument.partition(" ")
        if not argument:
            self.state = State.NAMING
            self.send(wire.PROMPT)
        elif password and valid_nickname(nick):
            self.state = State.JOINING
            d = self.server.protection.check(self.host, nick, password.strip())
            d.addCallbacks(
                self._checked_in_one_line, self._not_claimed, callbackArgs=(nick,)
            )
            self.wait_for(d)
        else:
            self._claim(argument)

    def _claim(self, nick: str) -> None:
        """Claim C{nick}, unless it is protected: then its password is asked
        for first, and nobody holds the nickname meanwhile (a stranger
        asking for it again and again while the accounts are slow to read
        must not make its owner's own claim find it taken). A nickname the
        book knows without a read that nobody protects, nor a look-alike of
        it, is claimed at once (most are: a herd's registrations). In a
        cluster, the lookup waits for a node that is joining, as the claim
        does (chatproto/cluster_roles.py, ClusterAccounts)."""
        self.state = State.NAMING
        if not valid_nickname(nick):
            self.server.metrics.refused("nickname_invalid", self.host)
            self.send(wire.INVALID_NICK)
            return
        self.state = State.JOINING
        protection = self.server.protection
        d: Deferred[str]
        if protection.surely_free(nick):  # nothing to read: claimed at once
            d = self.server.registry.claim(nick)
        else:
            d = protection.find(nick).addCallback(self._unless_protected, nick)
        d.addCallbacks(self._claimed, self._not_claimed)
        self.wait_for(d)

    def _unless_protected(self, account: Account | None, nick: str) -> Deferred[str]:
        """The registry's claim of C{nick}, unless an account protects it."""
        if account is not None:
            raise _Protected(nick)
        if self.state is not State.JOINING:  # disconnected while looking up
            raise _Gone()
        alike = self.server.protection.look_alike(nick)
        if alike is not None:  # aIice when alice is protected: is it still?
            d = self.server.protection.find(alike)
            return d.addCallback(self._unless_alike_protected, nick)
        return self.server.registry.claim(nick)

    def _unless_alike_protected(
        self, account: Account | None, nick: str
    ) -> Deferred[str]:
        """C{nick} looks like a protected nickname: taken, as the nickname
        itself would be by anyone without its password (nobody passes for
        its owner, nor keeps the owner out by holding its look in the
        registry); claimed if that protection has lapsed."""
        if account is not None:
            raise NicknameTaken(nick)
        if self.state is not State.JOINING:
            raise _Gone()
        return self.server.registry.claim(nick)

    def _password(self, text: str) -> None:
        """The answer to the password prompt (spaces around it dropped,
        as /register drops them). C{/quit} is no password (6 characters at
        least, commands.py): the user leaves, as at the nickname prompt,
        rather than be told the nickname is taken and logged for a wrong
        password."""
        if text.strip() == "/quit":
            self._asked = None
            self.say_goodbye(wire.BYE, reason="quit")
            return
        nick = self._asked
        assert nick is not None
        self._asked = None
        self.state = State.JOINING
        d = self.server.protection.check(self.host, nick, text.strip())
        d.addCallbacks(
            self._checked, self._not_checked, callbackArgs=(nick,), errbackArgs=(nick,)
        )
        self.wait_for(d)

    def _not_checked(self, failure: Failure, nick: str) -> None:
        """The answer to the prompt was not checked (too many tries, or the
        accounts cannot be read now): said so, and the next line is the
        password of C{nick} again. A user who
        types the password again after the wait (a Ruby client stays
        connected) would have it taken for a nickname, shown to all."""
        self._not_claimed(failure)
        if failure.check(Throttled, Unavailable) and self.state is State.NAMING:
            self.state = State.PASSWORD
            self._asked = nick

    def _checked_in_one_line(
        self, right: bool | None, nick: str
    ) -> Deferred[None] | None:
        """C{/pseudo NICK PASSWORD} checked: a NICK nobody protects is
        answered as before, when the whole line was taken for a nickname."""
        if right is None and self.state is State.JOINING:
            self.state = State.NAMING
            self.server.metrics.refused("nickname_invalid", self.host)
            self.send(wire.INVALID_NICK)
            return None
        return self._checked(right, nick)

    def _checked(self, right: bool | None, nick: str) -> Deferred[None] | None:
        """The password of C{nick} checked (None: nobody protects it now):
        right, the nickname is claimed; wrong, TAKEN."""
        if self.state is not State.JOINING:  # disconnected while waiting
            return None
        if right is False:
            self.state = State.NAMING
            self.server.metrics.refused("nickname_taken", self.host, logged=False)
            self.send(wire.TAKEN)
            return None
        d = self.server.registry.claim(nick)
        return d.addCallbacks(self._owner_claimed, self._not_claimed)

    def _owner_claimed(self, nick: str) -> None:
        self._claimed(nick)
        if self.state is CHATTING:
            self.server.protection.arrived(nick)

    def _claimed(self, nick: str) -> None:
        server = self.server
        if self.state is not State.JOINING:  # disconnected while waiting
            server.registry.release(nick)
            return
        self.nick = nick
        server.registered(self)
        self.state = State.CHATTING
        # The welcome goes with the user list, in one write (one system call
        # less a registration); if that write cuts it (it stopped reading),
        # it leaves as any member does.
        server.join(self, wire.notice(f"Bienvenue {nick}"))

    def _not_claimed(self, failure: Failure) -> None:
        """The nickname is not given (yet): say why, and wait for another
        try, or for the password."""
        if self.state is not State.JOINING:
            return
        self.state = State.NAMING
        error = failure.value
        if isinstance(error, _Protected):
            self.state = State.PASSWORD
            self._asked = error.nick
            self.send(wire.notice(wire.PASSWORD_PROMPT))
        elif isinstance(error, NicknameTaken):
            self.server.metrics.refused("nickname_taken", self.host)
            self.send(wire.TAKEN)
        elif isinstance(error, Throttled):
            self.send(wire.notice(wire.OP_THROTTLED.format(error.wait)))
        elif isinstance(error, ClusterUnreachable | Unavailable):
            self.send(wire.notice(wire.UNAVAILABLE))
        else:
            failure.raiseException()

    def wait_for(self, d: Deferred[Any]) -> None:
        """A call is under way (the registry's, a password's): the user's
        lines wait for its answer (L{_drain})."""
        self._busy = True
        d.addErrback(self._unexpected)
        d.addBoth(self._unbusy)

    def _unbusy(self, result: object) -> None:
        self._busy = False
        self._drain()

    def registration_expired(self) -> None:
        """Still not registered, registration_timeout after it came (the
        room's Admission keeps the time): told so, and closed."""
        if self.state in (State.WELCOMED, State.NAMING, State.PASSWORD, State.JOINING):
            self._close(wire.notice(wire.REGISTRATION_EXPIRED))


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a registered user: what answers it, and whether only
    an operator may use it (the dispatcher checks, once; the handler only
    does its job)."""

    handler: Callable[[Session, str], None]
    operators_only: bool = False
