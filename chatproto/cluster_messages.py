"""What the nodes of a cluster tell each other: the pub/sub messages.

As L{chatproto.wire} is for the lines users get, this module is the one
home of the messages nodes exchange through Redis's pub/sub: one frozen
dataclass per kind, L{encode} to bytes, L{decode} back (a message that
does not parse raises L{MalformedMessage}, never anything else). The
grammar, by channel (see L{chatproto.cluster_redis} for their names)::

    all       "ORIGIN LINES"        Public: a reactor turn's public lines
              "ORIGIN#ID LINE"      LateDeparture: ID is its entry in the
                                    stream "left" (announced after an outage)
              "ORIGIN@NODE LINE"    ReapedDeparture: a user of NODE, which
                                    ORIGIN reaped
    node:ID   "NICKKEY LINE"        Private: a line for that user of node ID
              "!NICKKEY OPERATOR ADDRESS REASON"
                                    Kick of that user (ADDRESS: "-" unknown)
              "!NICKKEY+MINUTES OPERATOR ADDRESS REASON"
                                    Kick that bans its address MINUTES
              "?OPKEY+NICKKEY LINE" Answer to OPKEY's ban of NICKKEY
              "#NAME+Nick TOPIC<LF>MEMBER<LF>..."
                                    Joined: Nick, of node ID, is in room
                                    NAME now (TOPIC '': none), the
                                    room's members in the order they came
    room:NAME "ORIGIN LINES"        RoomLines: lines of room NAME made on
                                    ORIGIN, for the nodes with members in it
    bans      "ORIGIN +ADDRESS<TAB>VALUE"
                                    BanShared (VALUE: L{Ban.shared}'s)
              "ORIGIN -ADDRESS"     BanLifted

ORIGIN and NODE are node ids (letters and digits); NICKKEY and OPKEY are
nickname keys (L{chatproto.registry.nick_key}). Three kinds are also built
by Lua scripts in Redis, byte for byte as L{encode} does: a Public with one
departure (C{_LEAVE}), LateDeparture (C{_ANNOUNCE}) and ReapedDeparture
(C{_REAP}); tests decode what those scripts publish.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Channel(enum.Enum):
    """The four kinds of pub/sub channel, each with its own grammar."""

    PUBLIC = "all"  # every node: public lines, departures
    NODE = "node"  # one node: lines for its users, kicks, answers
    BANS = "bans"  # every node: changes of the bans
    ROOM = "room"  # the nodes with members in one room: its lines


class MalformedMessage(ValueError):
    """A message on a cluster channel that no kind of message reads as."""


@dataclass(frozen=True)
class Public:
    """Public lines made on node C{origin}, for every user of the others."""

    origin: bytes
    lines: bytes


@dataclass(frozen=True)
class RoomLines:
    """Lines of one room (its channel's) made on node C{origin}, for the
    members of the other nodes."""

    origin: bytes
    lines: bytes


@dataclass(frozen=True)
class LateDeparture:
    """A departure that node C{origin} could not announce when it happened;
    C{entry} names it in the stream C{left} (a node may hear it twice)."""

    origin: bytes
    entry: bytes
    line: bytes


@dataclass(frozen=True)
class ReapedDeparture:
    """The departure of a user of C{node}, which C{origin} reaped (C{node},
    if only stalled, must not tell its own users that they left)."""

    origin: bytes
    node: bytes
    line: bytes


@dataclass(frozen=True)
class Private:
    """A private line for C{target} (a nickname key), a user of the node
    the message is published to."""

    target: str
    line: bytes


@dataclass(frozen=True)
class Kick:
    """An operator of another node kicks C{target} (a nickname key), a user
    of this node; C{minutes} (if not 0) bans its address that long, and the
    target's node answers the operator with an L{Answer}."""

    target: str
    minutes: int
    operator: str
    address: str | None  # the operator's; None: unknown (a UNIX socket)
    reason: str


@dataclass(frozen=True)
class Answer:
    """The line that answers C{operator}'s ban of C{target} (nickname keys),
    for the node that holds C{operator}."""

    operator: str
    target: str
    line: bytes


@dataclass(frozen=True)
class Joined:
    """C{nick}, a user of the node the message is published to, is in room
    C{room} from this message on (the room's join script publishes it:
    where it falls among the room's lines is where the user came in); the
    room's C{members}, in the order they came, and its C{topic}."""

    room: str
    nick: str
    members: list[str]
    topic: str | None


@dataclass(frozen=True)
class BanShared:
    """A ban made on node C{origin}: C{value} is how Redis keeps it
    (L{chatproto.bans.Ban.shared})."""

    origin: bytes
    address: str
    value: bytes


@dataclass(frozen=True)
class BanLifted:
    """A ban lifted on node C{origin}."""

    origin: bytes
    address: str


PublicMessage = Public | LateDeparture | ReapedDeparture
NodeMessage = Private | Kick | Answer | Joined
BanMessage = BanShared | BanLifted
Message = PublicMessage | NodeMessage | BanMessage | RoomLines


def encode(message: Message) -> bytes:
    """The bytes that publish C{message} (on the channel of its kind)."""
    if isinstance(message, Public):
        return message.origin + b" " + message.lines
    if isinstance(message, RoomLines):
        return message.origin + b" " + message.lines
    if isinstance(message, LateDeparture):
        return message.origin + b"#" + message.entry + b" " + message.line
    if isinstance(message, ReapedDeparture):
        return message.origin + b"@" + message.node + b" " + message.line
    if isinstance(message, Private):
        return message.target.encode() + b" " + message.line
    if isinstance(message, Kick):
        ban = b"+%d" % message.minutes if message.minutes else b""
        body = f"{message.operator} {message.address or '-'} {message.reason}"
        return b"!" + message.target.encode() + ban + b" " + body.encode()
    if isinstance(message, Answer):
        head = f"?{message.operator}+{message.target}".encode()
        return head + b" " + message.line
    if isinstance(message, Joined):
        body = "\n".join([message.topic or "", *message.members])
        return f"#{message.room}+{message.nick} {body}".encode()
    if isinstance(message, BanShared):
        change = b" +" + message.address.encode() + b"\t" + message.value
        return message.origin + change
    return message.origin + b" -" + message.address.encode()


def decode(channel: Channel, data: bytes) -> Message:
    """The message C{data}, heard on a channel of kind C{channel}; raise
    L{MalformedMessage} if it is none."""
    head, space, rest = data.partition(b" ")
    if not space or not head:
        raise MalformedMessage(f"no head on the {channel.value} channel: {data!r:.80}")
    if channel is Channel.PUBLIC:
        return _public(head, rest)
    if channel is Channel.NODE:
        return _node(head, rest, data)
    if channel is Channel.ROOM:
        return RoomLines(head, rest)
    return _ban(head, rest, data)


def _public(head: bytes, rest: bytes) -> PublicMessage:
    origin, at, node = head.partition(b"@")
    if at:
        return ReapedDeparture(origin, node, rest)
    origin, late, entry = head.partition(b"#")
    if late:
        return LateDeparture(origin, entry, rest)
    return Public(origin, rest)


def _node(head: bytes, rest: bytes, data: bytes) -> NodeMessage:
    text = head.decode("ascii", "replace")
    if text.startswith("!"):
        target, plus, banned = text[1:].partition("+")
        if plus and not (banned.isascii() and banned.isdigit()):
            raise MalformedMessage(f"a kick with no minutes: {data!r:.80}")
        operator, _, tail = rest.decode("utf-8", "replace").partition(" ")
        address, _, reason = tail.partition(" ")
        minutes = int(banned) if plus else 0
        return Kick(
            target, minutes, operator, None if address == "-" else address, reason
        )
    if text.startswith("?"):
        operator, plus, target = text[1:].partition("+")
        if not plus:
            raise MalformedMessage(f"an answer with no target: {data!r:.80}")
        return Answer(operator, target, rest)
    if text.startswith("#"):
        room, plus, nick = text[1:].partition("+")
        if not plus:
            raise MalformedMessage(f"a join with no nickname: {data!r:.80}")
        topic, *members = rest.decode("utf-8", "replace").split("\n")
        return Joined(room, nick, members, topic or None)
    return Private(text, rest)


def _ban(origin: bytes, rest: bytes, data: bytes) -> BanMessage:
    change, address = rest[:1], rest[1:]
    if change == b"-":
        return BanLifted(origin, address.decode("ascii", "replace"))
    address, tab, value = address.partition(b"\t")
    if change != b"+" or not tab:
        raise MalformedMessage(f"not a change of the bans: {data!r:.80}")
    return BanShared(origin, address.decode("ascii", "replace"), value)
