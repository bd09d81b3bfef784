"""Rooms: the named rooms beside the lobby, on a server or across a cluster.

Every registered user is in the lobby, C{#accueil}: the L{Room} of
chatproto/room.py, the chat of before rooms, line for line. L{Rooms} holds
the named rooms (L{NamedRoom}: its members in the order they joined, its
topic), their bounds (C{--max-rooms}, C{--rooms-per-user}), the commands
C{/join}, C{/part}, C{/rooms}, C{/topic}, and each user's place among them
(L{Member}: its rooms, its current room, the lines of its rooms not
written to it yet), which the session holds in its C{rooms} slot (None:
the lobby only, as every user who never joined a room).

A room's line costs work for its members only: it is added to each
member's L{Member.pending}, and a pass from the end of the reactor turn
writes each member's lines in one write (or at once, past BATCH_LINES or
BATCH_BYTES), pass_size members a turn, and, while the rooms deliver more
than batch_threshold lines a second, at most one pass per batch_delay:
the lobby's FanOut's rules (L{Rooms._run_pass}). The lobby's lines go
through the lobby's L{FanOut}; a user gets both in the order they were
made, by this invariant: the lines of its rooms waiting for it are older
than the lobby's lines waiting for it. A room's line is queued after the
lobby's lines made before it that the member has not been given
(L{Rooms._queue} takes them from the FanOut into the member's queue), and
whatever writes the lobby's lines to a member, or any other line
(L{chatproto.session.Session.send}), writes the lines of its rooms
waiting first, in the same write (L{FanOut._serve}): a user in several
rooms and the lobby gets one write per pass. Why not a FanOut per room: a
FanOut's place in its log is the session's C{seen}, one per user; and a
user in several rooms must get their lines in the order they were made,
which one queue per user gives.

On a node of a cluster (L{attach}: a L{Cluster}, chatproto/cluster_roles.py's
ClusterRooms), the rooms span the nodes: each node holds its own members
of a room here, and the cluster holds the rest in Redis (every member, in
the order they joined, the topic, the rooms' count), which /join, /list,
/rooms and /topic read; a room's lines reach the other nodes that have
members in it (L{Cluster.publish}), and theirs come back here
(L{deliver}), queued as the room's own, after the lobby's lines made
before them (docs/architecture.md, "Rooms across the nodes of a cluster").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from chatproto import wire
from chatproto.fanout import BATCH_BYTES, BATCH_LINES
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


class NamedRoom:
    """A room other than the lobby: its members, in the order they joined
    (a dict as an ordered set), and its topic. It exists while it has a
    member (L{Rooms} drops it, and its topic, with its last)."""

    __slots__ = ("members", "name", "topic")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[Session, Member] = {}
        self.topic: str | None = None


class Member:
    """One user's named rooms: those it is in (in the order it joined
    them), its current one (None: the lobby), and the lines of its rooms
    made and not yet written to it (oldest first), which L{flush} writes
    in one write. L{Rooms} writes the rest; the lobby's FanOut and the
    session call L{flush} before they write anything else to the user."""

    __slots__ = ("current", "joined", "pending", "pending_bytes", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.current: NamedRoom | None = None
        self.joined: list[NamedRoom] = []
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def take(self) -> bytes:
        """The lines waiting, joined, for the caller to write."""
        data = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return data

    def flush(self) -> None:
        """Write the lines waiting, in one write."""
        if self.pending:
            self.session.connection.write(self.take())


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
        # The members with lines waiting, in the order their first came;
        # the pass under way (last first), and when it began; the rate of
        # deliveries, measured each second (see _schedule_pass).
        self._waiting: list[Member] = []
        self._pass: list[Member] = []
        self._began = float("-inf")
        self._call: IDelayedCall | None = None
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
        the other nodes with members in it), and queued for every member
        here but C{sender}."""
        if self.cluster is not None:
            self.cluster.publish(room.name, line)
        else:
            self._history().record(line, room.name)
        self.lobby.metrics.deliveries += self._queue(room, line, sender)

    def deliver(self, name: str, lines: bytes) -> None:
        """Lines of the room C{name} from another node of the cluster: for
        every member here (none: nothing to do)."""
        room = self.rooms.get(name)
        if room is None:
            return
        queued = self._queue(room, lines, None)
        self.lobby.metrics.deliveries += queued * lines.count(b"\n")

    def here(self) -> list[tuple[str, str]]:
        """Each room's members here, (room, nickname), in the order they
        joined: what a node registers again in a cluster."""
        return [
            (name, session.nick)
            for name, room in self.rooms.items()
            for session in room.members
            if session.nick is not None
        ]

    def _queue(self, room: NamedRoom, line: bytes, sender: Session | None) -> int:
        """Queue C{line} for every member of C{room} but C{sender}, each after
        the lobby's lines made before it that it has not been given (taken
        from the lobby's fan-out into its queue: see the module's
        invariant); how many it was queued for.

        One loop over the members, without a call for most (profiled: a
        call per member made a room's line cost seven times a lobby's)."""
        fanout = self.lobby.fanout
        end = fanout.end
        waiting = self._waiting
        size = len(line)
        queued = 0
        for session, member in tuple(room.members.items()):  # writes may cut
            if session is sender or session.state is not CHATTING:
                continue
            pending = member.pending
            if not pending:
                waiting.append(member)
            if session.seen < end:
                earlier = fanout.take(session)
                if earlier:
                    pending.append(earlier)
                    member.pending_bytes += len(earlier)
            pending.append(line)
            member.pending_bytes += size
            queued += 1
            if len(pending) >= BATCH_LINES or member.pending_bytes >= BATCH_BYTES:
                member.flush()  # may cut a reader: a new lobby line
                end = fanout.end
        if waiting and self._call is None and not self._pass:
            self._schedule_pass()
        self._delivered += queued
        return queued

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
        """Give the next pass_size members waiting their lines, each in one
        write with the lobby's lines made since; a pass over more members
        goes on in the next reactor turns, so that no turn is long."""
        self._call = None
        clock = self.lobby.clock
        if not self._pass:
            self._pass, self._waiting = self._waiting, []
            self._pass.reverse()
            self._began = now = clock.seconds()
            if now - self._counted_since >= 1.0:
                self._rate = self._delivered / (now - self._counted_since)
                self._counted_since, self._delivered = now, 0
        chunk = self._pass
        catch_up = self.lobby.catch_up
        for _ in range(min(self.config.pass_size, len(chunk))):
            member = chunk.pop()
            if member.session.state is CHATTING:
                catch_up(member.session)  # its lines and the lobby's: one write
            else:
                member.pending.clear()
                member.pending_bytes = 0
        if chunk:
            self._call = clock.callLater(0, self._run_pass)
        elif self._waiting:
            self._schedule_pass()

    def flush(self) -> None:
        """Give every member its rooms' lines now (at shutdown)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._waiting = self._pass[::-1] + self._waiting
        self._pass = []
        while self._waiting or self._pass:
            self._run_pass()
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None

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
            room = self.rooms[name] = NamedRoom(name)
        if member is None:
            member = Member(session)
            session.rooms = member
        room.members[session] = member
        member.joined.append(room)
        member.current = room
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
            room = self.rooms[name] = NamedRoom(name)
        member = _member(session)
        if member is None:
            member = Member(session)
            session.rooms = member
        room.members[session] = member
        member.joined.append(room)
        member.current = room
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

    def _remove(self, session: Session, member: Member, room: NamedRoom) -> None:
        del room.members[session]
        member.joined.remove(room)
        if member.current is room:
            member.current = None
        if not room.members:  # nobody left: the room, and its topic, go
            del self.rooms[room.name]

    def leave_all(self, session: Session) -> None:
        """The session left the server: out of every room, without a word
        (the lobby's departure line is the only one). Its lines waiting
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
        member.pending.clear()
        member.pending_bytes = 0

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
