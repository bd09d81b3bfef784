"""The chat server: the TCP line protocol of docs/protocol.md, and the room
its connections share.

A line enters in L{ChatServerProtocol.dataReceived}, is cut there and handed
to C{lineReceived}, which feeds the connection's L{Session}
(chatproto/session.py: state, commands; inbox.py: flood). A public line goes to
the room, L{ChatFactory}, which hands it to its L{FanOut}
(chatproto/fanout.py); every byte for a connection leaves through its
L{Output} (chatproto/output.py). L{Admission} (chatproto/admission.py) counts
the connections against the limits.
"""

from __future__ import annotations

import time
from typing import Protocol, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatproto import wire
from chatproto.admission import EVICTION_GRACE, Admission, network, source
from chatproto.cluster_messages import Kick
from chatproto.config import ServerConfig
from chatproto.fanout import FanOut
from chatproto.history import History, MemoryHistory
from chatproto.metrics import Metrics
from chatproto.moderation import Moderation
from chatproto.output import Output, Transport, send_buffer, unsent
from chatproto.registry import MemoryRegistry, Reach, Registry, nick_key
from chatproto.session import GONE, ChatError, Session, State

__all__ = [
    "EVICTION_GRACE",
    "ChatError",
    "ChatFactory",
    "ChatServerProtocol",
    "Relay",
    "ServerConfig",
    "Session",
    "State",
    "network",
    "send_buffer",
    "source",
    "unsent",
]

log = Logger()


class Relay(Protocol):
    """Carries lines to the users of other server processes (cluster mode)."""

    def publish(self, line: bytes) -> None:
        """Deliver a public line to every user on the other nodes."""

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        """Deliver a private line to C{target} on whichever node has it;
        fire with whether such a user exists."""


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
    """The room: who is in the chat of one server process.

    It owns the members (C{sessions}, by nickname key: every session that is
    CHATTING, and only those), their joins and departures (each announced
    once, as far as its L{Reach} says), public and private lines, the one
    ping loop, and shutdown. The nicknames themselves are the L{Registry}'s
    (a cluster's is shared); lines for the users of other nodes go to the
    L{Relay}. Public lines reach the members through the L{FanOut}; the
    connections are counted by the L{Admission}. The TCP protocol and the
    WebSocket one build sessions on the same room.
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
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.config = config = config or ServerConfig()
        self.clock = clock
        self.registry: Registry = registry or MemoryRegistry()
        self.relay = relay
        # The public lines made here, for /history (a cluster's is in Redis).
        self.history: History = (
            history if history is not None else MemoryHistory(config, clock)
        )
        self.sessions: dict[str, Session] = {}
        self.metrics = Metrics(clock)  # chatproto/metrics.py: what --metrics serves
        self.fanout = FanOut(config, clock, self.sessions, self.metrics)
        self.admission: Admission[Session] = Admission(config, clock, self.metrics)
        self.stopping = False
        self._stopped: Deferred[None] | None = None
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = clock
        self._stamp_second = -1
        self._stamp = ""
        self.moderation = Moderation(self)

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

    def catch_up(self, session: Session) -> None:
        self.fanout.catch_up(session)

    def forget(self, session: Session) -> None:
        """A connection is closed: it no longer counts against any limit."""
        admission = self.admission
        admission.forget(session)
        self.moderation.forget(session)
        if self.stopping and not admission.connections and self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)

    # Membership

    def join(self, session: Session) -> None:
        """A session registered its nickname: it joins the chat."""
        assert session.nick is not None
        self.fanout.join(session)  # lines made before: not for it
        self.sessions[nick_key(session.nick)] = session
        if not self._pinger.running and self.config.ping_interval > 0:
            self._pinger.start(self.config.ping_interval, now=False)
        self.registry.names(self.config.list_limit).addCallback(session.send_names)
        log.info(
            "{nick} joined",
            act="join",
            nick=session.nick,
            address=session.host,
            front_end=session.front_end,
        )
        if len(self.sessions) <= self.config.join_notice_limit:
            line = f"{self.stamp()}-Connexion de {session.nick}\n".encode()
            self.broadcast(line, exclude=session)

    def depart(
        self, session: Session, reach: Reach = Reach.EVERYWHERE, reason: str = "lost"
    ) -> None:
        """A registered user left, for C{reason} (metrics.DEPARTURES): say it
        once, as far as C{reach} says (a stopping server tells everyone it
        stops instead).

        Only a departure announced EVERYWHERE is kept in the history: one
        announced HERE is that of a user whose nickname is someone else's on
        the other nodes now, and the history is the whole chat's."""
        if not self.withdraw(session, reach, reason) or self.stopping:
            return
        if reach is Reach.NOWHERE:
            return
        assert session.nick is not None
        line = wire.departure_prefix(self.stamp()) + session.nick.encode() + b"\n"
        if reach is Reach.EVERYWHERE:
            self.broadcast(line)
        else:
            self.deliver(line)

    def withdraw(
        self, session: Session, reach: Reach = Reach.EVERYWHERE, reason: str = "lost"
    ) -> bool:
        """Take a registered user out of the chat without a word to anyone,
        its nickname released as far as C{reach} says: whether it was in.
        The departure is counted, and logged, with its C{reason}."""
        assert session.nick is not None
        key = nick_key(session.nick)
        if self.sessions.get(key) is not session:
            return False
        self.fanout.leave(session)  # lines made before it left still reach it
        del self.sessions[key]
        self.registry.release(session.nick, reach).addErrback(
            lambda f: log.failure("releasing {nick}", f, nick=session.nick)
        )
        if not self.sessions:  # nobody left to give lines to: no timer
            self.fanout.flush()
            if self._pinger.running:
                self._pinger.stop()
        self.metrics.departed(reason)
        log.info(
            "{nick} left: {reason}",
            act="departure",
            nick=session.nick,
            address=session.host,
            front_end=session.front_end,
            reason=reason,
        )
        return True

    # Messages

    def stamp(self) -> str:
        """The server's local time as the Ruby server writes it: [H.M.S]."""
        now = int(self.clock.seconds())
        if now != self._stamp_second:
            t = time.localtime(now)
            self._stamp = f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]"
            self._stamp_second = now
        return self._stamp

    def say(self, sender: Session, text: str) -> None:
        self.metrics.public_lines += 1
        self.broadcast(f"{self.stamp()}-{sender.nick}: {text}\n".encode(), sender)

    def broadcast(self, line: bytes, exclude: Session | None = None) -> None:
        """Send one encoded line to every user here but C{exclude}, and to
        the other nodes of a cluster; it is kept in the history here, at its
        origin (the other nodes deliver it, and do not keep it again). In a
        cluster, record and publish land in one Redis call at the end of the
        reactor turn (L{chatproto.cluster_roles.Outbox})."""
        self.history.record(line)
        self.fanout.publish(line, exclude)
        if self.relay is not None:
            self.relay.publish(line)

    def deliver(self, line: bytes) -> None:
        """A public line for every user here only (from another node, which
        kept it in the history; or a departure announced here only, which
        the history does not keep: see L{depart})."""
        self.fanout.publish(line, None)

    def flush(self) -> None:
        """Give every user every public line now."""
        self.fanout.flush()

    def whisper(self, sender: str, target: str, text: str) -> Deferred[bool]:
        line = f"{self.stamp()}-message privé de {sender}: {text}\n".encode()
        if self.deliver_private(target, line):
            return succeed(True)
        if self.relay is not None:
            return self.relay.whisper(target, line)
        return succeed(False)

    def deliver_private(self, target: str, line: bytes) -> bool:
        """Send a private line to C{target} if it is connected here."""
        session = self.sessions.get(nick_key(target))
        if session is None:
            return False
        self.metrics.private_lines += 1
        session.send(line)
        return True

    def moderate(self, session: Session, command: str, argument: str) -> None:
        self.moderation.command(session, command, argument)

    def heard_kick(self, kick: Kick) -> None:
        """An operator of another node kicked a user, if it is here."""
        self.moderation.heard_kick(kick)

    # Liveness

    def _ping(self) -> None:
        try:
            limit = self.config.max_missed_pings
            for session in tuple(self.sessions.values()):
                if session.missed_pings >= limit:
                    log.info(
                        "{nick} stopped answering pings",
                        act="ping",
                        nick=session.nick,
                    )
                    session.say_goodbye(wire.notice(wire.PING_TIMEOUT), reason="ping")
                else:
                    session.missed_pings += 1
                    session.send(wire.PING)
        except Exception:
            log.failure("ping loop")

    # Shutdown

    def shutdown(self) -> Deferred[None]:
        """Tell every client the server stops, close, and fire when all are
        closed (clients that do not go are cut after C{shutdown_timeout})."""
        self.fanout.flush()
        self.stopping = True
        if self._pinger.running:
            self._pinger.stop()
        for session in tuple(self.admission.connections):
            if session.state is not GONE:
                session.say_goodbye(
                    wire.notice(wire.STOPPING), wire.BYE, reason="shutdown"
                )
        if not self.admission.connections:
            return succeed(None)
        self._stopped = Deferred()
        timer = self.clock.callLater(self.config.shutdown_timeout, self._cut_all)
        self._stopped.addBoth(lambda r: timer.cancel() if timer.active() else None)
        return self._stopped

    def _cut_all(self) -> None:
        for session in tuple(self.admission.connections):
            session.connection.abort()
