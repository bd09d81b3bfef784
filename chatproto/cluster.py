"""Cluster mode: several server processes serve one chat through one Redis.

Each process is a node. L{RedisRegistry} is the registry twin: the nicknames
of every node, kept in Redis and decided there by Lua scripts, so that each
decision is atomic. L{ClusterNode} makes one process a node: it is the
factory's registry (it refuses registrations while Redis is away) and its
relay (pub/sub), and it keeps the node's lease, reaps the nodes that died,
and registers its users again when Redis returns.

In Redis (the database of C{--redis}), every key starts with
C{chatproto:CLUSTER:}:

    users           hash    nickname key (lower case) -> "NODE<TAB>Nick"
    order           zset    Nick, scored by its registration number
    seq             string  the last registration number (goes with the last user)
    nodes           set     the nodes that hold users, or held some
    node:ID:users   set     the nickname keys node ID holds
    node:ID:lease   string  exists while node ID is alive: it renews the expiry
    epoch           string  written once: if it changes, Redis lost its data
    left            stream  departures announced late (after an outage), kept
                            a minute for the nodes that come back later still
    bans            hash    banned address -> "UNTIL<TAB>BY<TAB>REASON"
                            (moderation.py); expired ones deleted on reading
    history, history:bytes  the chat's history (see chatproto/history.py)

Pub/sub channels belong to no database, so their names carry its number:

    chatproto:CLUSTER:DB:all        "ORIGIN LINES", public lines (a reactor
                                    turn's worth); "ORIGIN#ID LINE" for a
                                    late departure, ID its entry in "left";
                                    "ORIGIN@NODE LINE" for the departure of
                                    a user of NODE, which ORIGIN reaped
    chatproto:CLUSTER:DB:node:ID    "NICKKEY LINE", private lines for node ID;
                                    "!NICKKEY OPERATOR ADDRESS REASON", a kick
                                    of a user of node ID (moderation.py);
                                    "!NICKKEY+MINUTES ...", a ban of it;
                                    "?OPKEY+NICKKEY LINE", the answer to
                                    the ban of NICKKEY, for operator OPKEY
    chatproto:CLUSTER:DB:bans       "ORIGIN +ADDRESS<TAB>UNTIL<TAB>BY<TAB>REASON"
                                    a ban, "ORIGIN -ADDRESS" its end

Every script builds its key names from a prefix, so this needs one Redis
server (or a primary with replicas), not a Redis Cluster.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from twisted.application import service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import wire

# At module level: the cluster mode is Redis. txredisapi, which _redis needs,
# is an optional extra; tap.py imports this module only for --redis, so a
# server without it runs without txredisapi.
from chatproto._redis import Commands, Subscription
from chatproto.bans import Ban
from chatproto.config import ClusterConfig
from chatproto.history import RedisHistory
from chatproto.moderation import Moderation
from chatproto.registry import (
    NicknameTaken,
    Reach,
    RegistryUnavailable,
    nick_key,
)

log = Logger()

NICK_LOST = (
    "Votre pseudo {} a été pris par quelqu'un d'autre pendant une coupure "
    "du serveur : reconnectez-vous avec un autre pseudo"
)


# Lua. KEYS is not used: every key is built from the prefix in ARGV[1].

_LUA_COMMON = b"""
local p = ARGV[1]
local function owner(v)
  local tab = string.find(v, '\\t', 1, true)
  return string.sub(v, 1, tab - 1), string.sub(v, tab + 1)
end
-- Remove nickname KEY if node NODE holds it; return its Nick if so.
local function drop(node, key)
  redis.call('SREM', p .. 'node:' .. node .. ':users', key)
  local v = redis.call('HGET', p .. 'users', key)
  if not v then return false end
  local holder, nick = owner(v)
  if holder ~= node then return false end
  redis.call('HDEL', p .. 'users', key)
  redis.call('ZREM', p .. 'order', nick)
  if redis.call('ZCARD', p .. 'order') == 0 then redis.call('DEL', p .. 'seq') end
  return nick
end
local function take(node, key, nick)
  if redis.call('HSETNX', p .. 'users', key, node .. '\\t' .. nick) == 0 then
    return false
  end
  redis.call('ZADD', p .. 'order', redis.call('INCR', p .. 'seq'), nick)
  redis.call('SADD', p .. 'node:' .. node .. ':users', key)
  return true
end
"""

# ARGV: prefix, node, key, Nick. -1: the node has no lease; 0: taken; 1: taken now.
_CLAIM = b"""
if redis.call('EXISTS', p .. 'node:' .. ARGV[2] .. ':lease') == 0 then return -1 end
if take(ARGV[2], ARGV[3], ARGV[4]) then return 1 end
return 0
"""

# ARGV: prefix, node, key[, channel, payload]: the payload is published if the
# nickname was released (the departure line of a node that is stopping).
_RELEASE = b"""
local nick = drop(ARGV[2], ARGV[3])
if nick and ARGV[4] then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
if nick then return 1 end
return 0
"""

# ARGV: prefix, stop index. Returns {total, {Nick...}}.
_NAMES = b"""
return {redis.call('ZCARD', p .. 'order'),
        redis.call('ZRANGE', p .. 'order', 0, tonumber(ARGV[2]))}
"""

# ARGV: prefix, node, lease ms, the epoch the node knows. 1: the lease is
# renewed (it was held, or it had expired but no node reaped this one yet:
# nobody was told anything, so it is taken again); 0: this node was reaped
# (its users announced gone); -1: Redis lost its data (another epoch, or none).
_RENEW = b"""
local lease = p .. 'node:' .. ARGV[2] .. ':lease'
if redis.call('SET', lease, '1', 'PX', ARGV[3], 'XX') then return 1 end
if redis.call('GET', p .. 'epoch') ~= ARGV[4] then return -1 end
if redis.call('SISMEMBER', p .. 'nodes', ARGV[2]) == 0 then return 0 end
redis.call('SET', lease, '1', 'PX', ARGV[3])
return 1
"""

# ARGV: prefix, node, lease ms, new epoch, the epoch the node knows (or ''),
# then key, Nick for every user the node has. If the node was reaped in the
# epoch it knows, changes nothing and says so: its users were announced gone.
# Otherwise takes the lease; registers those users again; drops what the node
# held but no longer has. Returns {epoch, {conflicting keys}, {dropped Nicks},
# {late departures}, reaped (0 or 1)}.
_SYNC = b"""
local node = ARGV[2]
local mine = p .. 'node:' .. node .. ':users'
local epoch = redis.call('GET', p .. 'epoch')
if epoch and epoch == ARGV[5]
  and redis.call('SISMEMBER', p .. 'nodes', node) == 0 then
  return {epoch, {}, {}, {}, 1}
end
redis.call('SET', p .. 'node:' .. node .. ':lease', '1', 'PX', ARGV[3])
redis.call('SADD', p .. 'nodes', node)
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', p .. 'epoch', epoch)
end
local wanted = {}
for i = 6, #ARGV, 2 do wanted[ARGV[i]] = true end
local dropped = {}
for _, key in ipairs(redis.call('SMEMBERS', mine)) do
  if not wanted[key] then
    local nick = drop(node, key)
    if nick then table.insert(dropped, nick) end
  end
end
local conflicts = {}
for i = 6, #ARGV, 2 do
  local key = ARGV[i]
  local v = redis.call('HGET', p .. 'users', key)
  if not v then
    take(node, key, ARGV[i + 1])
  elseif owner(v) == node then
    redis.call('SADD', mine, key)
  else
    redis.call('SREM', mine, key)
    table.insert(conflicts, key)
  end
end
return {epoch, conflicts, dropped, redis.call('XRANGE', p .. 'left', '-', '+'), 0}
"""

# ARGV: prefix, origin, channel, retention ms, then departure lines. Departures
# a node could not announce while it was cut off: published, and kept a while
# in the stream "left", for the nodes that come back after this one.
_ANNOUNCE = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local log = p .. 'left'
for i = 5, #ARGV do
  local id = redis.call('XADD', log, '*', 'origin', ARGV[2], 'line', ARGV[i])
  redis.call('PUBLISH', ARGV[3], ARGV[2] .. '#' .. id .. ' ' .. ARGV[i])
end
redis.call('XTRIM', log, 'MINID', now - tonumber(ARGV[4]))
redis.call('PEXPIRE', log, ARGV[4])
return #ARGV - 4
"""

# ARGV: prefix, node, channel, origin, departure prefix. Every node but this
# one whose lease is gone: its users are released and their departures
# published ("ORIGIN@DEAD LINE": the dead node, if it was only stalled, must
# not tell its users they left), at once; a second reaper finds nothing.
# Returns the Nicks.
_REAP = b"""
local gone = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  local lease = p .. 'node:' .. node .. ':lease'
  if node ~= ARGV[2] and redis.call('EXISTS', lease) == 0 then
    for _, key in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':users')) do
      local nick = drop(node, key)
      if nick then
        table.insert(gone, nick)
        redis.call('PUBLISH', ARGV[3],
          ARGV[4] .. '@' .. node .. ' ' .. ARGV[5] .. nick .. '\\n')
      end
    end
    redis.call('DEL', p .. 'node:' .. node .. ':users')
    redis.call('SREM', p .. 'nodes', node)
  end
end
return gone
"""

# ARGV: prefix, node, channel, origin, departure prefix. A node that stops:
# its remaining users are released and announced, its lease is given back.
_LEAVE = b"""
local node = ARGV[2]
local gone = {}
for _, key in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':users')) do
  local nick = drop(node, key)
  if nick then table.insert(gone, nick) end
end
for _, nick in ipairs(gone) do
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[5] .. nick .. '\\n')
end
redis.call('DEL', p .. 'node:' .. node .. ':users', p .. 'node:' .. node .. ':lease')
redis.call('SREM', p .. 'nodes', node)
return gone
"""

# ARGV: prefix, node, key, channel prefix, payload. Publishes a private line
# on the channel of the node that holds KEY; returns how many heard it.
_WHISPER = b"""
local v = redis.call('HGET', p .. 'users', ARGV[3])
if not v then return 0 end
local holder = owner(v)
if holder == ARGV[2] then return 0 end
return redis.call('PUBLISH', ARGV[4] .. holder, ARGV[5])
"""

CLAIM, RELEASE, NAMES, RENEW, SYNC, ANNOUNCE, REAP, LEAVE, WHISPER = (
    _LUA_COMMON + body
    for body in (
        _CLAIM,
        _RELEASE,
        _NAMES,
        _RENEW,
        _SYNC,
        _ANNOUNCE,
        _REAP,
        _LEAVE,
        _WHISPER,
    )
)

# Bans (moderation.py). ARGV: prefix, address, value, channel, payload.
BAN = (
    _LUA_COMMON
    + b"""
redis.call('HSET', p .. 'bans', ARGV[2], ARGV[3])
return redis.call('PUBLISH', ARGV[4], ARGV[5])
"""
)
# ARGV: prefix, address, channel, payload.
UNBAN = (
    _LUA_COMMON
    + b"""
redis.call('HDEL', p .. 'bans', ARGV[2])
return redis.call('PUBLISH', ARGV[3], ARGV[4])
"""
)
# ARGV: prefix, now (ms). The bans in force, address then value; the expired
# ones are deleted.
BANS = (
    _LUA_COMMON
    + b"""
local all = redis.call('HGETALL', p .. 'bans')
local now = tonumber(ARGV[2])
local kept = {}
for i = 1, #all, 2 do
  local t = tonumber(string.match(all[i + 1], '^[^\t]*'))
  if t == nil or t * 1000 <= now then
    redis.call('HDEL', p .. 'bans', all[i])
  else
    kept[#kept + 1] = all[i]
    kept[#kept + 1] = all[i + 1]
  end
end
return kept
"""
)


class Renewal(enum.Enum):
    """What renewing its lease told a node."""

    RENEWED = 1  # held, or expired with nobody told: this node holds it again
    REAPED = 0  # the other nodes took it for dead and announced its users gone
    DATA_LOST = -1  # Redis lost its data: register the users again


class LeaseLost(RegistryUnavailable):
    """This node's lease is gone (it was thought dead, or Redis lost its data):
    it must register its users again before it takes new ones."""


@dataclass(frozen=True)
class Synced:
    """What registering a node's users again found."""

    epoch: str
    conflicts: list[str]  # keys of local users whose nickname someone else has
    dropped: list[str]  # Nicks the node held in Redis but no longer has
    announced: list[tuple[bytes, bytes, bytes]]  # (id, origin, line) kept a while
    reaped: bool = False  # taken for dead in the epoch it knew: nothing was done


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisRegistry:
    """The registry of one node of a cluster, kept in Redis.

    The interface of L{chatproto.registry.MemoryRegistry}: C{claim},
    C{release}, C{names}, for every node of the cluster at once. A node
    claims under its lease: L{sync} takes it, L{renew} keeps it; without it,
    L{claim} fails with L{LeaseLost}. Every call fails with
    L{RegistryUnavailable} when Redis does not answer in time.
    """

    def __init__(
        self, commands: Commands, cluster: str, node: str, lease: float
    ) -> None:
        self.commands = commands
        self.node = node
        self.prefix = f"chatproto:{cluster}:"
        db = commands.address.db
        self.public_channel = f"chatproto:{cluster}:{db}:all".encode()
        self.node_channel_prefix = f"chatproto:{cluster}:{db}:node:".encode()
        self.node_channel = self.node_channel_prefix + node.encode()
        self.bans_channel = f"chatproto:{cluster}:{db}:bans".encode()
        self.origin = node.encode()
        self.lease_ms = max(1, round(lease * 1000))

    def _eval(self, script: bytes, *args: Any) -> Deferred[Any]:
        return self.commands.eval(script, (self.prefix, *args))

    # The registry

    def claim(self, nick: str) -> Deferred[str]:
        def decided(result: int) -> str:
            if result == -1:
                raise LeaseLost("this node has no lease in Redis")
            if result == 0:
                raise NicknameTaken(nick)
            return nick

        return self._eval(CLAIM, self.node, nick_key(nick), nick).addCallback(decided)

    def release(self, nick: str, announce: bytes | None = None) -> Deferred[None]:
        """Give C{nick} back if this node holds it; if C{announce} is a line,
        publish it to the other nodes then, in the same step."""
        args: tuple[Any, ...] = (self.node, nick_key(nick))
        if announce is not None:
            args += (self.public_channel, self.origin + b" " + announce)
        return self._eval(RELEASE, *args).addCallback(lambda _: None)

    def names(self, limit: int | None = None) -> Deferred[tuple[list[str], int]]:
        if limit is not None and limit <= 0:
            return self._eval(NAMES, -1).addCallback(lambda r: ([], int(r[0])))
        stop = -1 if limit is None else limit - 1

        def read(result: list[Any]) -> tuple[list[str], int]:
            return [_text(n) for n in result[1]], int(result[0])

        return self._eval(NAMES, stop).addCallback(read)

    # The node

    def sync(self, nicks: Iterable[str], known: str = "") -> Deferred[Synced]:
        """Take the lease and register these nicknames for this node; the
        node holds exactly these afterwards, but those someone else has.

        C{known} is the epoch the node was in ("": none). If the other nodes
        reaped it in that epoch, they announced its users gone: registering
        them again would bring back, unannounced, users everyone saw leave.
        Then nothing is done, and the result says C{reaped}."""
        args: list[str] = []
        for nick in nicks:
            args += (nick_key(nick), nick)

        def read(result: list[Any]) -> Synced:
            epoch, conflicts, dropped, left, reaped = result
            announced = []
            for entry, fields in left:
                values = dict(zip(fields[::2], fields[1::2], strict=True))
                announced.append((entry, values[b"origin"], values[b"line"]))
            return Synced(
                _text(epoch),
                [_text(k) for k in conflicts],
                [_text(n) for n in dropped],
                announced,
                int(reaped) == 1,
            )

        d = self._eval(
            SYNC, self.node, self.lease_ms, secrets.token_hex(8), known, *args
        )
        return d.addCallback(read)

    def renew(self, epoch: str) -> Deferred[Renewal]:
        """Extend the lease, in the epoch the node knows ("": none); if it
        was gone, say whether this node was reaped (see L{Renewal})."""
        d = self._eval(RENEW, self.node, self.lease_ms, epoch)
        return d.addCallback(lambda result: Renewal(int(result)))

    def announce(self, lines: list[bytes], retention: float) -> Deferred[None]:
        """Publish departures that could not be published when they happened;
        keep them C{retention} seconds for the nodes that were not listening."""
        ms = max(1, round(retention * 1000))
        d = self._eval(ANNOUNCE, self.origin, self.public_channel, ms, *lines)
        return d.addCallback(lambda _: None)

    def reap(self, stamp: str) -> Deferred[list[str]]:
        """Release the users of every node whose lease expired, publish their
        departures; return their nicknames (for this node to tell its own)."""
        d = self._eval(
            REAP,
            self.node,
            self.public_channel,
            self.origin,
            wire.departure_prefix(stamp),
        )
        return d.addCallback(lambda gone: [_text(n) for n in gone])

    def leave(self, stamp: str) -> Deferred[list[str]]:
        """Release what this node still holds (announcing it), and its lease."""
        d = self._eval(
            LEAVE,
            self.node,
            self.public_channel,
            self.origin,
            wire.departure_prefix(stamp),
        )
        return d.addCallback(lambda gone: [_text(n) for n in gone])

    def publish(self, line: bytes) -> Deferred[None]:
        """Send a public line to every other node."""
        d = self.commands.call(
            "publish", self.public_channel, self.origin + b" " + line
        )
        return d.addCallback(lambda _: None)

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        """Send a private line to the node that holds C{target}; whether a
        node heard it."""
        key = nick_key(target)
        d = self._eval(
            WHISPER,
            self.node,
            key,
            self.node_channel_prefix,
            key.encode() + b" " + line,
        )
        return d.addCallback(lambda heard: int(heard) > 0)

    def kick(self, target: str, message: bytes, minutes: int = 0) -> Deferred[bool]:
        """Send a kick to the node that holds C{target} (the whisper's path,
        a C{!} before the key; a ban of C{minutes}: C{+MINUTES} after it);
        whether a node heard it."""
        key = nick_key(target)
        ban = b"+%d" % minutes if minutes else b""
        payload = b"!" + key.encode() + ban + b" " + message
        d = self._eval(WHISPER, self.node, key, self.node_channel_prefix, payload)
        return d.addCallback(lambda heard: int(heard) > 0)

    def answer(self, operator: str, target: str, line: bytes) -> Deferred[bool]:
        """Send the answer to C{operator}'s ban of C{target} to the node that
        holds C{operator} (the whisper's path, C{?OPKEY+NICKKEY}); whether a
        node heard it."""
        key = nick_key(operator)
        head = b"?" + key.encode() + b"+" + nick_key(target).encode()
        payload = head + b" " + line
        d = self._eval(WHISPER, self.node, key, self.node_channel_prefix, payload)
        return d.addCallback(lambda heard: int(heard) > 0)

    def ban(self, ban: Ban) -> Deferred[None]:
        """Keep a ban in Redis, and tell the other nodes."""
        value = ban.shared()
        address = ban.address.encode()
        payload = self.origin + b" +" + address + b"\t" + value
        d = self._eval(BAN, address, value, self.bans_channel, payload)
        return d.addCallback(lambda _: None)

    def unban(self, address: str) -> Deferred[None]:
        payload = self.origin + b" -" + address.encode()
        d = self._eval(UNBAN, address, self.bans_channel, payload)
        return d.addCallback(lambda _: None)

    def bans(self, now: float) -> Deferred[list[Ban]]:
        """The cluster's bans in force."""

        def read(result: list[Any]) -> list[Ban]:
            pairs = zip(result[::2], result[1::2], strict=True)
            found = [Ban.from_shared(_text(a), bytes(v)) for a, v in pairs]
            return [ban for ban in found if ban is not None]

        return self._eval(BANS, int(now * 1000)).addCallback(read)


Connect = Callable[["ClusterNode"], tuple[Commands, Subscription, RedisRegistry]]


def _connect_to_redis(
    node: ClusterNode,
) -> tuple[Commands, Subscription, RedisRegistry]:
    """The node's connections to Redis, not connected yet: one for commands,
    one subscribed to its channels. (A test passes a function that returns
    doubles.)"""
    config = node.config
    commands = Commands(config.redis, node.clock, config.redis_timeout, node.reactor)
    registry = RedisRegistry(commands, config.name, node.id, config.lease)
    subscription = Subscription(
        config.redis,
        (registry.public_channel, registry.node_channel, registry.bans_channel),
        node._message,
        node._heard,
        node.clock,
        config.redis_timeout,
        node.reactor,
    )
    return commands, subscription, registry


class Member(Protocol):
    """What a node uses of a user of its chat."""

    @property
    def nick(self) -> str | None: ...

    def say_goodbye(
        self, *lines: bytes, reach: Reach = Reach.EVERYWHERE, reason: str = "quit"
    ) -> None: ...


class Chat(Protocol):
    """What a node uses of its chat (the server's factory), and nothing more:
    the node delivers lines from the other nodes to it, and reads its users."""

    @property
    def sessions(self) -> Mapping[str, Member]:
        """The registered users, by nickname key."""

    @property
    def stopping(self) -> bool: ...

    def stamp(self) -> str:
        """The time as departure lines show it: C{[H.M.S]}."""

    def deliver(self, line: bytes) -> None:
        """Give a public line to every user here."""

    def deliver_private(self, target: str, line: bytes) -> bool:
        """Give a private line to C{target} if it is here."""

    def heard_kick(self, target: str, payload: bytes) -> None:
        """An operator of another node kicked C{target}, if it is here."""

    @property
    def moderation(self) -> Moderation:
        """Its bans, which the cluster's hold here too."""


class State(enum.Enum):
    """The life of a node: see L{ClusterNode}, whose docstring draws it."""

    STOPPED = "stopped"  # not started, or stopped: no connection to Redis
    JOINING = "joining"  # started, never in the cluster yet: claims wait
    SERVING = "serving"  # in the cluster: lease held, users registered, subscribed
    CHECKING = "checking"  # renewed no lease for a lease's length: reaped?
    CUT_OFF = "cut off"  # Redis, the lease or the subscription lost
    REAPED = "reaped"  # taken for dead: its users dropped, joining with none
    STOPPING = "stopping"  # announcing its users gone, giving its lease back


# The lease is held and this node's users are registered in Redis.
_INSIDE = frozenset({State.SERVING, State.CHECKING})
# Started, and not in the cluster: registering the users (again) is the way in.
_OUTSIDE = frozenset({State.JOINING, State.CUT_OFF, State.REAPED})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.JOINING}),
    State.JOINING: frozenset({State.SERVING, State.STOPPING}),
    State.SERVING: frozenset(
        {State.CHECKING, State.CUT_OFF, State.REAPED, State.STOPPING}
    ),
    State.CHECKING: frozenset(
        {State.SERVING, State.CUT_OFF, State.REAPED, State.STOPPING}
    ),
    State.CUT_OFF: frozenset({State.SERVING, State.REAPED, State.STOPPING}),
    State.REAPED: frozenset({State.SERVING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
}

# What the log says of each transition, by the state entered (and, into
# SERVING, by the state left).
_SAID: dict[State | tuple[State, State], str] = {
    State.JOINING: "node {node} joining cluster {cluster} through {redis}",
    (State.JOINING, State.SERVING): "node {node} is in cluster {cluster} ({redis})",
    (State.CHECKING, State.SERVING): "node {node} was not taken for dead: it goes on",
    (State.CUT_OFF, State.SERVING): (
        "Redis is back: the {here} users here are registered again, new "
        "registrations are accepted"
    ),
    (State.REAPED, State.SERVING): (
        "node {node} is in cluster {cluster} again, with no users: new "
        "registrations are accepted"
    ),
    State.CHECKING: (
        "node {node} renewed no lease for {silent:.1f} s (stalled?): asking "
        "Redis whether the other nodes took it for dead"
    ),
    State.CUT_OFF: (
        "Redis unreachable ({why}): new registrations are refused; the "
        "{here} users here chat among themselves until it is back"
    ),
    State.REAPED: (
        "node {node} was taken for dead by the other nodes, which announced "
        "its {here} users gone: they are disconnected"
    ),
    State.STOPPING: "node {node} leaving cluster {cluster}",
    State.STOPPED: "node {node} left cluster {cluster}",
}
_WARNINGS = frozenset({State.CHECKING, State.CUT_OFF, State.REAPED})


class ImpossibleTransition(RuntimeError):
    """A node was asked to move between two states the diagram does not
    join: a bug, said at once rather than run in a state nobody designed."""


class ClusterNode(service.Service):
    """One server process of a cluster: the registry and the relay of its
    chat (build the chat, then the node with it, and give the node to the
    chat as both).

    Its life is one attribute, C{state} (a L{State}), changed in one place
    (L{_become}), which logs each change and refuses one that is not among
    these (L{TRANSITIONS}; a test holds the two to each other)::

        STOPPED --started--> JOINING
        JOINING --its users registered, and subscribed--> SERVING
        SERVING --a lease's length without a renewal (a stall?)--> CHECKING
        CHECKING --not reaped--> SERVING
        SERVING, CHECKING --Redis, the lease or the subscription lost--> CUT_OFF
        CUT_OFF --its users registered again, and subscribed--> SERVING
        SERVING, CHECKING, CUT_OFF --the other nodes reaped it--> REAPED
        REAPED --joined again, with no users--> SERVING
        JOINING, SERVING, CHECKING, CUT_OFF, REAPED --stopped--> STOPPING
        STOPPING --its connections closed--> STOPPED

    A failure while JOINING, CUT_OFF or REAPED changes nothing: the node is
    out of the cluster already, and the heartbeat tries again.

    JOINING: a claim waits for the join, up to C{redis_timeout}: a node
    listens before it has joined, and a rolling restart must not turn its
    first users away. SERVING: claims go to Redis, public lines out through
    it. CUT_OFF (Redis away, or until this node registered its users there
    again) and REAPED: C{claim} fails with L{RegistryUnavailable}, C{names}
    answers with the users of this node, and lines stay on this node;
    departures in that time are announced to the other nodes once Redis is
    back.

    CHECKING: a node that went a lease's length without renewing it (a GC
    pause, a VM migration, SIGSTOP) may have been reaped meanwhile: the
    other nodes then told everyone its users left. On waking, the reactor
    hands it client lines, messages from Redis and timers in any order, so
    whichever comes first notices (L{_holding}); until Redis says whether
    the node was reaped, nothing is relayed, delivered from Redis, or
    claimed. REAPED: every user here is told, gets C{Deconnexion}, and is
    not announced again (the reaper did it, once); the lines they typed
    meanwhile go nowhere else. Not reaped: what was held goes on, and nobody
    sees a thing.
    """

    def __init__(
        self,
        config: ClusterConfig,
        chat: Chat,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        node_id: str | None = None,
        connect: Connect = _connect_to_redis,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as default

            clock = cast(IReactorTime, default)
        self.config = config
        self.chat = chat
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.id = node_id or secrets.token_hex(6)
        self.state = State.STOPPED
        # Its two connections to Redis, built now, connected when the service
        # starts (start()), and the registry that runs on them.
        self.commands, self.subscription, self.registry = connect(self)
        self._down_reason = ""
        # The epoch this node's users are registered in ("": none, a new node).
        self._epoch = ""
        self._pending: dict[str, tuple[str, bytes]] = {}  # left while cut off
        self._seen: dict[bytes, float] = {}  # late departures delivered here
        self._outbox: list[bytes] = []
        self._outbox_call: IDelayedCall | None = None
        # The chat's history in Redis (None: none kept), and the lines of the
        # outbox it keeps, sent with them (see record).
        self.history: RedisHistory | None = None
        self._kept: list[bytes] = []
        # In-flight guards: one call of each at a time (not the node's life).
        self._syncing = False
        self._renewing = False
        self._reaping = False
        # What the log says: since when the node is out of the cluster, and
        # whether it said it was out long.
        self._down_since = 0.0
        self._warned = False
        # When the last lease renewal that succeeded was sent (the lease runs
        # from a little later): past config.lease, the node may be reaped.
        # Meaningful while the node is in the cluster (_INSIDE).
        self._renewed_at = 0.0
        self._held: list[Callable[[bool], None]] = []  # run when it knows
        self._waiting: list[tuple[str, Deferred[str], IDelayedCall]] = []
        # The loop that renews the lease every tick: a process that stalls
        # (or a test that stops it) looks to the other nodes like a dead one.
        self.heartbeat = LoopingCall(self._beat)
        self.heartbeat.clock = clock

    @property
    def accepting(self) -> bool:
        """Whether new nicknames are taken now."""
        return self.state is State.SERVING

    # State, and what the log says of it

    def _become(self, state: State) -> None:
        """Move to C{state}, and say so in the log; refuse (with
        L{ImpossibleTransition}) a move that is not in L{TRANSITIONS}."""
        old = self.state
        if state not in TRANSITIONS[old]:
            raise ImpossibleTransition(
                f"cluster node {self.id}: no transition from {old.name} to {state.name}"
            )
        now = self.clock.seconds()
        silent = now - self._renewed_at
        self.state = state
        if state is State.JOINING or (state in _OUTSIDE and old in _INSIDE):
            self._down_since = now
            self._warned = False
        if state is State.SERVING:  # joined, or back: the bans may have changed
            self._load_bans()
        said = _SAID[(old, state)] if state is State.SERVING else _SAID[state]
        emit = log.warn if state in _WARNINGS else log.info
        emit(
            said,
            act="cluster",
            node=self.id,
            cluster=self.config.name,
            redis=str(self.config.redis),
            old=old,
            new=state,
            here=len(self.chat.sessions),
            why=self._down_reason,
            silent=silent,
        )

    def _lost(self, why: str) -> None:
        """A Redis call failed, or the lease or the subscription is gone:
        the node is cut off, and registers its users again (L{_resync}).
        What waited on a check runs now, here: as when Redis is away,
        registering again will find out whether the node was reaped."""
        self._down_reason = why
        if self.state in _INSIDE:
            checking = self.state is State.CHECKING
            self._become(State.CUT_OFF)
            if checking:
                self._release_held(True)

    def _heard(self, listening: bool, why: str) -> None:
        """The subscription started or stopped: lines published while it was
        down are lost to this node, so it registers again (and catches up
        with the late departures) once it hears again."""
        if listening:
            self._resync()
        else:
            self._lost(f"subscription lost: {why}")

    # Life

    def startService(self) -> None:
        super().startService()
        self._become(State.JOINING)
        self.commands.first_connected.addCallback(lambda _: self._resync())
        self.commands.start()
        self.subscription.start()
        self.heartbeat.start(self.config.tick, now=True)

    def stopService(self) -> Deferred[None]:
        """Announce the users still registered here, give the lease back,
        and close the connections: the other nodes need not wait for the
        lease to expire."""
        if self.state in (State.STOPPED, State.STOPPING):
            return succeed(None)
        super().stopService()
        if self.heartbeat.running:
            self.heartbeat.stop()
        was = self.state
        self._become(State.STOPPING)
        for _, waiting, timer in self._waiting:
            timer.cancel()
            waiting.errback(RegistryUnavailable("the server is stopping"))
        self._waiting = []
        self._release_held(True)
        d: Deferred[object] = succeed(None)
        if was is State.SERVING:  # checking: maybe reaped, they go nowhere
            self._publish_outbox()
        if was in _INSIDE:
            stamp = self.chat.stamp()
            left = self.registry.leave(stamp)
            d = left.addCallback(self._keep_departures, stamp)
            d.addErrback(self._failed)
        d.addCallback(lambda _: self.subscription.close())
        d.addCallback(lambda _: self.commands.close())
        return d.addCallback(lambda _: self._become(State.STOPPED))

    def _beat(self) -> None:
        try:
            if self.state in _OUTSIDE:
                self._resync()
                self._warn_if_long()
                return
            if self._holding():
                return  # the check renews the lease
            if not self._renewing:
                self._renewing = True
                renewed = self.registry.renew(self._epoch)
                renewed.addCallbacks(
                    self._renewed, self._failed, callbackArgs=(self.clock.seconds(),)
                )
                renewed.addErrback(self._bug, "renewing the lease")
                renewed.addBoth(self._set, "_renewing", False)
            if not self._reaping:
                self._reaping = True
                stamp = self.chat.stamp()
                reaped = self.registry.reap(stamp)
                reaped.addCallbacks(self._reaped, self._failed, callbackArgs=(stamp,))
                reaped.addErrback(self._bug, "reaping dead nodes")
                reaped.addBoth(self._set, "_reaping", False)
        except Exception:
            log.failure("cluster heartbeat")

    def _warn_if_long(self) -> None:
        if self._warned:
            return
        waited = self.clock.seconds() - self._down_since
        if waited > self.config.node_timeout:
            self._warned = True
            log.warn(
                "still no cluster after {waited:.0f} s: is Redis up at {redis}? "
                "({why})",
                act="cluster",
                waited=waited,
                redis=str(self.config.redis),
                why=self._down_reason or "no answer",
            )

    def _bug(self, failure: Failure, doing: str) -> None:
        log.failure("cluster: {doing}", failure, doing=doing)

    def _set(self, result: object, name: str, value: object) -> None:
        setattr(self, name, value)

    def _failed(self, failure: Failure) -> None:
        failure.trap(RegistryUnavailable)
        self._lost(failure.getErrorMessage())

    def _renewed(self, renewal: Renewal, sent: float) -> None:
        if self.state not in _INSIDE:  # registering again: its answer decides
            return
        if renewal is Renewal.RENEWED:
            self._renewed_at = max(self._renewed_at, sent)
        elif renewal is Renewal.REAPED:
            self._taken_for_dead()
        else:
            log.warn(
                "node {node} has no lease in Redis any more (Redis lost its "
                "data): registering its users again",
                node=self.id,
            )
            self._lost("no lease in Redis")
            self._resync()

    def _reaped(self, gone: list[str], stamp: str) -> None:
        """C{stamp}: that of the departures the reaping published."""
        if not gone:
            return
        if self._holding():
            self._held.append(
                lambda known: self._reaped(gone, stamp) if known else None
            )
            return
        log.info("a node died; gone with it: {nicks}", nicks=", ".join(gone))
        start = wire.departure_prefix(self.chat.stamp())
        for nick in gone:
            self.chat.deliver(start + nick.encode() + b"\n")
        # This node reaped them: the one node that keeps their departures,
        # as the reaping published them.
        self._keep_departures(gone, stamp)

    # Registering this node's users again

    def _resync(self) -> None:
        if self._syncing or self.state not in _OUTSIDE:
            return
        if not self.subscription.listening:  # what it announces goes unheard
            return
        if not self.commands.connected:
            self._down_reason = self._down_reason or "no connection to Redis"
            return
        self._syncing = True
        pending, self._pending = self._pending, {}
        sessions = [m.nick for m in self.chat.sessions.values() if m.nick]
        d = self.registry.sync(sessions, self._epoch)
        d.addCallbacks(
            self._synced_again,
            self._sync_failed,
            callbackArgs=(pending, self.clock.seconds()),
            errbackArgs=(pending,),
        )
        d.addErrback(self._bug, "registering the users again")
        d.addBoth(self._set, "_syncing", False)

    def _sync_failed(self, failure: Failure, pending: dict[str, Any]) -> None:
        pending.update(self._pending)
        self._pending = pending
        failure.trap(RegistryUnavailable)
        self._lost(failure.getErrorMessage())

    def _synced_again(
        self, synced: Synced, pending: dict[str, tuple[str, bytes]], sent: float
    ) -> None:
        if self.state not in _OUTSIDE:  # stopping meanwhile
            return
        if synced.reaped:
            # The users who left meanwhile were reaped, and announced, too.
            self._taken_for_dead()
            return
        data_lost = self._epoch != "" and synced.epoch != self._epoch
        if data_lost:
            log.warn(
                "Redis lost the cluster's data: the users here are registered again"
            )
        self._epoch = synced.epoch
        self._renewed_at = sent
        registry, chat = self.registry, self.chat
        # Who left this node while it was cut off: the other nodes still had
        # them (dropped now), or, if Redis lost its data, never heard of it.
        # If another node reaped them meanwhile, it announced them already.
        dropped = {nick_key(nick) for nick in synced.dropped}
        late = [
            line for key, (_, line) in pending.items() if data_lost or key in dropped
        ]
        if late:
            d = registry.announce(late, self.config.retention)
            d.addCallback(lambda _: self._keep(late)).addErrback(self._failed)
        # And what the others announced late while this node was not listening.
        for entry, origin, line in synced.announced:
            if origin != registry.origin and self._first_sight(entry):
                chat.deliver(line)
        for key in synced.conflicts:
            member = chat.sessions.get(key)
            if member is not None:
                self._evict(member)
        if not self.subscription.listening:
            # Deaf again while registering: what it did stands, but lines
            # published meanwhile were lost to it; it registers again once
            # it hears (the departures meanwhile wait for that).
            return
        self._become(State.SERVING)
        # Who left while the registration was under way: registered by it.
        left, self._pending = self._pending, {}
        for nick, line in left.values():
            registry.release(nick, line).addErrback(self._failed)
        self._admit_waiting()

    def _evict(self, member: Member) -> None:
        """Somebody else took this user's nickname while this node was cut
        off: tell the user, say goodbye, and announce it here only. The
        other nodes know that nickname as someone who is present: announcing
        it there would announce the wrong person gone."""
        log.info("{nick} lost its nickname during the outage", nick=member.nick)
        notice = wire.notice(NICK_LOST.format(member.nick))
        member.say_goodbye(notice, wire.BYE, reach=Reach.HERE, reason="cluster")

    def _first_sight(self, entry: bytes) -> bool:
        """Whether a late departure is new here (it may come both published
        and read back when registering again)."""
        now = self.clock.seconds()
        if entry in self._seen:
            return False
        horizon = now - 2 * self.config.retention
        for old in [e for e, at in self._seen.items() if at < horizon]:
            del self._seen[old]
        self._seen[entry] = now
        return True

    # After a stall

    def _holding(self) -> bool:
        """Whether what this node delivers or relays must wait, because it
        may have been reaped: it went a lease's length without renewing its
        lease. The first call that finds so asks Redis (L{_check})."""
        if self.state is State.CHECKING:
            return True
        if self.state is not State.SERVING:
            return False
        if self.clock.seconds() - self._renewed_at < self.config.lease:
            return False
        self._check()
        return self.state is State.CHECKING  # unless Redis answered at once

    def _check(self) -> None:
        self._become(State.CHECKING)
        d = self.registry.renew(self._epoch)
        d.addCallbacks(
            self._checked, self._check_failed, callbackArgs=(self.clock.seconds(),)
        )
        d.addErrback(self._bug, "asking whether this node was reaped")

    def _checked(self, renewal: Renewal, sent: float) -> None:
        if self.state is not State.CHECKING:
            return  # decided meanwhile (stopping, or the heartbeat's renewal)
        if renewal is Renewal.RENEWED:
            self._renewed_at = sent
            self._become(State.SERVING)
            self._release_held(True)
            self._send_outbox()
            self._admit_waiting()
            return
        if renewal is Renewal.REAPED:
            self._taken_for_dead()
        else:  # nobody can have announced anything: the users stay
            self._lost("no lease in Redis (Redis lost its data)")
            self._release_held(True)
            self._resync()

    def _check_failed(self, failure: Failure) -> None:
        """Redis cannot say now. The node is cut off, as when Redis is away:
        registering its users again will find out whether it was reaped."""
        if self.state is not State.CHECKING:
            failure.trap(RegistryUnavailable)
            return  # decided meanwhile
        try:
            self._failed(failure)  # cut off first: what was held stays here
        finally:
            self._release_held(True)

    def _release_held(self, known: bool) -> None:
        """Run what waited on the check: C{known} is whether this node's
        users are still in the cluster (if not, nothing is delivered)."""
        held, self._held = self._held, []
        for run in held:
            run(known)

    def _taken_for_dead(self) -> None:
        """The other nodes reaped this node: they told everyone its users
        left, once, and freed their nicknames. So the users here are gone:
        each is told why and gets Deconnexion, without a second departure
        line (and none to themselves); what they typed meanwhile, and the
        lines waiting for Redis, go nowhere. The node then joins again with
        no users (its epoch forgotten: it is a new node)."""
        self._cancel_outbox()
        self._outbox = []
        self._kept = []
        self._down_reason = "the other nodes took this node for dead"
        self._epoch = ""
        self._become(State.REAPED)
        lost = wire.notice(wire.CLUSTER_LOST)
        for member in list(self.chat.sessions.values()):
            member.say_goodbye(lost, wire.BYE, reach=Reach.NOWHERE, reason="cluster")
        self._pending = {}  # the reaper released and announced them
        self._release_held(False)  # if it was checking: nothing goes on
        self.clock.callLater(0, self._resync)  # with no users now: joins

    # Claims that wait for the node

    def _wait_for_node(self, nick: str) -> Deferred[str]:
        """A claim made while the node joins, or checks whether it was
        reaped: it waits up to redis_timeout, then fails as a claim made
        while Redis is away."""
        waiting: Deferred[str] = Deferred()
        entry: tuple[str, Deferred[str], IDelayedCall]

        def give_up() -> None:
            self._waiting.remove(entry)
            waiting.errback(
                RegistryUnavailable(self._down_reason or "not in the cluster yet")
            )

        entry = (
            nick,
            waiting,
            self.clock.callLater(self.config.redis_timeout, give_up),
        )
        self._waiting.append(entry)
        return waiting

    def _admit_waiting(self) -> None:
        if self.state is not State.SERVING:
            return
        waiting, self._waiting = self._waiting, []
        for nick, d, timer in waiting:
            timer.cancel()
            self.claim(nick).chainDeferred(d)

    # Registry (for the factory)

    def claim(self, nick: str) -> Deferred[str]:
        if self.state is State.JOINING or self._holding():
            return self._wait_for_node(nick)
        if self.state is not State.SERVING:
            return fail(
                RegistryUnavailable(self._down_reason or "not in the cluster yet")
            )
        d = self.registry.claim(nick)
        d.addErrback(self._claim_failed)
        return d

    def _claim_failed(self, failure: Failure) -> Failure:
        if failure.check(RegistryUnavailable):
            self._lost(failure.getErrorMessage())
            if failure.check(LeaseLost):
                self._resync()
        return failure

    def release(self, nick: str, reach: Reach = Reach.EVERYWHERE) -> Deferred[None]:
        """Release a departing user's nickname in Redis, unless C{reach}
        says the other nodes must not hear of the departure (HERE: the
        nickname is someone else's there now) or have (NOWHERE: they reaped
        this node and released it)."""
        if reach is not Reach.EVERYWHERE:
            return succeed(None)
        if self._holding():  # if this node was reaped, the reaper released it

            def then(known: bool) -> None:
                if known:
                    self.release(nick)

            self._held.append(then)
            return succeed(None)
        chat = self.chat
        line = wire.departure_prefix(chat.stamp()) + nick.encode() + b"\n"
        if self.state is not State.SERVING:
            self._pending[nick_key(nick)] = (nick, line)
            return succeed(None)
        # A stopping factory does not announce departures: its users are told
        # it stops. The users of the other nodes must hear of them.
        if chat.stopping:
            self._send_outbox()
        d = self.registry.release(nick, line if chat.stopping else None)
        if chat.stopping:  # announced by Redis, not broadcast: kept here
            d.addCallback(lambda _: self._keep([line]))

        def failed(failure: Failure) -> None:
            failure.trap(RegistryUnavailable)
            self._pending[nick_key(nick)] = (nick, line)
            self._lost(failure.getErrorMessage())

        return d.addErrback(failed)

    def names(self, limit: int | None = None) -> Deferred[tuple[list[str], int]]:
        here = self._names_here(limit)
        if self.state not in _INSIDE:
            return succeed(here)

        def failed(failure: Failure) -> tuple[list[str], int]:
            failure.trap(RegistryUnavailable)
            self._lost(failure.getErrorMessage())
            return here

        return self.registry.names(limit).addErrback(failed)

    def _names_here(self, limit: int | None) -> tuple[list[str], int]:
        nicks = [m.nick for m in self.chat.sessions.values() if m.nick]
        return nicks[:limit] if limit is not None else nicks, len(nicks)

    # Relay (for the factory)

    def publish(self, line: bytes) -> None:
        """Public lines made during one reactor turn go to Redis together at
        its end: one message for the other nodes, whatever their number."""
        if self.state not in _INSIDE:
            return
        self._outbox.append(line)
        if self._outbox_call is None:
            self._outbox_call = self.clock.callLater(0, self._send_outbox)

    def _send_outbox(self) -> None:
        self._cancel_outbox()
        if self._outbox and self._holding():
            return  # sent once the node knows it was not reaped
        if self.state in _INSIDE:
            self._publish_outbox()
        else:  # cut off: the lines stayed here
            self._outbox = []
            self._kept = []

    def _publish_outbox(self) -> None:
        self._cancel_outbox()
        lines, self._outbox = self._outbox, []
        kept, self._kept = self._kept, []
        if kept and self.history is not None:
            registry = self.registry
            payload = registry.origin + b" " + b"".join(lines) if lines else None
            d = self.history.keep(kept, registry.public_channel, payload)
            d.addErrback(self._failed)
        elif lines:
            self.registry.publish(b"".join(lines)).addErrback(self._failed)

    def _cancel_outbox(self) -> None:
        if self._outbox_call is not None and self._outbox_call.active():
            self._outbox_call.cancel()
        self._outbox_call = None

    # History (for the factory)

    def record(self, line: bytes) -> None:
        """Keep a public line made here in the cluster's history, in the
        same Redis script as it is published (see L{publish}): the history
        holds exactly the lines the other nodes were given. A line made
        while this node is out of the cluster stays here, and is not kept."""
        if self.history is None or self.state not in _INSIDE:
            return
        self._kept.append(line)
        if self._outbox_call is None:
            self._outbox_call = self.clock.callLater(0, self._send_outbox)

    def _keep(self, lines: list[bytes]) -> Deferred[None]:
        """Keep departures that a Redis script published rather than the
        chat (a stopping node's, a reaped node's, late ones), after it."""
        if self.history is None or not lines:
            return succeed(None)
        d = self.history.keep(lines, self.registry.public_channel, None)
        return d.addErrback(self._failed)

    def _keep_departures(self, gone: list[str], stamp: str) -> Deferred[None]:
        start = wire.departure_prefix(stamp)
        return self._keep([start + nick.encode() + b"\n" for nick in gone])

    def last(self, count: int) -> Deferred[list[bytes]]:
        """The last lines of the cluster's history, read from Redis (every
        node's, this one's up to those still in its outbox)."""
        if self.history is None:
            return succeed([])
        self._send_outbox()  # the lines made before the question go first

        def failed(failure: Failure) -> Failure:
            failure.trap(RegistryUnavailable)
            self._lost(failure.getErrorMessage())
            return failure

        return self.history.last(count).addErrback(failed)

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        if self.state not in _INSIDE:
            return fail(RegistryUnavailable("the cluster cannot be reached"))
        if self._holding():
            later: Deferred[bool] = Deferred()

            def then(known: bool) -> None:
                if known:
                    self.whisper(target, line).chainDeferred(later)
                else:
                    later.errback(RegistryUnavailable("this node was taken for dead"))

            self._held.append(then)
            return later
        self._send_outbox()  # the public lines made before go first

        def failed(failure: Failure) -> bool:
            self._failed(failure)
            raise RegistryUnavailable("the cluster cannot be reached")

        return self.registry.whisper(target, line).addErrback(failed)

    def kick(self, target: str, message: bytes, minutes: int = 0) -> Deferred[bool]:
        """Carry a kick (a ban, if C{minutes}) to the node that holds
        C{target} (moderation.py)."""
        if self.state not in _INSIDE or self._holding():
            return fail(RegistryUnavailable("the cluster cannot be reached"))

        def failed(failure: Failure) -> bool:
            self._failed(failure)
            raise RegistryUnavailable("the cluster cannot be reached")

        return self.registry.kick(target, message, minutes).addErrback(failed)

    def answer(self, operator: str, target: str, line: bytes) -> Deferred[bool]:
        """Carry the answer to C{operator}'s ban of C{target} to the node
        that holds C{operator} (moderation.py)."""
        if self.state not in _INSIDE or self._holding():
            return fail(RegistryUnavailable("the cluster cannot be reached"))

        def failed(failure: Failure) -> bool:
            self._failed(failure)
            raise RegistryUnavailable("the cluster cannot be reached")

        return self.registry.answer(operator, target, line).addErrback(failed)

    # Bans (moderation.py): every node keeps a copy of the cluster's, kept up
    # to date by the bans channel, so that admitting a connection costs no
    # Redis round trip (admission is synchronous, and a herd of 10,000
    # reconnecting clients would be 10,000 of them). The copy is read whole
    # each time the node joins or comes back, as bans made (or lifted)
    # meanwhile may have been missed: Redis's replaces it. Bans and unbans
    # are refused while the node is not serving (moderation.py, _cut_off).

    def share_ban(self, ban: Ban) -> Deferred[None]:
        """Make the ban hold on every node; fails while the node is not
        serving (moderation refuses bans then: they would hold here only)."""
        return self._share(self.registry.ban, ban)

    def share_unban(self, address: str) -> Deferred[None]:
        """Lift the ban on every node; fails while the node is not serving."""
        return self._share(self.registry.unban, address)

    def _share(
        self, change: Callable[[Any], Deferred[None]], what: Any
    ) -> Deferred[None]:
        if self.state is not State.SERVING:
            return fail(RegistryUnavailable("the cluster cannot be reached"))

        def failed(failure: Failure) -> None:
            self._failed(failure)
            raise RegistryUnavailable("the cluster cannot be reached")

        return change(what).addErrback(failed)

    def _load_bans(self) -> None:
        self.chat.moderation.reading_bans()
        d = self.registry.bans(self.clock.seconds())
        d.addCallbacks(self.chat.moderation.heard_bans, self._failed)
        d.addErrback(self._bug, "reading the bans")

    def _heard_ban(self, line: bytes) -> None:
        change, address = line[:1], line[1:]
        moderation = self.chat.moderation
        if change == b"-":
            moderation.heard_unban(address.decode("ascii", "replace"))
            return
        address, _, value = address.partition(b"\t")
        ban = Ban.from_shared(address.decode("ascii", "replace"), value)
        if change == b"+" and ban is not None:
            moderation.heard_ban(ban)

    def _message(self, channel: bytes, message: bytes) -> None:
        if self._holding():
            self._held.append(
                lambda known: self._message(channel, message) if known else None
            )
            return
        registry, chat = self.registry, self.chat
        head, _, line = message.partition(b" ")
        if channel == registry.public_channel:
            head, _, reaped = head.partition(b"@")
            if reaped == registry.origin:
                # This node was reaped while it stalled: its users are told
                # so by the node itself, never that they left.
                return
            origin, late, entry = head.partition(b"#")
            if origin != registry.origin and (not late or self._first_sight(entry)):
                chat.deliver(line)
        elif channel == registry.bans_channel:
            if head != registry.origin:
                self._heard_ban(line)
        elif channel == registry.node_channel and head.startswith(b"!"):
            chat.heard_kick(head[1:].decode("ascii", "replace"), line)
        elif channel == registry.node_channel and head.startswith(b"?"):
            operator, _, target = head[1:].decode("ascii", "replace").partition("+")
            chat.moderation.heard_answer(operator, target, line)
        elif channel == registry.node_channel:
            chat.deliver_private(head.decode("ascii", "replace"), line)
