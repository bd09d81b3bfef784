"""The chat server: the TCP line protocol of docs/protocol.md, and the
factory that serves its connections one room.

A line enters in L{ChatServerProtocol.dataReceived}, is cut there and handed
to C{lineReceived}, which feeds the connection's L{Session}
(chatproto/session.py: state, commands; inbox.py: flood). A public line goes,
through the L{ChatFactory}, to its L{Room} (chatproto/room.py), which hands
it to its L{FanOut} (chatproto/fanout.py); every byte for a connection
leaves through its L{Output} (chatproto/output.py). L{Admission}
(chatproto/admission.py) counts the connections against the limits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatproto import wire
from chatproto._twisted import share_labels
from chatproto.accounts import Accounts, MemoryAccounts, Protection
from chatproto.admission import EVICTION_GRACE, Admission, network, source
from chatproto.bans import Bans
from chatproto.cluster_messages import Kick
from chatproto.commands import COMMANDS
from chatproto.config import ServerConfig
from chatproto.history import History, MemoryHistory
from chatproto.logs import Burst, TurnLog
from chatproto.metrics import Metrics
from chatproto.moderation import Moderation
from chatproto.operators import Checker, Hasher
from chatproto.output import Output, Transport, send_buffer, unsent
from chatproto.positions import Positions
from chatproto.registry import MemoryRegistry, Reach, Registry
from chatproto.room import Relay, Room
from chatproto.rooms import Rooms
from chatproto.session import GONE, ChatError, Session, State

__all__ = [
    "EVICTION_GRACE",
    "ChatError",
    "ChatFactory",
    "ChatServerProtocol",
    "ServerConfig",
    "Session",
    "State",
    "network",
    "send_buffer",
    "source",
    "unsent",
]

log = Logger()

# Why a user may leave with lines written to it that it never got: its
# read position is then the newest line it surely got (_delivered).
UNSURE = frozenset({"lost", "ping", "slow_reader"})

# The users the ping loop cuts, logged once per reactor turn (chatproto/logs.py).
UNANSWERED = Burst(
    log,
    "ping",
    "{nick} stopped answering pings",
    "{count} stopped answering pings: {names}",
    "{nick} ({address})",
    ("nick",),
    order=1,  # before their departures
)


@implementer(IHalfCloseableProtocol)
class ChatServerProtocol(LineReceiver):
    """One client's TCP connection (or TLS, or UNIX): bytes to lines.

    Lines are cut on C{\\n} (one trailing C{\\r} is dropped) and handed to
    C{lineReceived}, or to C{lineLengthExceeded} past C{MAX_LENGTH} bytes
    (--max-line); both feed the connection's
    L{Session}, which does the rest. Everything written to the connection,
    C{sendLine} included, goes through its L{Output}, in order.

    What it takes of L{LineReceiver}: C{delimiter}, C{MAX_LENGTH}, the
    hooks above, and pausing (C{pauseProducing} sets C{paused}, which
    holds the lines not handed out yet; C{resumeProducing} hands them
    out). Its framing is its own (L{dataReceived}, one split per read, a
    buffer of its own): it has no raw mode and no line buffer to give
    away, so C{setRawMode}, C{setLineMode} and C{clearLineBuffer} raise
    NotImplementedError rather than quietly do nothing.
    """

    delimiter = b"\n"
    MAX_LENGTH = ServerConfig.max_line
    factory: ChatFactory
    transport: Transport  # type: ignore[assignment]
    session: Session
    output: Output

    def __init__(self) -> None:
        # Every attribute a connection will set, set here in one order: an
        # instance that adds attributes late, or in another order, gets a
        # dictionary of its own (measured: 416 bytes more per user).
        self.factory = cast(ChatFactory, None)
        self.connected = 0
        self.transport = cast(Transport, None)
        self.MAX_LENGTH = ChatServerProtocol.MAX_LENGTH
        self.session = cast(Session, None)
        self.output = cast(Output, None)
        self._partial = b""  # the start of a line that has not ended yet
        self._discarding = False  # inside an over-long line: skip to its end

    def connectionMade(self) -> None:
        factory = self.factory
        share_labels(self.transport, self)  # 166 bytes less a connection
        self.MAX_LENGTH = factory.config.max_line
        host = source(getattr(self.transport.getPeer(), "host", None))
        self.output = Output(self.transport, factory)
        self.session = Session(factory, self.output, host)
        self.session.start()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.output.lost()
        self.session.lost()

    @property
    def buffered(self) -> int:
        """The bytes of a line that has not ended yet, held."""
        return len(self._partial)

    # Framing: LineReceiver's hooks

    def dataReceived(self, data: bytes) -> None:
        """Cut lines and hand each to lineReceived, or lineLengthExceeded.

        LineReceiver's own framing, in one split per read rather than one
        per line (a read of many lines is linear, not quadratic), with the
        same hooks; the rest of an over-long line is skipped to its end, and
        the connection kept. Pausing (pauseProducing) holds the lines not
        yet handed out until resumeProducing."""
        session = self.session
        if data == b"pong\n" and not (self._partial or self._discarding or self.paused):
            # The answer to a ping, alone in its read, as every idle client
            # sends it: the one line, without the cutting below (profiled,
            # 10,000 idle users: a third of the Python of a ping).
            session.line_received(b"pong")
            return
        if session.state is GONE:
            return
        if self._discarding:
            end = data.find(b"\n")
            session.skipped(len(data) if end < 0 else end)
            if end < 0:
                return
            data = data[end + 1 :]
            self._discarding = False
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        limit = self.MAX_LENGTH
        for i, line in enumerate(lines):
            if session.state is GONE:
                break
            if self.paused:  # the rest waits its turn
                self._partial = b"\n".join([*lines[i:], self._partial])
                return
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > limit:
                self.lineLengthExceeded(line)
            else:
                self.lineReceived(line)
        if session.state is GONE:  # nothing more is read from it
            self._partial = b""
        elif len(self._partial) > limit + 1:
            start, self._partial = self._partial, b""
            self._discarding = True
            self.lineLengthExceeded(start)

    def lineReceived(self, line: bytes) -> None:
        self.session.line_received(line)

    def setRawMode(self) -> None:
        """Not supported: this protocol reads lines only."""
        raise NotImplementedError("ChatServerProtocol reads lines only")

    def setLineMode(self, extra: bytes = b"") -> None:
        """Not supported: this protocol is always in line mode."""
        raise NotImplementedError("ChatServerProtocol reads lines only")

    def clearLineBuffer(self) -> bytes:
        """Not supported: the start of a line that has not ended yet is the
        session's next line, and is not given away."""
        raise NotImplementedError("ChatServerProtocol keeps its line buffer")

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line past MAX_LENGTH (or the start of one): one error line for
        it, in its turn, and the connection stays (LineReceiver's default
        would close it)."""
        self.session.line_too_long(len(line))

    def sendLine(self, line: bytes) -> None:
        """Send one line, in order with every other write to this client."""
        self.session.send(line + self.delimiter)

    # The end of the input (IHalfCloseableProtocol)

    def readConnectionLost(self) -> None:
        """The client closed its side of the connection (C{nc -N}, a script's
        C{shutdown}): its input is over, as if it had typed /quit after its
        last line. A last line without its newline counts as a line."""
        if self.session.state is GONE:
            return
        if self._partial and not self._discarding:
            self.dataReceived(b"\n")
        self.session.input_ended()

    def writeConnectionLost(self) -> None:
        """The server never closes only its own side."""


class ChatFactory(ServerFactory):
    """The server of one room: its connections, and the room they share.

    It owns its L{Room} (chatproto/room.py: the members, the fan-out, the
    history, public and private lines) and what is about connections
    rather than the chat: who gets in (the L{Admission}, and the bans of
    its L{Moderation}), the one ping loop (running while the room has
    members), and shutdown. Sessions (it is their L{session.Server}),
    moderation and a cluster's node reach the chat through it: it hands
    the calls about the chat to its room, one line each. The TCP protocol
    and the WebSocket one build sessions on the same factory.
    """

    protocol = ChatServerProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        config: ServerConfig | None = None,
        clock: IReactorTime | None = None,
        registry: Registry | None = None,
        relay: Relay | None = None,
        history: History | None = None,
        operators: Mapping[str, str] | None = None,
        bans: Bans | None = None,
        checker: Checker | None = None,
        accounts: Accounts | None = None,
        hasher: Hasher | None = None,
    ) -> None:
        """C{operators} (nickname key to password hash), C{bans} and
        C{checker} (how a password is checked: in the reactor's thread pool
        under twistd) are its L{Moderation}'s; by default none, in memory,
        and in this thread. C{accounts} (the protected nicknames), with the
        same C{checker} and C{hasher} (how /register makes a hash), are
        its L{Protection}'s; by default in memory, in this thread."""
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.config = config = config or ServerConfig()
        self.clock = clock
        self.metrics = Metrics(clock)  # chatproto/metrics.py: what --metrics serves
        self.room = Room(
            config,
            clock,
            self.metrics,
            registry or MemoryRegistry(),
            history if history is not None else MemoryHistory(config, clock),
            relay,
        )
        # The named rooms beside it, the lobby (chatproto/rooms.py).
        self.rooms = Rooms(self.room)
        self.admission: Admission[Session] = Admission(
            config, clock, self.metrics, deadline=config.registration_timeout
        )
        self.stopping = False
        self._stopped: Deferred[None] | None = None
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = clock
        # The history's newest line at each of the last ping rounds, the
        # newest last: a user that answered a round was given every line
        # up to it (see _delivered).
        self._ping_marks: deque[int] = deque(maxlen=config.max_missed_pings + 1)
        self.moderation = Moderation(self, operators, bans, checker)
        self.protection = Protection(
            accounts if accounts is not None else MemoryAccounts(),
            clock,
            config.nick_days,
            checker,
            hasher,
        )
        self.positions = Positions(  # for /unread
            self.protection, clock, lambda: self.history.newest
        )
        self.commands = COMMANDS  # what a registered user may type

    @property
    def registry(self) -> Registry:
        """The nickname map: who has which nickname (its room's registry;
        a cluster's is shared)."""
        return self.room.registry

    @property
    def history(self) -> History:
        """The room's public lines, for /history."""
        return self.room.history

    @property
    def user_log(self) -> TurnLog:
        """The log of the events about users that come in bursts (its
        room's)."""
        return self.room.user_log

    @property
    def sessions(self) -> dict[str, Session]:
        """The room's members, by nickname key."""
        return self.room.sessions

    # Connections

    def admit(self, session: Session) -> bytes | None:
        """Count a new connection in, or say why it is refused."""
        if self.stopping:
            self.metrics.refused("stopping", session.host)
            return wire.notice(wire.STOPPING)
        banned = self.moderation.refusal(session.host)
        if banned is not None:
            self.metrics.refused("banned", session.host)
            return banned
        return self.admission.admit(session)

    def tokens_for(self, host: str | None, now: float) -> float:
        return self.admission.tokens_for(host, now)

    def remember_tokens(self, host: str | None, tokens: float, at: float) -> None:
        self.admission.remember_tokens(host, tokens, at)

    def registered(self, session: Session) -> None:
        self.admission.registered(session)

    def forget(self, session: Session) -> None:
        """A connection is closed: it no longer counts against any limit."""
        admission = self.admission
        admission.forget(session)
        self.moderation.forget(session)
        if self.stopping and not admission.connections and self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)

    # Membership: the room's, and the ping loop while it has members

    def join(self, session: Session, greeting: bytes = b"") -> None:
        """A session registered its nickname: it joins the room (sent
        C{greeting} and the user list), and is pinged from now on."""
        if not self._pinger.running and self.config.ping_interval > 0:
            self._ping_marks.clear()
            self._pinger.start(self.config.ping_interval, now=False)
        assert session.nick is not None
        self.positions.arrived(session.nick, self.history.newest)
        self.room.join(session, greeting)

    def depart(
        self, session: Session, reach: Reach = Reach.EVERYWHERE, reason: str = "lost"
    ) -> None:
        """A registered user left, for C{reason} (metrics.DEPARTURES): say it
        once, as far as C{reach} says (a stopping server tells everyone it
        stops instead). Its read position is the history's newest line once
        its departure is recorded (a kicked user's was, by moderation); or,
        for a user whose connection was lost, or that stopped answering
        pings or reading, the newest line it surely got (L{_delivered})."""
        nick = session.nick
        assert nick is not None
        if self.withdraw(session, reach, reason) and not self.stopping:
            self.room.announce_departure(nick, reach)
        position = self.history.newest
        if reason in UNSURE:
            position = self._delivered(session, position)
        self.positions.left(nick, position)

    def _delivered(self, session: Session, newest: int) -> int:
        """The newest line a user that left without saying so surely got:
        the history's newest at the last ping it answered (every line
        before a ping is written before it, and its pong came back), not
        before its arrival; C{newest} when pings are off.

        Lines written after that may have been lost with the connection (a
        network cut: the server writes into it until the pings run out,
        30 to 40 s): /unread gives them at the next visit, and the page
        leaves out those it had (chatproto/webpage/app.js, heardBefore).
        Past the last mark kept (max_missed_pings + 1 rounds): its arrival.
        """
        marks = self._ping_marks
        if not marks:
            return newest
        missed = session.missed_pings
        answered = marks[-1 - missed] if missed < len(marks) else None
        arrival = self.positions.arrival(session.nick or "")
        if answered is None or (arrival is not None and arrival > answered):
            answered = arrival
        return newest if answered is None else min(answered, newest)

    def withdraw(
        self, session: Session, reach: Reach = Reach.EVERYWHERE, reason: str = "lost"
    ) -> bool:
        """Take a registered user out of the room without a word to anyone
        (L{Room.withdraw}): whether it was in. The ping loop stops with the
        last member."""
        if not self.room.withdraw(session, reach, reason):
            return False
        self.rooms.leave_all(session)  # silently: the lobby's departure says it
        if not self.room.sessions and self._pinger.running:
            self._pinger.stop()
        return True

    # Lines: the room's, for sessions (say, whisper, catch_up), moderation
    # (stamp, broadcast) and a cluster's node (stamp, deliver,
    # deliver_private)

    def stamp(self) -> str:
        return self.room.stamp()

    def say(self, sender: Session, text: str) -> None:
        """A plain line, to the sender's current room (the lobby's Room, or
        a named room)."""
        self.rooms.say(sender, text)

    def broadcast(self, line: bytes, exclude: Session | None = None) -> None:
        self.room.broadcast(line, exclude)

    def deliver(self, line: bytes) -> None:
        self.room.deliver(line)

    def catch_up(self, session: Session) -> None:
        """Before any other line: the lines of its named rooms and the
        lobby's it has not been given, merged in the order made
        (chatproto/fanout.py), in one write. A session that is no member
        (C{seen} -1: not registered yet, or gone) and in no room is owed
        nothing: not asked (py-spy, a herd of 10,000: 4% of the server's
        samples went into asking, for the welcome and the prompt of each
        newcomer)."""
        if session.seen >= 0 or session.rooms is not None:
            self.room.catch_up(session)

    def whisper(self, sender: str, target: str, text: str) -> Deferred[bool]:
        return self.room.whisper(sender, target, text)

    def deliver_private(self, target: str, line: bytes) -> bool:
        return self.room.deliver_private(target, line)

    # Moderation

    def heard_kick(self, kick: Kick) -> None:
        """An operator of another node kicked a user, if it is here."""
        self.moderation.heard_kick(kick)

    # Liveness

    def _ping(self) -> None:
        try:
            limit = self.config.max_missed_pings
            for session in tuple(self.room.sessions.values()):
                if session.missed_pings >= limit:
                    self.user_log.add(
                        UNANSWERED, nick=session.nick, address=session.host
                    )
                    session.say_goodbye(wire.notice(wire.PING_TIMEOUT), reason="ping")
                else:
                    session.missed_pings += 1
                    session.send(wire.PING)
            self._ping_marks.append(self.history.newest)
        except Exception:
            log.failure("ping loop")

    # Shutdown

    def shutdown(self) -> Deferred[None]:
        """Tell every client the server stops, close, and fire when all are
        closed (clients that do not go are cut after C{shutdown_timeout})."""
        self.rooms.flush()
        self.room.flush()
        self.stopping = True
        if self._pinger.running:
            self._pinger.stop()
        for session in tuple(self.admission.connections):
            if session.state is not GONE:
                session.say_goodbye(
                    wire.notice(wire.STOPPING), wire.BYE, reason="shutdown"
                )
        self.user_log.flush()  # the departures: the reactor may stop next
        if not self.admission.connections:
            return succeed(None)
        self._stopped = Deferred()
        timer = self.clock.callLater(self.config.shutdown_timeout, self._cut_all)
        self._stopped.addBoth(lambda r: timer.cancel() if timer.active() else None)
        return self._stopped

    def _cut_all(self) -> None:
        for session in tuple(self.admission.connections):
            session.connection.abort()
