"""Rooms: the named rooms beside the lobby, on a server or across a cluster.

Every registered user is in the lobby, C{#accueil}: the L{Room} of
chatproto/room.py, the chat of before rooms, line for line. L{Rooms} holds
the named rooms (L{NamedRoom}: its log of lines, its members in the order
they joined, each with its L{Place} in the log, its topic), their bounds
(C{--max-rooms}, C{--rooms-per-user}), the commands C{/join}, C{/part},
C{/rooms}, C{/topic}, and each user's rooms (L{Member}: its rooms, its
current room), which the session holds in its C{rooms} slot (None: the
lobby only, as every user who never joined a room).

A room's line costs what a lobby's line costs: each L{NamedRoom} keeps
a L{Log} of its lines (chatproto/fanout.py, the lobby's) and each member
its place in it, and passes from the end of the reactor turn give each
member of a room with new lines, in one write, every line it has not
been given, pass_size members a turn, and, while the rooms deliver more
than batch_threshold lines a second, at most one pass per batch_delay
(L{Rooms._run_pass}); a room with BATCH_LINES or BATCH_BYTES waiting is
served at once. Every log's lines are numbered in the order the server
made them, the lobby's too: whatever gives a user its lines (the rooms'
pass, the lobby's, L{chatproto.session.Session.send}) gives it those of
all its logs, merged by number, in one write (L{Member.take},
chatproto/fanout.py's gather).

On a node of a cluster (L{attach}: a L{Cluster}, chatproto/cluster_roles.py's
ClusterRooms), the rooms span the nodes: each node holds its own members
of a room here, and the cluster holds the rest in Redis (every member, in
the order they joined, the topic, the rooms' count), which /join, /list,
/rooms and /topic read; a room's lines reach the other nodes that have
members in it (L{Cluster.publish}), and theirs come back here
(L{deliver}), added to the room's log as its own, numbered when heard
(docs/architecture.md, "Rooms across the nodes of a cluster").
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from chatproto import wire
from chatproto.fanout import BATCH_BYTES, BATCH_LINES, Log, gather
from chatproto.history import History, Kept, RoomHistory
from chatproto.registry import ClusterUnreachable
from chatproto.session import CHATTING, ChatError, Session

if TYPE_CHECKING:
    from chatproto.room import Room

LOBBY = wire.LOBBY
# A room's name as typed: "#" (which may be left out), then 1 to 24 of
# a-z, 0-9, "_", "-", in any letter case (shown in lower case).
NAME = re.compile(r"#?([A-Za-z0-9_-]{1,24})")
TOPIC_MOST = 200  # characters


@dataclass(frozen=True)
class Gathered:
    """A room as the cluster holds it: its members on every node, in the
    order they joined, and its topic (None: none)."""

    members: list[str]
    topic: str | None


class TooManyRooms(Exception):
    """A new room past C{--max-rooms} rooms in the cluster."""


class Cluster(Protocol):
    """The rooms' seam in a cluster (chatproto/cluster_roles.py's
    ClusterRooms): what Redis holds of the rooms of every node, and their
    lines between the nodes. L{listen} and L{quiet} come in pairs: one
    L{listen} for each member here, or join under way."""

    def attach(self, rooms: Rooms) -> None:
        """The rooms whose lines heard from the other nodes go to
        L{Rooms.deliver}, and whose members L{Rooms.here} lists."""

    def listen(self, name: str) -> None:
        """One more member here (or a join under way): hear the room."""

    def quiet(self, name: str) -> None:
        """One member fewer here: the last stops hearing the room."""

    def join(self, name: str, nick: str, most: int) -> Deferred[Gathered]:
        """Add C{nick} to the room, made if fewer than C{most} rooms have
        a member; fails with L{TooManyRooms}, or ClusterUnreachable."""

    def part(self, nick: str, names: list[str]) -> None:
        """Take C{nick} out of these rooms."""

    def read(self, name: str) -> Deferred[Gathered]:
        """The room as the cluster holds it."""

    def counts(self) -> Deferred[tuple[int, list[tuple[str, int]]]]:
        """The users of the cluster, and each room's members."""

    def set_topic(self, name: str, topic: str) -> Deferred[None]:
        """Keep the room's topic for the members of every node."""

    def publish(self, name: str, line: bytes) -> None:
        """A line of the room, for the other nodes that have members in it
        (and kept in the cluster's history)."""


def room_name(text: str) -> str | None:
    """The name C{text} gives (lower case, without its C{#}), or None if it
    breaks the rule."""
    match = NAME.fullmatch(text)
    return None if match is None else match.group(1).lower()


class Place:
    """A member's place in a room's log: C{at}, the place of the last line
    it was given (a lobby member's is its session's C{seen}); past every
    line once it left the room."""

    __slots__ = ("at", "session")

    def __init__(self, session: Session, at: int) -> None:
        self.session = session
        self.at = at


# A place past every line: one that left the room (a pass under way may
# still hold it). Belt and braces: such a member is also the sender of its
# departure line (/part), or is no longer chatting (it left the server).
LEFT = sys.maxsize


class NamedRoom:
    """A room other than the lobby: its log of lines, its members, in the
    order they joined (a dict as an ordered set), each with its place in
    the log, and its topic. It exists while it has a member (L{Rooms}
    drops it, and its topic, with its last). C{waiting}, C{waiting_size}:
    the lines no pass has started on, and their bytes."""

    __slots__ = ("log", "members", "name", "topic", "waiting", "waiting_size")

    def __init__(self, name: str, log: Log) -> None:
        self.name = name
        self.log = log
        self.members: dict[Session, Place] = {}
        self.topic: str | None = None
        self.waiting = 0
        self.waiting_size = 0


class Member:
    """One user's named rooms: those it is in (in the order it joined
    them), its current one (None: the lobby). Its place in each room's log
    is the room's (C{NamedRoom.members}): L{take} hands over what its rooms
    hold for it, the lobby's FanOut and the rooms' pass write it."""

    __slots__ = ("current", "joined", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.current: NamedRoom | None = None
        self.joined: list[NamedRoom] = []

    def owed(self) -> bool:
        """Whether one of its rooms has lines it has not been given."""
        session = self.session
        return any(room.members[session].at < room.log.end for room in self.joined)

    def take(self, lobby: tuple[Log, int] | None) -> bytes:
        """The lines of its rooms it has not been given, merged with the
        lobby's from C{lobby} (its log, and the member's place, below its
        end), in the order made, for the caller to write: from now on it
        has them."""
        session = self.session
        parts = [] if lobby is None else [lobby]
        for room in self.joined:
            place, log = room.members[session], room.log
            at, end = place.at, log.base + len(log.lines)
            if at < end:
                parts.append((log, at))
                place.at = end
        return gather(parts, session)


def _member(session: Session) -> Member | None:
    """The session's L{Member}: its C{rooms} slot, which only this module
    sets (chatproto/session.py types it by what the fan-out uses of it)."""
    return cast("Member | None", session.rooms)


class InRoom:
    """A named room's history (L{History}) in the history of every room:
    what /history and /search read while the room is current."""

    def __init__(self, history: RoomHistory, room: str) -> None:
        self.history = history
        self.room = room
        self.limit = history.limit

    @property
    def newest(self) -> int:
        return self.history.newest

    def record(self, line: bytes) -> None:
        self.history.record(line, self.room)

    def last(self, count: int) -> Deferred[list[Kept]]:
        return self.history.last(count, self.room)

    def after(
        self, number: int, count: int, until: int | None = None
    ) -> Deferred[tuple[int, list[Kept]]]:
        return self.history.after(number, count, until)  # the lobby's: /unread

    def before(self, number: int | None, count: int) -> Deferred[list[Kept]]:
        return self.history.before(number, count, self.room)

    def search(self, words: Sequence[str], count: int) -> Deferred[list[Kept]]:
        return self.history.search(words, count, self.room)


class Rooms:
    """The named rooms of the server, beside its lobby (L{Room}).

    Invariants: C{rooms} holds every room with a member, and only those,
    by name; a session is in C{room.members} exactly when the room is in
    its L{Member}'s C{joined}; a member's current room is one of its
    rooms; a session that left the server is in no room (L{leave_all})."""

    def __init__(self, lobby: Room) -> None:
        self.lobby = lobby
        self.config = lobby.config
        self.rooms: dict[str, NamedRoom] = {}
        # The rooms with lines no pass has started on, in the order their
        # first came; the pass under way (last first): each room, the end
        # of its log when the pass began, its members left to serve (last
        # first); when it began; the rate of deliveries, measured each
        # second (see _schedule_pass).
        self._waiting: list[NamedRoom] = []
        self._pass: list[tuple[NamedRoom, int, list[Place]]] = []
        self._began = float("-inf")
        self._call: IDelayedCall | None = None
        self._serving = False  # a pass or a flush is writing: none inside it
        self._several: set[Session] = set()  # the members of several rooms
        self._rate = 0.0
        self._delivered = 0
        self._counted_since = lobby.clock.seconds()
        self.cluster: Cluster | None = None  # None: a single server

    def attach(self, cluster: Cluster) -> None:
        """Span the rooms across the nodes of a cluster (tap.py)."""
        self.cluster = cluster
        cluster.attach(self)

    def _history(self) -> RoomHistory:
        # Every room's lines: a single server's MemoryHistory or the
        # store's StoreHistory, or a cluster's ClusterHistory.
        return cast(RoomHistory, self.lobby.history)

    def history(self, session: Session) -> History:
        """The history of the session's current room."""
        member = _member(session)
        if member is None or member.current is None:
            return self.lobby.history
        return InRoom(self._history(), member.current.name)

    # Lines

    def say(self, sender: Session, text: str) -> None:
        """A plain line: to the sender's current room."""
        member = _member(sender)
        if member is None or member.current is None:
            self.lobby.say(sender, text)
            return
        room = member.current
        self.lobby.metrics.public_lines += 1
        assert sender.nick is not None
        line = wire.room_said(self.lobby.stamp(), room.name, sender.nick, text)
        self.publish(room, line, sender)

    def publish(self, room: NamedRoom, line: bytes, sender: Session | None) -> None:
        """A line of C{room}: kept in its history (in a cluster, and sent to
        the other nodes with members in it), and added to its log for every
        member here but C{sender}."""
        if self.cluster is not None:
            self.cluster.publish(room.name, line)
        else:
            self._history().record(line, room.name)
        self.lobby.metrics.deliveries += self._add(room, line, sender)

    def deliver(self, name: str, lines: bytes) -> None:
        """Lines of the room C{name} from another node of the cluster: for
        every member here (none: nothing to do)."""
        room = self.rooms.get(name)
        if room is None:
            return
        added = self._add(room, lines, None)
        self.lobby.metrics.deliveries += added * lines.count(b"\n")

    def here(self) -> list[tuple[str, str]]:
        """Each room's members here, (room, nickname), in the order they
        joined: what a node registers again in a cluster."""
        return [
            (name, session.nick)
            for name, room in self.rooms.items()
            for session in room.members
            if session.nick is not None
        ]

    def _add(self, room: NamedRoom, line: bytes, sender: Session | None) -> int:
        """Add C{line} to the room's log, for every member but C{sender}
        (none: not kept), and see that a pass gives it to them: how many
        it is for. Its cost does not grow with the room."""
        places = room.members
        readers = len(places) - (sender in places)
        if readers <= 0:
            return 0
        log = room.log
        end = log.end
        log.add(line, sender)
        spoke = None if sender is None else places.get(sender)
        if spoke is not None and spoke.at == end:
            spoke.at = end + 1  # it had every line, and has its own
        self._delivered += readers
        if not room.waiting:
            self._waiting.append(room)
        room.waiting += 1
        room.waiting_size += len(line)
        full = room.waiting >= BATCH_LINES or room.waiting_size >= BATCH_BYTES
        if full and not self._serving:
            self._flush_room(room)
        elif self._call is None and not self._pass:
            self._schedule_pass()
        return readers

    def _schedule_pass(self) -> None:
        """The next pass: at the end of this reactor turn, or, while the
        rooms deliver more than batch_threshold lines a second, once
        batch_delay has passed since the last began (as the lobby's
        FanOut: each member gets at most one write per batch_delay)."""
        clock = self.lobby.clock
        wait = 0.0
        if self._rate >= self.config.batch_threshold:
            wait = self._began + self.config.batch_delay - clock.seconds()
        self._call = clock.callLater(max(0.0, wait), self._run_pass)

    def _run_pass(self) -> None:
        """Serve the next pass_size members of the rooms with new lines, a
        room after another, starting a pass if none is under way; a pass
        over more members goes on in the next reactor turns, so that no
        turn is long. A room's lines made before the pass are forgotten
        once its members are served: they all have them."""
        self._call = None
        clock = self.lobby.clock
        passing = self._pass
        if not passing:
            rooms, self._waiting = self._waiting, []
            for room in reversed(rooms):
                room.waiting = room.waiting_size = 0
                members = list(reversed(room.members.values()))
                passing.append((room, room.log.end, members))
            self._began = now = clock.seconds()
            if now - self._counted_since >= 1.0:
                self._rate = self._delivered / (now - self._counted_since)
                self._counted_since, self._delivered = now, 0
        budget = self.config.pass_size
        self._serving = True
        try:
            while budget and passing:
                room, upto, chunk = passing[-1]
                budget -= self._serve(room, chunk, budget)
                if not chunk:
                    passing.pop()
                    room.log.forget(upto)
        finally:
            self._serving = False
        if passing:
            self._call = clock.callLater(0, self._run_pass)
        elif self._waiting:
            self._schedule_pass()

    def _serve(self, room: NamedRoom, chunk: list[Place], most: int) -> int:
        """Give up to C{most} members of C{chunk} (taken from its end) the
        lines they have not been given: each, in one write, those of all its
        logs (L{Member.take}, through the lobby's FanOut); those with none
        are taken and not counted. How many were served.

        Unrolled for the common case, as the lobby's pass is: a member of
        this room alone, with no lobby line waiting, who made none of the
        lines, is given the bytes every such member gets. A write may cut
        its reader, whose departure is a lobby line: the ends are read
        again after each write (the lobby's only while it has lines)."""
        fanout = self.lobby.fanout
        log, lobby = room.log, fanout.log
        lines, lobby_lines = log.lines, lobby.lines
        spoke, joined = log.spoke, log.joined
        several = self._several
        end = log.base + len(lines)
        served = 0
        while served < most and chunk:
            place = chunk.pop()
            at, session = place.at, place.session
            if at >= end or session.state is not CHATTING:
                continue
            served += 1
            data = joined.get(at)
            if (
                data is None
                or session in spoke
                or (several and session in several)
                or (lobby_lines and session.seen < lobby.base + len(lobby_lines))
            ):
                fanout.catch_up(session)
            else:
                place.at = end
                session.connection.write(data)
            end = log.base + len(lines)
        return served

    def _flush_room(self, room: NamedRoom) -> None:
        """Give every member of C{room} its lines now (BATCH_LINES or
        BATCH_BYTES are waiting), and forget them."""
        if room.waiting:
            self._waiting.remove(room)
        room.waiting = room.waiting_size = 0
        log = room.log
        self._serving = True
        try:
            while log.lines:  # lines may come while serving: again
                upto = log.end
                chunk = list(reversed(room.members.values()))
                self._serve(room, chunk, len(chunk))
                log.forget(upto)
        finally:
            self._serving = False

    def flush(self) -> None:
        """Give every member its rooms' lines now (at shutdown)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._pass = []
        for room in tuple(self.rooms.values()):
            self._flush_room(room)
        self._waiting = []

    # Membership

    def join(self, session: Session, argument: str) -> None:
        """C{/join #NAME}: join the room (made if need be), or make it the
        current one if the session is in it already (C{#accueil}: the
        lobby)."""
        name = room_name(argument)
        if name is None:
            raise ChatError(wire.ROOM_USAGE.format("/join"))
        member = _member(session)
        if name == LOBBY:
            if member is not None:
                member.current = None
            self._tell_current(session, None)
            return
        room = self.rooms.get(name)
        if room is not None and session in room.members:
            assert member is not None
            member.current = room
            self._tell_current(session, room)
            return
        config = self.config
        if (0 if member is None else len(member.joined)) >= config.rooms_per_user:
            raise ChatError(wire.ROOMS_PER_USER.format(config.rooms_per_user))
        if self.cluster is not None:
            self._join_cluster(self.cluster, session, name)
            return
        if room is None:
            if len(self.rooms) >= config.max_rooms:
                raise ChatError(wire.TOO_MANY_ROOMS.format(config.max_rooms))
            room = self.rooms[name] = NamedRoom(name, Log(self.lobby.fanout.counter))
        self._enter(session, room)
        self._tell_current(session, room)
        if len(room.members) <= config.join_notice_limit:
            assert session.nick is not None
            line = wire.room_arrival(self.lobby.stamp(), name, session.nick)
            self.publish(room, line, session)

    def _join_cluster(self, cluster: Cluster, session: Session, name: str) -> None:
        """/join of a room this user is not in, on a node of a cluster: the
        room is joined in Redis first (--max-rooms counts the cluster's
        rooms), heard here before (its lines must reach the user from the
        moment it is in), and the answer lists its members on every node."""
        nick = session.nick
        assert nick is not None
        cluster.listen(name)
        d = cluster.join(name, nick, self.config.max_rooms)
        d.addCallbacks(
            self._joined,
            self._not_joined,
            callbackArgs=(cluster, session, name),
            errbackArgs=(cluster, session, name),
        )
        session.wait_for(d)  # the lines after it wait for its answer

    def _joined(
        self, gathered: Gathered, cluster: Cluster, session: Session, name: str
    ) -> None:
        nick = session.nick
        assert nick is not None
        if session.state is not CHATTING:  # it left meanwhile
            cluster.part(nick, [name])
            cluster.quiet(name)
            return
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = NamedRoom(name, Log(self.lobby.fanout.counter))
        self._enter(session, room)
        self._tell(session, name, gathered)
        if len(gathered.members) <= self.config.join_notice_limit:
            self.publish(
                room, wire.room_arrival(self.lobby.stamp(), name, nick), session
            )

    def _not_joined(
        self, failure: Failure, cluster: Cluster, session: Session, name: str
    ) -> None:
        cluster.quiet(name)
        failure.trap(TooManyRooms, ClusterUnreachable)
        if failure.check(TooManyRooms):
            refusal = wire.TOO_MANY_ROOMS.format(self.config.max_rooms)
        else:
            refusal = wire.ROOMS_UNAVAILABLE
        session.send(wire.notice(refusal))

    def _tell(self, session: Session, name: str, gathered: Gathered) -> None:
        """The answer to /join: the current room, its first --list-limit
        members, its topic (a single server's room, or the cluster's)."""
        session.send(wire.notice(wire.ROOM_CURRENT.format(name)))
        members = gathered.members
        limit = self.config.list_limit  # as at registration; /list has all
        session.send(wire.user_list(members[:limit], len(members)))
        if gathered.topic is not None:
            session.send(wire.notice(wire.ROOM_TOPIC.format(name, gathered.topic)))

    def _gathered(self, room: NamedRoom) -> Deferred[Gathered]:
        """The room as the cluster holds it; this node's view of it (its
        members here, no topic) while the cluster cannot be reached."""
        assert self.cluster is not None

        def here(failure: Failure) -> Gathered:
            failure.trap(ClusterUnreachable)
            return Gathered([s.nick for s in room.members if s.nick is not None], None)

        return self.cluster.read(room.name).addErrback(here)

    def _tell_current(self, session: Session, room: NamedRoom | None) -> None:
        """The answer to /join: the current room, its members, its topic."""
        limit = self.config.list_limit  # as at registration; /list has all
        if room is None:
            session.send(wire.notice(wire.ROOM_CURRENT.format(LOBBY)))
            self.lobby.registry.names(limit).addCallback(session.send_names)
            return
        if self.cluster is not None:
            d = self._gathered(room)
            d.addCallback(lambda gathered: self._tell(session, room.name, gathered))
            session.wait_for(d)
            return
        nicks = [s.nick for s in room.members if s.nick is not None]
        self._tell(session, room.name, Gathered(nicks, room.topic))

    @staticmethod
    def send_names(session: Session, room: NamedRoom) -> None:
        """/list in a room: its members, in the order they joined."""
        names = [member.nick for member in room.members if member.nick is not None]
        session.send(wire.user_list(names, len(names)))

    def part(self, session: Session, argument: str) -> None:
        """C{/part [#NAME]}: leave the room (by default, the current one)."""
        member = _member(session)
        if argument:
            name = room_name(argument)
            if name is None:
                raise ChatError(wire.ROOM_USAGE.format("/part"))
        elif member is not None and member.current is not None:
            name = member.current.name
        else:
            name = LOBBY
        if name == LOBBY:
            raise ChatError(wire.PART_LOBBY)
        room = self.rooms.get(name)
        if room is None or member is None or session not in room.members:
            raise ChatError(wire.NOT_IN_ROOM.format(name))
        was_current = member.current is room
        self.lobby.catch_up(session)  # the room's lines made before it left
        self._remove(session, member, room)
        session.send(wire.notice(wire.ROOM_LEFT.format(name)))
        if was_current:
            session.send(wire.notice(wire.ROOM_CURRENT.format(LOBBY)))
        assert session.nick is not None
        line = wire.room_departure(self.lobby.stamp(), name, session.nick)
        self.publish(room, line, session)
        if self.cluster is not None:
            self.cluster.part(session.nick, [name])
            self.cluster.quiet(name)

    def _enter(self, session: Session, room: NamedRoom) -> None:
        """The session joins C{room}, at its log's end (no line made before
        is for it), and makes it its current room."""
        member = _member(session)
        if member is None:
            member = Member(session)
            session.rooms = member
        room.members[session] = Place(session, room.log.end)
        member.joined.append(room)
        member.current = room
        if len(member.joined) > 1:
            self._several.add(session)

    def _remove(self, session: Session, member: Member, room: NamedRoom) -> None:
        """Out of C{room}: its place goes (it was given its lines before)."""
        room.members.pop(session).at = LEFT
        member.joined.remove(room)
        if len(member.joined) < 2:
            self._several.discard(session)
        if member.current is room:
            member.current = None
        if not room.members:  # nobody left: the room, and its topic, go
            del self.rooms[room.name]

    def leave_all(self, session: Session) -> None:
        """The session left the server: out of every room, without a word
        (the lobby's departure line is the only one). Its rooms' lines
        were given to it as it left the lobby (FanOut.leave)."""
        member = _member(session)
        if member is None:
            return
        names = [room.name for room in member.joined]
        for room in tuple(member.joined):
            self._remove(session, member, room)
        if self.cluster is not None and names and session.nick is not None:
            self.cluster.part(session.nick, names)
            for name in names:
                self.cluster.quiet(name)

    # The other commands

    def list_names(self, session: Session) -> None:
        """C{/list}: the current room's members (the lobby's: every user)."""
        member = _member(session)
        if member is None or member.current is None:
            self.lobby.registry.names().addCallback(session.send_names)
        elif self.cluster is not None:
            d = self._gathered(member.current)
            d.addCallback(
                lambda gathered: session.send(
                    wire.user_list(gathered.members, len(gathered.members))
                )
            )
            session.wait_for(d)
        else:
            self.send_names(session, member.current)

    def list_rooms(self, session: Session, argument: str) -> None:
        """C{/rooms}: every room with a member, the lobby first (in a
        cluster, on every node; this node's alone while it cannot reach
        the others)."""
        here = (
            len(self.lobby.sessions),
            [(name, len(room.members)) for name, room in self.rooms.items()],
        )
        if self.cluster is None:
            self._send_rooms(here, session)
            return

        def alone(failure: Failure) -> tuple[int, list[tuple[str, int]]]:
            failure.trap(ClusterUnreachable)
            return here

        d = self.cluster.counts().addErrback(alone)
        d.addCallback(self._send_rooms, session)
        session.wait_for(d)

    @staticmethod
    def _send_rooms(
        counts: tuple[int, list[tuple[str, int]]], session: Session
    ) -> None:
        users, rooms = counts
        session.send(wire.rooms_block([(LOBBY, users), *sorted(rooms)]))

    def topic(self, session: Session, argument: str, operator: bool) -> None:
        """C{/topic}: the current room's topic; C{/topic TEXT} (C{operator}:
        whether the session is one) sets it, and tells the room."""
        member = _member(session)
        room = None if member is None else member.current
        name = LOBBY if room is None else room.name
        if not argument and room is not None and self.cluster is not None:
            d = self._gathered(room)
            d.addCallback(self._send_topic, session, name)
            session.wait_for(d)
            return
        if not argument:
            if room is not None and room.topic is not None:
                session.send(wire.notice(wire.ROOM_TOPIC.format(name, room.topic)))
            else:
                session.send(wire.notice(wire.ROOM_NO_TOPIC.format(name)))
            return
        if not operator:
            raise ChatError(wire.TOPIC_NOT_OPERATOR)
        if room is None:
            raise ChatError(wire.TOPIC_LOBBY)
        if len(argument) > TOPIC_MOST:
            raise ChatError(wire.TOPIC_TOO_LONG.format(TOPIC_MOST))
        assert session.nick is not None
        line = wire.room_topic_set(self.lobby.stamp(), name, argument, session.nick)
        if self.cluster is None:
            room.topic = argument
            self.publish(room, line, None)
            return
        setting = self.cluster.set_topic(name, argument)
        setting.addCallbacks(
            lambda _: self.publish(room, line, None),
            self._topic_not_set,
            errbackArgs=(session,),
        )
        session.wait_for(setting)

    @staticmethod
    def _send_topic(gathered: Gathered, session: Session, name: str) -> None:
        if gathered.topic is not None:
            session.send(wire.notice(wire.ROOM_TOPIC.format(name, gathered.topic)))
        else:
            session.send(wire.notice(wire.ROOM_NO_TOPIC.format(name)))

    @staticmethod
    def _topic_not_set(failure: Failure, session: Session) -> None:
        failure.trap(ClusterUnreachable)
        session.send(wire.notice(wire.ROOMS_UNAVAILABLE))
