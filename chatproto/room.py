"""The room: who is in one chat, and the lines they share.

A L{Room} holds its members (C{sessions}, by nickname key: every session
that is CHATTING, and only those), their joins and departures (each
announced once, as far as its L{Reach} says), and the lines: public ones
reach the members through the L{FanOut} (chatproto/fanout.py), are kept in
the L{History} and carried to the other nodes of a cluster by the
L{Relay}; private ones go to one member, here or on another node.

It knows nothing of connections: the server's factory
(L{chatproto.server.ChatFactory}) admits them, pings them, closes them at
shutdown, and hands the room the sessions that register and leave.
"""

from __future__ import annotations

import time
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto import wire
from chatproto.config import ServerConfig
from chatproto.fanout import FanOut
from chatproto.history import History
from chatproto.logs import Burst, TurnLog
from chatproto.metrics import Metrics
from chatproto.registry import Reach, Registry, nick_key
from chatproto.session import Session

log = Logger()

# Arrivals and departures, logged once per reactor turn (chatproto/logs.py):
# "alice joined" alone, "3 joined: b0 (192.0.2.1), ..." in a herd.
JOINED = Burst(
    log,
    "join",
    "{nick} joined",
    "{count} joined: {names}",
    "{nick} ({address})",
    ("nick", "address", "front_end"),
)
LEFT = Burst(
    log,
    "departure",
    "{nick} left: {reason}",
    "{count} left: {names}",
    "{nick} ({address}, {reason})",
    ("nick", "address", "front_end", "reason"),
    order=2,  # after what cut a user (chatproto/server.py's PING...)
)


class Relay(Protocol):
    """Carries lines to the users of other server processes (cluster mode)."""

    def publish(self, line: bytes) -> None:
        """Deliver a public line to every user on the other nodes."""

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        """Deliver a private line to C{target} on whichever node has it;
        fire with whether such a user exists."""


class Room:
    """One chat: its members, their joins and departures, and their lines.

    The nicknames themselves are the L{Registry}'s (a cluster's is shared);
    lines for the users of other nodes go to the L{Relay} (None: a single
    server). Invariant: C{sessions} holds every member and only those, by
    nickname key; L{join} and L{withdraw} are the only writers.
    """

    def __init__(
        self,
        config: ServerConfig,
        clock: IReactorTime,
        metrics: Metrics,
        registry: Registry,
        history: History,
        relay: Relay | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.registry = registry
        # The public lines made here, for /history (a cluster's is in Redis).
        self.history = history
        self.relay = relay
        self.sessions: dict[str, Session] = {}
        # The events about users, one per kind and reactor turn.
        self.user_log = TurnLog(clock)
        self.fanout = FanOut(config, clock, self.sessions, metrics)
        self._stamp_second = -1
        self._stamp = ""

    # Membership

    def join(self, session: Session, greeting: bytes = b"") -> None:
        """A session registered its nickname: it joins the chat, the others
        are told (up to join_notice_limit members), and it is sent
        C{greeting} and the user list: in one write when the registry
        answers at once (a single server's), the greeting first otherwise
        (a cluster's asks Redis). Written last, so that a newcomer that
        this write cuts (it stopped reading) leaves as any member does:
        its departure after its arrival."""
        assert session.nick is not None
        self.fanout.join(session)  # lines made before: not for it
        self.sessions[nick_key(session.nick)] = session
        self.user_log.add(
            JOINED,
            nick=session.nick,
            address=session.host,
            front_end=session.front_end,
        )
        if len(self.sessions) <= self.config.join_notice_limit:
            line = f"{self.stamp()}-Connexion de {session.nick}\n".encode()
            self.broadcast(line, exclude=session)
        held = [greeting]  # until the list is written, or it is not there
        self.registry.names(self.config.list_limit).addCallback(
            _send_list, session, held
        )
        if held:  # the list comes later (a cluster's registry): the greeting now
            session.send(held.pop())

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
        self.metrics.departed(reason)
        self.user_log.add(
            LEFT,
            nick=session.nick,
            address=session.host,
            front_end=session.front_end,
            reason=reason,
        )
        return True

    def announce_departure(self, nick: str, reach: Reach) -> None:
        """Say that C{nick} left, as far as C{reach} says.

        Only a departure announced EVERYWHERE is kept in the history: one
        announced HERE is that of a user whose nickname is someone else's on
        the other nodes now, and the history is the whole chat's."""
        if reach is Reach.NOWHERE:
            return
        line = wire.departure_prefix(self.stamp()) + nick.encode() + b"\n"
        if reach is Reach.EVERYWHERE:
            self.broadcast(line)
        else:
            self.deliver(line)

    # Public lines

    def stamp(self) -> str:
        """The server's local time as the Ruby server writes it: [H.M.S]."""
        now = int(self.clock.seconds())
        if now != self._stamp_second:
            t = time.localtime(now)
            self._stamp = f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]"
            self._stamp_second = now
        return self._stamp

    def say(self, sender: Session, text: str) -> None:
        """A member's public line."""
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
        the history does not keep: see L{announce_departure})."""
        self.fanout.publish(line, None)

    def catch_up(self, session: Session) -> None:
        """Write to a member the public lines it has not been given (merged
        with its named rooms' lines, in the order made), in one write."""
        self.fanout.catch_up(session)

    def flush(self) -> None:
        """Give every member every public line now."""
        self.fanout.flush()

    # Private lines

    def whisper(self, sender: str, target: str, text: str) -> Deferred[bool]:
        """A private line from C{sender} to C{target}, here or on another
        node: fires with whether such a user exists."""
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


def _send_list(
    names: tuple[list[str], int], session: Session, held: list[bytes]
) -> None:
    """The user list block, after what is C{held} for it (the greeting,
    unless it went already), in one write."""
    session.send(b"".join([*held, wire.user_list(*names)]))
    held.clear()
