"""The cluster's data in Redis: its keys, the Lua scripts that decide on
them, and L{RedisRegistry}, the one object that runs those scripts.

L{RedisRegistry} is the registry twin: the nicknames of every node, kept in
Redis and decided there by Lua scripts, so that each decision is atomic; it
also holds the node's lease, reaps the nodes that died, and publishes what
the nodes tell each other (chatproto/cluster_messages.py).

In Redis (the database of C{--redis}), every key starts with
C{chatproto:CLUSTER:}:

    users           hash    nickname key (lower case) -> "NODE<TAB>Nick"
    order           zset    Nick, scored by its registration number
    seq             string  the last registration number (goes with the last user)
    nodes           set     the nodes that hold users, or held some
    node:ID:users   set     the nickname keys node ID holds
    node:ID:lease   string  exists while node ID is alive: it renews the expiry
    epoch           string  written once: if it changes, Redis lost its data
    alive           string  exists while some node renews its lease: its expiry
                            (a silence, half a lease) runs from the last renewal
    grace           string  exists for a while after a silence of every node:
                            no node is reaped meanwhile
    left            stream  departures announced late (after an outage), kept
                            a minute for the nodes that come back later still
    bans            hash    banned address -> "UNTIL<TAB>BY<TAB>REASON"
                            (bans.py, Ban.shared); expired ones deleted on reading
    rooms           set     the named rooms with a member on some node
    rooms:seq       string  the last number of a member's arrival in a room
    room:NAME       zset    "NODE<TAB>Nick" for each member of room NAME,
                            scored by its arrival (chatproto/rooms.py)
    room:NAME:topic string  the room's topic, while it has a member
    node:ID:rooms   set     "NAME<TAB>Nick" for each member node ID has in
                            a room: what reaping node ID takes out
    history, history:bytes  the chat's history (see chatproto/history.py):
                            the lobby's lines and the rooms' (theirs start
                            "[H.M.S]-#NAME ")
    accounts        hash    nickname key -> "USED<TAB>Nick<TAB>HASH", the
                            protected nicknames (see chatproto/accounts.py)
    seen            hash    nickname key -> the history's stamp when its
                            owner last left: a protected nickname's read
                            position (see chatproto/positions.py)
    tries:nick:failures:ADDRESS  string  the wrong passwords in a row from
                            ADDRESS, for protected nicknames; expires 10
                            minutes after its last try
    tries:nick:wait:ADDRESS string  exists for 5 s after ADDRESS's last try
    tries:nick:total        string  the tries of the whole cluster this
                            second (see chatproto/accounts.py, RedisTries)

Pub/sub channels belong to no database, so their names carry its number:

    chatproto:CLUSTER:DB:all        public lines and departures, for every node
    chatproto:CLUSTER:DB:node:ID    private lines, kicks and answers for node ID
    chatproto:CLUSTER:DB:bans       changes of the bans, for every node
    chatproto:CLUSTER:DB:room:NAME  lines of room NAME, for the nodes that
                                    have members in it (they subscribe with
                                    their first, unsubscribe with their last)

What travels on them is chatproto/cluster_messages.py's: its one home.

Every script builds its key names from a prefix, so this needs one Redis
server (or a primary with replicas), not a Redis Cluster.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from chatproto import wire
from chatproto._redis import Commands
from chatproto.bans import Ban
from chatproto.cluster_messages import (
    Answer,
    BanLifted,
    BanShared,
    Channel,
    Kick,
    NodeMessage,
    Private,
    Public,
    RoomLines,
    encode,
)
from chatproto.registry import ClusterUnreachable, NicknameTaken, nick_key
from chatproto.rooms import Gathered, TooManyRooms

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
-- A renewal by NODE (its lease renewed or taken again). If no node renewed
-- one for SILENCE ms ("alive" has expired), every node was out of Redis's
-- reach, or Redis was away (a persistent Redis comes back with every lease
-- run out: their expiry is a time of day): the leases that ran out
-- meanwhile say nothing of their nodes, which may be alive and reconnecting.
-- So no node is reaped for GRACE ms ("grace"), if there is another node to
-- reap. Returns 1 if the grace began now.
local function renewal(node, silence, grace)
  local began = 0
  local others = redis.call('SCARD', p .. 'nodes')
    - redis.call('SISMEMBER', p .. 'nodes', node)
  if others > 0 and redis.call('EXISTS', p .. 'alive') == 0 then
    redis.call('SET', p .. 'grace', '1', 'PX', grace)
    began = 1
  end
  if redis.call('PTTL', p .. 'alive') < tonumber(silence) then
    redis.call('SET', p .. 'alive', '1', 'PX', silence)
  end
  return began
end
-- NODE's member NICK leaves room NAME; a room left empty goes, its topic
-- with it (and the arrivals' numbers with the last room).
local function leave_room(node, name, nick)
  local room = p .. 'room:' .. name
  redis.call('SREM', p .. 'node:' .. node .. ':rooms', name .. '\t' .. nick)
  redis.call('ZREM', room, node .. '\t' .. nick)
  if redis.call('ZCARD', room) == 0 then
    redis.call('DEL', room, room .. ':topic')
    redis.call('SREM', p .. 'rooms', name)
    if redis.call('SCARD', p .. 'rooms') == 0 then
      redis.call('DEL', p .. 'rooms:seq')
    end
  end
end
-- Every member NODE has leaves its rooms (the node is reaped, or stops).
local function leave_rooms(node)
  for _, entry in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':rooms')) do
    local name, nick = owner(entry)
    leave_room(node, name, nick)
  end
  redis.call('DEL', p .. 'node:' .. node .. ':rooms')
end
-- NODE's member NICK is in room NAME (last, if it was not).
local function enter_room(node, name, nick)
  redis.call('SADD', p .. 'rooms', name)
  redis.call('ZADD', p .. 'room:' .. name, 'NX', redis.call('INCR', p .. 'rooms:seq'),
    node .. '\t' .. nick)
  redis.call('SADD', p .. 'node:' .. node .. ':rooms', name .. '\t' .. nick)
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

# ARGV: prefix, node, lease ms, the epoch the node knows, silence ms, grace
# ms. 1: the lease is renewed (it was held, or it had expired but no node
# reaped this one yet: nobody was told anything, so it is taken again); 2:
# renewed, and the first renewal after a silence: the grace began; 0: this
# node was reaped (its users announced gone); -1: Redis lost its data
# (another epoch, or none).
_RENEW = b"""
local lease = p .. 'node:' .. ARGV[2] .. ':lease'
if not redis.call('SET', lease, '1', 'PX', ARGV[3], 'XX') then
  if redis.call('GET', p .. 'epoch') ~= ARGV[4] then return -1 end
  if redis.call('SISMEMBER', p .. 'nodes', ARGV[2]) == 0 then return 0 end
  redis.call('SET', lease, '1', 'PX', ARGV[3])
end
return 1 + renewal(ARGV[2], ARGV[5], ARGV[6])
"""

# ARGV: prefix, node, lease ms, new epoch, the epoch the node knows (or ''),
# silence ms, grace ms, then key, Nick for every user the node has. If the
# node was reaped in the epoch it knows, changes nothing and says so: its
# users were announced gone. Otherwise takes the lease; registers those users
# again; drops what the node held but no longer has. Returns {epoch,
# {conflicting keys}, {dropped Nicks}, {late departures}, reaped (0 or 1),
# the grace began (0 or 1)}.
_SYNC = b"""
local node = ARGV[2]
local mine = p .. 'node:' .. node .. ':users'
local epoch = redis.call('GET', p .. 'epoch')
if epoch and epoch == ARGV[5]
  and redis.call('SISMEMBER', p .. 'nodes', node) == 0 then
  return {epoch, {}, {}, {}, 1, 0}
end
redis.call('SET', p .. 'node:' .. node .. ':lease', '1', 'PX', ARGV[3])
local grace = renewal(node, ARGV[6], ARGV[7])
redis.call('SADD', p .. 'nodes', node)
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', p .. 'epoch', epoch)
end
local wanted = {}
for i = 8, #ARGV, 2 do wanted[ARGV[i]] = true end
local dropped = {}
for _, key in ipairs(redis.call('SMEMBERS', mine)) do
  if not wanted[key] then
    local nick = drop(node, key)
    if nick then table.insert(dropped, nick) end
  end
end
local conflicts = {}
for i = 8, #ARGV, 2 do
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
return {epoch, conflicts, dropped, redis.call('XRANGE', p .. 'left', '-', '+'), 0,
        grace}
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
# Nobody during a grace, or a silence (see renewal): a lease that ran out
# then says nothing of its node. Returns the Nicks.
_REAP = b"""
local gone = {}
if redis.call('EXISTS', p .. 'grace') == 1
  or redis.call('EXISTS', p .. 'alive') == 0 then
  return gone
end
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
    leave_rooms(node)
    redis.call('SREM', p .. 'nodes', node)
  end
end
return gone
"""

# ARGV: prefix, node, channel, origin, departure prefix. A node that stops:
# its remaining users are released and announced, its lease is given back.
# The last node to leave takes "alive" and "grace" with it: no node is left
# to reap, or to spare.
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
leave_rooms(node)
redis.call('SREM', p .. 'nodes', node)
if redis.call('SCARD', p .. 'nodes') == 0 then
  redis.call('DEL', p .. 'alive', p .. 'grace')
end
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

# Rooms (chatproto/rooms.py). ARGV: prefix, node, name, Nick, most rooms,
# the node's channel. {-1}: the node has no lease; {-2}: a new room past
# MOST; otherwise the member is in the room (last, if it was not): {members
# ("NODE<TAB>Nick", in the order they came), topic ('': none), how many
# heard the Joined message published on the node's channel (its place
# among the room's lines is where the member came in)}.
_ROOM_JOIN = b"""
local node, name = ARGV[2], ARGV[3]
if redis.call('EXISTS', p .. 'node:' .. node .. ':lease') == 0 then return {-1} end
if redis.call('SISMEMBER', p .. 'rooms', name) == 0
  and redis.call('SCARD', p .. 'rooms') >= tonumber(ARGV[5]) then
  return {-2}
end
enter_room(node, name, ARGV[4])
local room = p .. 'room:' .. name
local members = redis.call('ZRANGE', room, 0, -1)
local topic = redis.call('GET', room .. ':topic') or ''
local body = {topic}
for _, entry in ipairs(members) do
  local _, nick = owner(entry)
  table.insert(body, nick)
end
local heard = redis.call('PUBLISH', ARGV[6],
  '#' .. name .. '+' .. ARGV[4] .. ' ' .. table.concat(body, '\\n'))
return {members, topic, heard}
"""

# ARGV: prefix, node, Nick, then the rooms it leaves.
_ROOM_PART = b"""
for i = 4, #ARGV do leave_room(ARGV[2], ARGV[i], ARGV[3]) end
return 0
"""

# ARGV: prefix, name. {members, topic}, as _ROOM_JOIN's.
_ROOM_READ = b"""
local room = p .. 'room:' .. ARGV[2]
return {redis.call('ZRANGE', room, 0, -1), redis.call('GET', room .. ':topic') or ''}
"""

# ARGV: prefix. {the cluster's users, {name, members, name, members...}}.
_ROOM_COUNTS = b"""
local counts = {}
for _, name in ipairs(redis.call('SMEMBERS', p .. 'rooms')) do
  table.insert(counts, name)
  table.insert(counts, redis.call('ZCARD', p .. 'room:' .. name))
end
return {redis.call('ZCARD', p .. 'order'), counts}
"""

# ARGV: prefix, name, topic. 1: kept; 0: the room has no member any more.
_ROOM_TOPIC = b"""
if redis.call('SISMEMBER', p .. 'rooms', ARGV[2]) == 0 then return 0 end
redis.call('SET', p .. 'room:' .. ARGV[2] .. ':topic', ARGV[3])
return 1
"""

# ARGV: prefix, node, then name, Nick for each member the node has in a room,
# in the order they came. The node's members are exactly these afterwards:
# those it no longer has leave, those Redis lacks (it lost its data) come
# last.
_ROOM_SYNC = b"""
local node = ARGV[2]
local wanted = {}
for i = 3, #ARGV, 2 do wanted[ARGV[i] .. '\t' .. ARGV[i + 1]] = true end
for _, entry in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node .. ':rooms')) do
  if not wanted[entry] then
    local name, nick = owner(entry)
    leave_room(node, name, nick)
  end
end
for i = 3, #ARGV, 2 do enter_room(node, ARGV[i], ARGV[i + 1]) end
return 0
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
ROOM_JOIN, ROOM_PART, ROOM_READ, ROOM_COUNTS, ROOM_TOPIC, ROOM_SYNC = (
    _LUA_COMMON + body
    for body in (
        _ROOM_JOIN,
        _ROOM_PART,
        _ROOM_READ,
        _ROOM_COUNTS,
        _ROOM_TOPIC,
        _ROOM_SYNC,
    )
)

# Bans (bans.py, moderation.py). ARGV: prefix, address, value, channel, payload.
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
    FIRST = 2  # renewed, the first renewal after a silence: the grace began
    REAPED = 0  # the other nodes took it for dead and announced its users gone
    DATA_LOST = -1  # Redis lost its data: register the users again

    @property
    def held(self) -> bool:
        """Whether this node holds its lease (again)."""
        return self in (Renewal.RENEWED, Renewal.FIRST)


class LeaseLost(ClusterUnreachable):
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
    grace: bool = False  # the first renewal after a silence: the grace began


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _gathered(result: list[Any]) -> Gathered:
    """A room as _ROOM_JOIN and _ROOM_READ answer it: members as
    "NODE<TAB>Nick", the topic ('': none)."""
    members = [_text(entry).partition("\t")[2] for entry in result[0]]
    topic = _text(result[1])
    return Gathered(members, topic or None)


class RedisRegistry:
    """The registry of one node of a cluster, kept in Redis.

    The interface of L{chatproto.registry.MemoryRegistry}: C{claim},
    C{release}, C{names}, for every node of the cluster at once. A node
    claims under its lease: L{sync} takes it, L{renew} keeps it; without it,
    L{claim} fails with L{LeaseLost}. Every call fails with
    L{ClusterUnreachable} when Redis does not answer in time.

    C{lease}: seconds a lease lasts. If no node renewed one for half that
    (a silence), every node was out of Redis's reach (or Redis was away),
    and L{reap} reaps nobody for the next C{grace} seconds: the nodes whose
    lease ran out meanwhile may be alive, and coming back.
    """

    def __init__(
        self, commands: Commands, cluster: str, node: str, lease: float, grace: float
    ) -> None:
        self.commands = commands
        self.node = node
        self.prefix = f"chatproto:{cluster}:"
        db = commands.address.db
        self.public_channel = f"chatproto:{cluster}:{db}:all".encode()
        self.node_channel_prefix = f"chatproto:{cluster}:{db}:node:".encode()
        self.node_channel = self.node_channel_prefix + node.encode()
        self.bans_channel = f"chatproto:{cluster}:{db}:bans".encode()
        self.room_channel_prefix = f"chatproto:{cluster}:{db}:room:".encode()
        self.channels = {
            self.public_channel: Channel.PUBLIC,
            self.node_channel: Channel.NODE,
            self.bans_channel: Channel.BANS,
        }
        self.origin = node.encode()
        self.lease_ms = max(1, round(lease * 1000))
        self.silence_ms = max(1, round(lease * 500))
        self.grace_ms = max(1, round(grace * 1000))

    def kind(self, channel: bytes) -> Channel | None:
        """The kind of C{channel} (None: none of this node's)."""
        found = self.channels.get(channel)
        if found is None and channel.startswith(self.room_channel_prefix):
            return Channel.ROOM
        return found

    def room_channel(self, name: str) -> bytes:
        """The channel of room C{name}'s lines."""
        return self.room_channel_prefix + name.encode()

    def room_of(self, channel: bytes) -> str:
        """The room whose channel is C{channel}."""
        return channel[len(self.room_channel_prefix) :].decode("ascii", "replace")

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
            args += (self.public_channel, encode(Public(self.origin, announce)))
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
            epoch, conflicts, dropped, left, reaped, grace = result
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
                int(grace) == 1,
            )

        d = self._eval(
            SYNC,
            self.node,
            self.lease_ms,
            secrets.token_hex(8),
            known,
            self.silence_ms,
            self.grace_ms,
            *args,
        )
        return d.addCallback(read)

    def renew(self, epoch: str) -> Deferred[Renewal]:
        """Extend the lease, in the epoch the node knows ("": none); if it
        was gone, say whether this node was reaped (see L{Renewal})."""
        d = self._eval(
            RENEW, self.node, self.lease_ms, epoch, self.silence_ms, self.grace_ms
        )
        return d.addCallback(lambda result: Renewal(int(result)))

    def announce(self, lines: list[bytes], retention: float) -> Deferred[None]:
        """Publish departures that could not be published when they happened;
        keep them C{retention} seconds for the nodes that were not listening."""
        ms = max(1, round(retention * 1000))
        d = self._eval(ANNOUNCE, self.origin, self.public_channel, ms, *lines)
        return d.addCallback(lambda _: None)

    def reap(self, stamp: str) -> Deferred[list[str]]:
        """Release the users of every node whose lease expired, publish their
        departures; return their nicknames (for this node to tell its own).
        During a grace, or a silence, nobody (see L{RedisRegistry})."""
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
            "publish", self.public_channel, encode(Public(self.origin, line))
        )
        return d.addCallback(lambda _: None)

    def publish_room(self, channel: bytes, lines: bytes) -> Deferred[None]:
        """Send a room's lines to the nodes that hear its C{channel}."""
        d = self.commands.call(
            "publish", channel, encode(RoomLines(self.origin, lines))
        )
        return d.addCallback(lambda _: None)

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        """Send a private line to the node that holds C{target}; whether a
        node heard it."""
        key = nick_key(target)
        return self._to_holder(key, Private(key, line))

    def kick(self, kick: Kick) -> Deferred[bool]:
        """Send a kick to the node that holds its target (the whisper's
        path); whether a node heard it."""
        return self._to_holder(kick.target, kick)

    def answer(self, operator: str, target: str, line: bytes) -> Deferred[bool]:
        """Send the answer to C{operator}'s ban of C{target} to the node that
        holds C{operator} (the whisper's path); whether a node heard it."""
        key = nick_key(operator)
        return self._to_holder(key, Answer(key, nick_key(target), line))

    def _to_holder(self, key: str, message: NodeMessage) -> Deferred[bool]:
        """Publish C{message} on the channel of the node that holds the
        nickname C{key}, unless it is this one; whether a node heard it."""
        d = self._eval(
            WHISPER, self.node, key, self.node_channel_prefix, encode(message)
        )
        return d.addCallback(lambda heard: int(heard) > 0)

    # Rooms

    def room_join(
        self, name: str, nick: str, most: int
    ) -> Deferred[tuple[Gathered, bool]]:
        """Put C{nick}, of this node, in room C{name}; fail with
        L{TooManyRooms} if the room is new and C{most} rooms have members,
        with L{LeaseLost} if this node has no lease. The room as it is
        then, and whether this node's subscription heard the L{Joined}
        message the script published (it comes on the subscription)."""

        def decided(result: list[Any]) -> tuple[Gathered, bool]:
            if result[0] == -1:
                raise LeaseLost("this node has no lease in Redis")
            if result[0] == -2:
                raise TooManyRooms(name)
            return _gathered(result), int(result[2]) > 0

        d = self._eval(ROOM_JOIN, self.node, name, nick, most, self.node_channel)
        return d.addCallback(decided)

    def room_part(self, nick: str, names: list[str]) -> Deferred[None]:
        """Take C{nick}, of this node, out of these rooms."""
        d = self._eval(ROOM_PART, self.node, nick, *names)
        return d.addCallback(lambda _: None)

    def room_read(self, name: str) -> Deferred[Gathered]:
        """Room C{name}'s members on every node, and its topic."""
        return self._eval(ROOM_READ, name).addCallback(_gathered)

    def room_counts(self) -> Deferred[tuple[int, list[tuple[str, int]]]]:
        """The users of the cluster, and each room's members."""

        def read(result: list[Any]) -> tuple[int, list[tuple[str, int]]]:
            flat = result[1]
            rooms = [
                (_text(name), int(count))
                for name, count in zip(flat[::2], flat[1::2], strict=True)
            ]
            return int(result[0]), rooms

        return self._eval(ROOM_COUNTS).addCallback(read)

    def room_topic(self, name: str, topic: str) -> Deferred[bool]:
        """Keep room C{name}'s topic; whether the room still has members."""
        d = self._eval(ROOM_TOPIC, name, topic)
        return d.addCallback(lambda kept: int(kept) == 1)

    def room_sync(self, members: Iterable[tuple[str, str]]) -> Deferred[None]:
        """Make this node's members of rooms in Redis exactly C{members}
        (room, Nick), in the order they came (new ones last)."""
        args: list[str] = []
        for name, nick in members:
            args += (name, nick)
        d = self._eval(ROOM_SYNC, self.node, *args)
        return d.addCallback(lambda _: None)

    def ban(self, ban: Ban) -> Deferred[None]:
        """Keep a ban in Redis, and tell the other nodes."""
        value = ban.shared()
        payload = encode(BanShared(self.origin, ban.address, value))
        d = self._eval(BAN, ban.address, value, self.bans_channel, payload)
        return d.addCallback(lambda _: None)

    def unban(self, address: str) -> Deferred[None]:
        payload = encode(BanLifted(self.origin, address))
        d = self._eval(UNBAN, address, self.bans_channel, payload)
        return d.addCallback(lambda _: None)

    def bans(self, now: float) -> Deferred[list[Ban]]:
        """The cluster's bans in force."""

        def read(result: list[Any]) -> list[Ban]:
            pairs = zip(result[::2], result[1::2], strict=True)
            found = [Ban.from_shared(_text(a), bytes(v)) for a, v in pairs]
            return [ban for ban in found if ban is not None]

        return self._eval(BANS, int(now * 1000)).addCallback(read)
