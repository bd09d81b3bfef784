"""The chat's history: the last public lines, for C{/history} and C{/search}.

The room (L{chatproto.room.Room}) records every public line it
makes, arrivals and departures included, exactly as it sent it
(C{[H.M.S]-nick: text\\n}); private lines are never recorded. Each is kept
as a L{Kept}: with a number and when it was kept, so that a reader can
say which day a line is of (its stamp has no date). A user's
C{/history N} reads the last N back; C{/search WORDS} the last lines
holding every word (L{search_words}). The history forgets, in this order
of need: lines past C{--history-lines}, lines past C{--history-bytes} (the
oldest first), and lines older than C{--history-age}.

A seam like the L{chatproto.registry.Registry}: the room and the sessions
know only the L{History} interface, whose reads answer with a Deferred, so
that the cluster's history, kept in Redis for every node, stands in for the
in-memory one of a single server without the room noticing. In cluster
mode the L{chatproto.cluster_roles.ClusterHistory} is the room's history:
it keeps the lines with L{RedisHistory}, in the same script as they are
published (L{chatproto.cluster_roles.Outbox}).

In Redis (cluster mode), under C{chatproto:CLUSTER:}:

    history         list    "MS LINE": a public line, and when Redis kept it
                            (milliseconds, Redis's clock, but one more than
                            the line before at least: its number); oldest
                            first
    history:bytes   string  the bytes of the lines in "history"
    history:cut     string  the stamp of the newest line forgotten (no
                            expiry): a node whose store is older knows it
                            missed lines (StoreFeed)

The first two expire C{--history-age} after the last line kept: a chat
quiet that long leaves no history behind. A node with a store (its own
SQLite file, chatproto/store.py) copies every line of this window into it
as they come, and those it missed when it joins: Redis's window is then
what carries the lines from node to node's store, and each node answers
/history, /search and /unread from its own store.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from chatproto.config import ServerConfig


@dataclass(frozen=True, slots=True)
class Kept:
    """A public line as a history keeps it."""

    number: int  # its place in this history: a later line has a larger one
    when: float  # when it was kept, in seconds since the epoch
    line: bytes  # exactly as it was sent, ending in \n


# A word, for /search: letters and digits (no "_", as SQLite's FTS5
# unicode61 tokenizer splits on it too).
_WORD = re.compile(r"[^\W_]+")


def search_words(text: str) -> list[str]:
    """The words of C{text} as /search compares them: letters and digits,
    in lower case, without accents (C{L'Éléphant} gives C{l}, C{elephant})."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in folded if not unicodedata.combining(c))
    return _WORD.findall(bare)


def searchable(line: bytes) -> str:
    """What /search looks into: a kept line without its C{[H.M.S]-} stamp
    (so the author's nickname and the text, or the arrival or departure)."""
    text = line.decode("utf-8", "replace").rstrip("\n")
    if text.startswith("["):
        _, dash, rest = text.partition("]-")
        if dash:
            return rest
    return text


class History(Protocol):
    """What the room and the sessions need from a history of its public
    lines. Each read fails with L{chatproto.registry.ClusterUnreachable}
    when the history cannot be read now (the cluster's Redis)."""

    limit: int  # the most lines /history N may ask for (0: none kept)

    @property
    def newest(self) -> int:
        """The number of the newest line recorded (0: none yet): a read
        position (chatproto/positions.py)."""

    def record(self, line: bytes) -> None:
        """Keep a public line made here (one line, ending in C{\\n})."""

    def last(self, count: int) -> Deferred[list[Kept]]:
        """The last C{count} lines kept, oldest first, none older than the
        history's age."""

    def after(
        self, number: int, count: int, until: int | None = None
    ) -> Deferred[tuple[int, list[Kept]]]:
        """How many lines are kept after line C{number} (and up to line
        C{until}, when given), and the last C{count} of them, oldest first
        (/unread)."""

    def before(self, number: int | None, count: int) -> Deferred[list[Kept]]:
        """The C{count} lines kept before line C{number} (None: after the
        newest), oldest first (/history N avant K)."""

    def search(self, words: Sequence[str], count: int) -> Deferred[list[Kept]]:
        """The C{count} most recent lines kept whose words (L{search_words}
        of L{searchable}) hold every one of C{words} (each already folded
        by L{search_words}), oldest first."""


def newest_holding(
    newest_first: Iterable[Kept], words: Sequence[str], count: int
) -> list[Kept]:
    """The first C{count} of C{newest_first} (lines, the newest first) that
    hold every one of C{words}, oldest first: /search over lines in hand.

    Each line gets a cheap first look (L{_bare}): a line that lacks one of
    the ASCII words there lacks it for L{search_words} too, and is passed
    over at a fraction of its cost."""
    wanted = set(words)
    plain = [word.encode() for word in wanted if word.isascii()]
    found: list[Kept] = []
    if count <= 0:
        return found
    for kept in newest_first:
        if plain:
            bare = _bare(kept.line)
            if not all(word in bare for word in plain):
                continue
        if wanted.issubset(search_words(searchable(kept.line))):
            found.append(kept)
            if len(found) == count:
                break
    found.reverse()
    return found


def _bare(line: bytes) -> bytes:
    """C{line} folded as L{search_words} folds it, but stripped of all that
    is not ASCII (combining marks and the rest), in C code only: an ASCII
    word of the line's L{search_words} is in it (its letters stay side by
    side), though not every ASCII run in it is such a word."""
    if line.isascii():
        return line.lower()  # casefold and NFKD change no ASCII letter
    folded = unicodedata.normalize("NFKD", line.decode("utf-8", "replace").casefold())
    return folded.encode("ascii", "ignore")


def room_of(line: bytes) -> str | None:
    """The named room of a kept line, from its text (C{[H.M.S]-#NAME ...},
    chatproto/wire.py's room_prefix); None: the lobby's (a nickname has no
    C{#}). A cluster's lines travel and are kept without their room beside
    them: each says it."""
    if not line.startswith(b"["):
        return None
    end = line.find(b"]-#", 0, 16)
    if end < 0:
        return None
    space = line.find(b" ", end + 3)
    if space < 0:
        return None
    return line[end + 3 : space].decode("ascii", "replace")


class RoomHistory(History, Protocol):
    """A single server's history, which keeps the lines of every room
    (chatproto/rooms.py): C{room} is a named room (its name, in lower case,
    without C{#}), None the lobby, whose lines are the chat's of before
    rooms. Numbers are the history's, shared by every room: a room's lines
    are numbered with gaps. C{after} (/unread) reads the lobby's lines only.
    L{MemoryHistory}, L{chatproto.store.StoreHistory} and a cluster's
    L{chatproto.cluster_roles.ClusterHistory} implement it."""

    def record(self, line: bytes, room: str | None = None) -> None: ...
    def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]: ...
    def before(
        self, number: int | None, count: int, room: str | None = None
    ) -> Deferred[list[Kept]]: ...
    def search(
        self, words: Sequence[str], count: int, room: str | None = None
    ) -> Deferred[list[Kept]]: ...


class MemoryHistory:
    """The history of a single server process.

    Bounded in lines (C{history_lines}, its L{limit}) and in the bytes of
    those lines (C{history_bytes}): a line longer than the whole byte bound
    is not kept. Each line costs about 120 bytes of Python objects beyond
    its text (a tuple, a float, a bytes header), so the default bounds, 100
    lines and 256 KiB of text, hold at most about 270 KiB. A line's number
    is its place among all the lines recorded (the first is 1): those
    forgotten, then its place in the deque; its L{Kept} is made when read
    (recording one is on the broadcast path). L{search} reads every line
    kept, the newest first: at most C{history_lines} of them.

    The lines of every room are kept together (L{RoomHistory}), in the
    same bounds: a room's lines stay as long as any other. While no room's
    line is kept, the lobby's reads are those of before rooms; otherwise
    they pass over the other rooms' lines, at most C{history_lines}."""

    def __init__(self, config: ServerConfig, clock: IReactorTime) -> None:
        self.config = config
        self.clock = clock
        self.limit = config.history_lines
        # (when, line, room: None for the lobby)
        self._lines: deque[tuple[float, bytes, str | None]] = deque()
        self._bytes = 0
        self._forgotten = 0  # the lines recorded, then forgotten
        self._in_rooms = 0  # the lines kept of named rooms

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def size(self) -> int:
        """The bytes of the lines kept."""
        return self._bytes

    def record(self, line: bytes, room: str | None = None) -> None:
        config = self.config
        if config.history_lines <= 0 or len(line) > config.history_bytes:
            return
        now = self.clock.seconds()
        self._lines.append((now, line, room))
        self._bytes += len(line)
        if room is not None:
            self._in_rooms += 1
        self._forget(now)

    def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
        self._forget(self.clock.seconds())
        return succeed(self._kept(0, len(self._lines), count, room))

    @property
    def newest(self) -> int:
        return self._forgotten + len(self._lines)

    def after(
        self, number: int, count: int, until: int | None = None
    ) -> Deferred[tuple[int, list[Kept]]]:
        """The lobby's lines after C{number} (/unread reads the lobby)."""
        self._forget(self.clock.seconds())
        lines = self._lines
        end = len(lines) if until is None else until - self._forgotten
        end = min(max(0, end), len(lines))
        start = min(max(0, number - self._forgotten), end)
        if not self._in_rooms:
            return succeed((end - start, self._kept(start, end, count)))
        total = sum(1 for i in range(start, end) if lines[i][2] is None)
        return succeed((total, self._kept(start, end, count, None)))

    def before(
        self, number: int | None, count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        self._forget(self.clock.seconds())
        lines = self._lines
        end = len(lines) if number is None else number - self._forgotten - 1
        return succeed(self._kept(0, min(max(0, end), len(lines)), count, room))

    def _kept(
        self, start: int, end: int, count: int, room: str | None = None
    ) -> list[Kept]:
        """The last C{count} of C{room}'s lines at indices C{start} to
        C{end}."""
        lines, first = self._lines, self._forgotten + 1
        if room is None and not self._in_rooms:
            start = max(start, end - max(0, count))
            return [Kept(first + i, *lines[i][:2]) for i in range(start, end)]
        found: list[Kept] = []
        for i in range(end - 1, start - 1, -1):
            if len(found) >= count:
                break
            when, line, of = lines[i]
            if of == room:
                found.append(Kept(first + i, when, line))
        found.reverse()
        return found

    def search(
        self, words: Sequence[str], count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        self._forget(self.clock.seconds())
        return succeed(newest_holding(self._newest_first(room), words, count))

    def _newest_first(self, room: str | None) -> Iterator[Kept]:
        number = self._forgotten + len(self._lines)
        for when, line, of in reversed(self._lines):
            if of == room:
                yield Kept(number, when, line)
            number -= 1

    def _forget(self, now: float) -> None:
        """Drop the oldest lines while past a bound, or too old."""
        config = self.config
        horizon = now - config.history_age
        lines = self._lines
        while lines and (
            len(lines) > config.history_lines
            or self._bytes > config.history_bytes
            or lines[0][0] < horizon
        ):
            _, old, room = lines.popleft()
            self._bytes -= len(old)
            self._forgotten += 1
            if room is not None:
                self._in_rooms -= 1


# Lua for the cluster's history. ARGV[1] is the key prefix, as in cluster.py.

_LUA_NOW = b"""
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ARGV: prefix, channel, payload ('' : publish nothing), most lines, most
# bytes, age ms, then the lines. Publishes the payload and keeps the lines in
# one step, then forgets the oldest lines past a bound or too old. Each line
# is stamped with Redis's clock, but one ms past the line before at least: a
# stamp is a line's number (unique, increasing). Answers the newest stamp
# (0: none).
KEEP = (
    _LUA_NOW
    + b"""
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
local key, size = p .. 'history', p .. 'history:bytes'
local most, bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local horizon = now - tonumber(ARGV[6])
local kept = 0
local tail = redis.call('LINDEX', key, -1)
local stamp = 0
if tail then
  stamp = tonumber(string.sub(tail, 1, string.find(tail, ' ', 1, true) - 1))
end
for i = 7, #ARGV do
  if most > 0 and #ARGV[i] <= bytes then
    stamp = math.max(now, stamp + 1)
    redis.call('RPUSH', key, stamp .. ' ' .. ARGV[i])
    redis.call('INCRBY', size, #ARGV[i])
    kept = kept + 1
  end
end
local cut = nil
while true do
  local head = redis.call('LINDEX', key, 0)
  if not head then break end
  local space = string.find(head, ' ', 1, true)
  if redis.call('LLEN', key) <= most
    and tonumber(redis.call('GET', size) or '0') <= bytes
    and tonumber(string.sub(head, 1, space - 1)) >= horizon then
    break
  end
  redis.call('LPOP', key)
  redis.call('DECRBY', size, #head - space)
  cut = string.sub(head, 1, space - 1)
end
if cut then redis.call('SET', p .. 'history:cut', cut) end
if redis.call('LLEN', key) == 0 then
  redis.call('DEL', key, size)
elseif kept > 0 then
  redis.call('PEXPIRE', key, ARGV[6])
  redis.call('PEXPIRE', size, ARGV[6])
end
return stamp
"""
)

# ARGV: prefix, number, most. The newest stamp forgotten (0: none), then
# the first MOST entries ("MS LINE") stamped after NUMBER, oldest first: what
# a node's store lacks (StoreFeed in chatproto/cluster_roles.py). The first
# of them is found from the tail, in ever larger slices: a node that keeps
# up reads a few entries, not the whole window.
SINCE = b"""
local p, key = ARGV[1], ARGV[1] .. 'history'
local number, most = tonumber(ARGV[2]), tonumber(ARGV[3])
local length = redis.call('LLEN', key)
local first = length
local slice = 16
while first > 0 do
  local from = math.max(0, first - slice)
  local entries = redis.call('LRANGE', key, from, first - 1)
  local i = #entries
  while i >= 1 do
    local entry = entries[i]
    local space = string.find(entry, ' ', 1, true)
    if tonumber(string.sub(entry, 1, space - 1)) <= number then break end
    i = i - 1
  end
  if i >= 1 then
    first = from + i
    break
  end
  first = from
  slice = slice * 4
end
local found = {redis.call('GET', p .. 'history:cut') or '0'}
if first < length and most > 0 then
  for _, entry in ipairs(redis.call('LRANGE', key, first, first + most - 1)) do
    table.insert(found, entry)
  end
end
return found
"""

# ARGV: prefix, count, age ms. The last COUNT entries ("MS LINE"), but
# those too old.
LAST = (
    _LUA_NOW
    + b"""
local horizon = now - tonumber(ARGV[3])
local entries = {}
for _, entry in ipairs(redis.call('LRANGE', p .. 'history', -tonumber(ARGV[2]), -1)) do
  local space = string.find(entry, ' ', 1, true)
  if tonumber(string.sub(entry, 1, space - 1)) >= horizon then
    table.insert(entries, entry)
  end
end
return entries
"""
)


class Evaluator(Protocol):
    """What the Redis history needs of a connection to Redis
    (L{chatproto._redis.Commands} is one): a script, run within its time
    limit, failing with L{chatproto.registry.ClusterUnreachable}."""

    def eval(self, script: bytes, args: Sequence[Any]) -> Deferred[Any]: ...


class RedisHistory:
    """The history of a whole cluster, in Redis: every node keeps the lines
    it made, and reads everyone's. A node started later reads what the
    others kept; a node that restarts loses nothing.

    Bounded as L{MemoryHistory}, in one script each time lines are kept (so
    every node should have the same --history-* options: the smallest of
    them wins for the lines kept after it)."""

    def __init__(self, commands: Evaluator, cluster: str, config: ServerConfig) -> None:
        self.commands = commands
        self.prefix = f"chatproto:{cluster}:"
        self.config = config
        self.limit = config.history_lines
        self.age_ms = max(1, round(config.history_age * 1000))
        # The newest line this node knows kept: the stamp its own last KEEP
        # answered, or the newest it read (a lower bound of Redis's).
        self.newest = 0

    def keep(
        self, lines: Sequence[bytes], channel: bytes, payload: bytes | None
    ) -> Deferred[None]:
        """Keep C{lines}; publish C{payload} on C{channel} in the same step
        (None: nothing to publish)."""
        config = self.config
        d = self.commands.eval(
            KEEP,
            (
                self.prefix,
                channel,
                b"" if payload is None else payload,
                config.history_lines,
                config.history_bytes,
                self.age_ms,
                *lines,
            ),
        )
        return d.addCallback(self._known)

    def _known(self, newest: int) -> None:
        self.newest = max(self.newest, newest)

    def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
        """The last C{count} lines of C{room} (None: the lobby). The window
        holds every room's lines: if the last C{count} are not all
        C{room}'s, the whole window is read, and sorted here."""
        if count <= 0:
            return succeed([])

        def of_room(kept: list[Kept]) -> list[Kept] | Deferred[list[Kept]]:
            if all(room_of(k.line) == room for k in kept):
                return kept
            d = self._last(self.limit)
            return d.addCallback(
                lambda every: [k for k in every if room_of(k.line) == room][-count:]
            )

        return self._last(count).addCallback(of_room)

    def _last(self, count: int) -> Deferred[list[Kept]]:
        """The last C{count} lines of every room."""
        d = self.commands.eval(LAST, (self.prefix, count, self.age_ms))
        return d.addCallback(self._read)

    def _read(self, entries: Sequence[bytes]) -> list[Kept]:
        kept = _entries(entries)
        if kept:
            self._known(kept[-1].number)
        return kept

    def after(
        self, number: int, count: int, until: int | None = None
    ) -> Deferred[tuple[int, list[Kept]]]:
        """Read every line kept (at most C{--history-lines}) and keep those
        stamped after C{number} (and up to C{until}) here, as L{search}
        does."""

        def since(kept: list[Kept]) -> tuple[int, list[Kept]]:
            later = [
                k
                for k in kept
                if k.number > number and (until is None or k.number <= until)
            ]
            return len(later), later[max(0, len(later) - count) :] if count > 0 else []

        lobby = self._last(self.limit).addCallback(
            lambda kept: [k for k in kept if room_of(k.line) is None]
        )
        return lobby.addCallback(since)

    def before(
        self, number: int | None, count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        if number is None:
            return self.last(count, room)

        def earlier(kept: list[Kept]) -> list[Kept]:
            older = [k for k in kept if k.number < number]
            return older[max(0, len(older) - count) :] if count > 0 else []

        return self.last(self.limit, room).addCallback(earlier)

    def since(self, number: int, most: int) -> Deferred[tuple[int, list[Kept]]]:
        """The newest stamp the window forgot (0: none), and the first
        C{most} lines kept after line C{number}, oldest first: what a
        node's store lacks."""

        def read(found: Sequence[bytes]) -> tuple[int, list[Kept]]:
            return int(found[0]), self._read(found[1:])

        return self.commands.eval(SINCE, (self.prefix, number, most)).addCallback(read)

    def search(
        self, words: Sequence[str], count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        """Read every line kept (at most C{--history-lines}) and look in
        them here, in Python (a node with a store searches its store
        instead: L{chatproto.cluster_roles.ClusterHistory})."""
        d = self.last(self.limit, room)
        return d.addCallback(lambda kept: newest_holding(reversed(kept), words, count))


def _entries(entries: Sequence[bytes]) -> list[Kept]:
    """The history's entries, C{MS LINE}, as lines kept: numbered by their
    millisecond (lines kept in the same script share it)."""
    found = []
    for entry in entries:
        stamp, _, line = entry.partition(b" ")
        ms = int(stamp)
        found.append(Kept(ms, ms / 1000, line))
    return found
