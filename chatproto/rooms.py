"""Rooms: the named rooms of a single server, beside the lobby.

Every registered user is in the lobby, C{#accueil}: the L{Room} of
chatproto/room.py, the chat of before rooms, line for line. L{Rooms} holds
the named rooms (L{NamedRoom}: its members in the order they joined, its
topic), their bounds (C{--max-rooms}, C{--rooms-per-user}), the commands
C{/join}, C{/part}, C{/rooms}, C{/topic}, and each user's place among them
(L{Member}: its rooms, its current room, the lines of its rooms not
written to it yet), which the session holds in its C{rooms} slot (None:
the lobby only, as every user who never joined a room).

A room's line costs work for its members only: it is added to each
member's L{Member.pending}, and a pass at the end of the reactor turn
writes each member's lines in one write (or at once, past BATCH_LINES or
BATCH_BYTES). The lobby's lines go through the lobby's L{FanOut}; a user
gets both in the order they were made, by this invariant: the lines of its
rooms waiting for it are older than the lobby's lines waiting for it. A
room's line is queued after the lobby's lines made before it that the
member has not been given (L{Rooms._queue} takes them from the FanOut
into the member's queue), and whatever writes the lobby's lines to a
member, or any other line (L{chatproto.session.Session.send}), writes the
lines of its rooms waiting first, in the same write (L{FanOut._serve}):
a user in several rooms and the lobby gets one write per pass. Why not a
FanOut per room: a FanOut's place in its log is the session's C{seen}, one
per user; and a user in several rooms must get their lines in the order
they were made, which one queue per user gives.

Rooms are a single server's for now: in a cluster (a lobby with a relay)
each of the commands answers one line, L{wire.ROOMS_CLUSTER}.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from chatproto import wire
from chatproto.fanout import BATCH_BYTES, BATCH_LINES
from chatproto.history import History, Kept, RoomHistory
from chatproto.session import CHATTING, ChatError, Session

if TYPE_CHECKING:
    from chatproto.room import Room

LOBBY = wire.LOBBY
# A room's name as typed: "#" (which may be left out), then 1 to 24 of
# a-z, 0-9, "_", "-", in any letter case (shown in lower case).
NAME = re.compile(r"#?([A-Za-z0-9_-]{1,24})")
TOPIC_MOST = 200  # characters


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
        self.members: dict[Session, None] = {}
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
        self._waiting: list[Member] = []  # members with lines pending
        self._call: IDelayedCall | None = None

    def _single(self) -> None:
        """Refuse the rooms' commands in a cluster (a lobby with a relay)."""
        if self.lobby.relay is not None:
            raise ChatError(wire.ROOMS_CLUSTER)

    def _history(self) -> RoomHistory:
        # A single server's history keeps every room's lines (MemoryHistory
        # or the store's StoreHistory); a cluster's never meets a room.
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
        """A line of C{room}: kept in its history, and queued for every
        member but C{sender}."""
        self._history().record(line, room.name)
        delivered = 0
        for session in tuple(room.members):  # a write may cut a member
            if session is not sender:
                delivered += self._queue(session, line)
        self.lobby.metrics.deliveries += delivered

    def _queue(self, session: Session, line: bytes) -> int:
        """Queue C{line} for C{session}, after the lobby's lines made before
        it (queued first, if the lobby's pass has not given them yet: see
        the module's invariant); whether it was queued."""
        member = _member(session)
        if member is None or session.state is not CHATTING:
            return 0
        pending = member.pending
        waiting = bool(pending)
        earlier = self.lobby.take_unseen(session)
        if earlier:
            pending.append(earlier)
            member.pending_bytes += len(earlier)
        pending.append(line)
        member.pending_bytes += len(line)
        if not waiting:
            self._waiting.append(member)
            if self._call is None:
                self._call = self.lobby.clock.callLater(0, self._run_pass)
        elif len(pending) >= BATCH_LINES or member.pending_bytes >= BATCH_BYTES:
            member.flush()
        return 1

    def _run_pass(self) -> None:
        """The end of the reactor turn: each member waiting gets its lines,
        in one write."""
        self._call = None
        waiting, self._waiting = self._waiting, []
        for member in waiting:
            if member.session.state is CHATTING:
                # with the lobby's lines made since, in the same write
                self.lobby.catch_up(member.session)
            else:
                member.pending.clear()

    def flush(self) -> None:
        """Give every member its rooms' lines now (at shutdown)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._run_pass()

    # Membership

    def join(self, session: Session, argument: str) -> None:
        """C{/join #NAME}: join the room (made if need be), or make it the
        current one if the session is in it already (C{#accueil}: the
        lobby)."""
        self._single()
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
        if room is None:
            if len(self.rooms) >= config.max_rooms:
                raise ChatError(wire.TOO_MANY_ROOMS.format(config.max_rooms))
            room = self.rooms[name] = NamedRoom(name)
        if member is None:
            member = Member(session)
            session.rooms = member
        room.members[session] = None
        member.joined.append(room)
        member.current = room
        self._tell_current(session, room)
        if len(room.members) <= config.join_notice_limit:
            assert session.nick is not None
            line = wire.room_arrival(self.lobby.stamp(), name, session.nick)
            self.publish(room, line, session)

    def _tell_current(self, session: Session, room: NamedRoom | None) -> None:
        """The answer to /join: the current room, its members, its topic."""
        if room is None:
            session.send(wire.notice(wire.ROOM_CURRENT.format(LOBBY)))
            self.lobby.registry.names().addCallback(session.send_names)
            return
        session.send(wire.notice(wire.ROOM_CURRENT.format(room.name)))
        self.send_names(session, room)
        if room.topic is not None:
            session.send(wire.notice(wire.ROOM_TOPIC.format(room.name, room.topic)))

    @staticmethod
    def send_names(session: Session, room: NamedRoom) -> None:
        names = [member.nick for member in room.members if member.nick is not None]
        session.send(wire.user_list(names, len(names)))

    def part(self, session: Session, argument: str) -> None:
        """C{/part [#NAME]}: leave the room (by default, the current one)."""
        self._single()
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
        for room in tuple(member.joined):
            self._remove(session, member, room)
        member.pending.clear()
        member.pending_bytes = 0

    # The other commands

    def list_names(self, session: Session) -> None:
        """C{/list}: the current room's members (the lobby's: every user)."""
        member = _member(session)
        if member is None or member.current is None:
            self.lobby.registry.names().addCallback(session.send_names)
        else:
            self.send_names(session, member.current)

    def list_rooms(self, session: Session, argument: str) -> None:
        """C{/rooms}: every room with a member, the lobby first."""
        self._single()
        rows = [(LOBBY, len(self.lobby.sessions))]
        rows += sorted((name, len(room.members)) for name, room in self.rooms.items())
        session.send(wire.rooms_block(rows))

    def topic(self, session: Session, argument: str, operator: bool) -> None:
        """C{/topic}: the current room's topic; C{/topic TEXT} (C{operator}:
        whether the session is one) sets it, and tells the room."""
        self._single()
        member = _member(session)
        room = None if member is None else member.current
        name = LOBBY if room is None else room.name
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
        room.topic = argument
        assert session.nick is not None
        line = wire.room_topic_set(self.lobby.stamp(), name, argument, session.nick)
        self.publish(room, line, None)
