"""Protected nicknames: who owns a nickname, and the book that keeps them.

A nickname protected with C{/register PASSWORD} is let in only with that
password (docs/protocol.md, "Protected nicknames"). An L{Accounts} book
keeps the L{Account}s: in memory for a server without a store
(L{MemoryAccounts}), in the SQLite store (chatproto/store.py) otherwise, in
Redis for a cluster (L{RedisAccounts}). It
never holds a password, only its scrypt hash (chatproto/operators.py's).
L{Protection} is what the sessions ask (chatproto/session.py: the password
prompt, /register, /unregister): it checks and hashes passwords off the
reactor thread, throttled, and lets accounts unused for --nick-days go.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.history import Evaluator
from chatproto.operators import (
    CLUSTER_TRIES_PER_SECOND,
    FORGET_AFTER,
    FREE_TRIES,
    RETRY_AFTER,
    Busy,
    Checker,
    Hasher,
    Throttled,
    Tries,
    check_here,
    hash_here,
)
from chatproto.registry import ClusterUnreachable, nick_key, nick_look

log = Logger()

DAY = 86400.0
# Seconds between two marks that the owners here use their nicknames.
REFRESH = 3600.0


@dataclass(frozen=True, slots=True)
class Account:
    """A protected nickname: its owner's password hash, when last used."""

    nick: str  # the nickname as it was protected
    hash: str  # chatproto.operators.make_hash's string, never a password
    used: float  # last registered under it or left it, seconds since epoch
    seen: int | None = None  # its read position when its owner left (None: none)


class Accounts(Protocol):
    """A book of protected nicknames, found by their key (nick_key): each
    Deferred fires once the change is kept (in a store: committed), or
    fails when the book cannot be read or written now."""

    def find(self, nick: str) -> Deferred[Account | None]: ...
    def protect(self, account: Account) -> Deferred[None]:
        """Keep C{account}, in place of any account of the same nickname."""

    def unprotect(self, nick: str) -> Deferred[None]: ...
    def look_alike(self, nick: str) -> str | None:
        """A protected nickname key that looks like C{nick} (registry's
        nick_look) but is another, as far as the book knows without a read
        (it may have expired: find() it); None for none, and in a cluster."""

    def surely_free(self, nick: str) -> bool:
        """Whether the book knows without a read that no account protects
        C{nick}, nor a nickname that looks like it (False: find() it, and
        its look-alike). A registration then claims the nickname at once."""

    def touch(self, nick: str, when: float, seen: int | None = None) -> Deferred[None]:
        """The nickname was used at C{when}: its account's C{used}; its
        owner left, the history's newest line then C{seen} (kept unless
        None: its read position, chatproto/positions.py)."""


class MemoryAccounts:
    """The book of a server without a store: a dictionary by nickname
    key, every Deferred already fired (nothing survives a restart)."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.looks = Looks()

    def find(self, nick: str) -> Deferred[Account | None]:
        return succeed(self.accounts.get(nick_key(nick)))

    def protect(self, account: Account) -> Deferred[None]:
        key = nick_key(account.nick)
        self.accounts[key] = account
        self.looks.add(key)
        return succeed(None)

    def unprotect(self, nick: str) -> Deferred[None]:
        key = nick_key(nick)
        self.accounts.pop(key, None)
        self.looks.discard(key)
        return succeed(None)

    def look_alike(self, nick: str) -> str | None:
        return self.looks.alike(nick)

    def surely_free(self, nick: str) -> bool:
        return not self.looks.holds(nick)

    def touch(self, nick: str, when: float, seen: int | None = None) -> Deferred[None]:
        key = nick_key(nick)
        account = self.accounts.get(key)
        if account is not None:
            if seen is None:
                seen = account.seen
            self.accounts[key] = replace(account, used=when, seen=seen)
        return succeed(None)


class Looks:
    """The protected nickname keys by their look (nick_look), so that a
    look-alike of one (C{aIice} of C{alice}) is found without a read."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys: dict[str, set[str]] = {}
        for key in keys:
            self.add(key)

    def add(self, key: str) -> None:
        self._keys.setdefault(nick_look(key), set()).add(key)

    def discard(self, key: str) -> None:
        look = nick_look(key)
        keys = self._keys.get(look)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[look]

    def holds(self, nick: str) -> bool:
        """Whether a key has the look of C{nick}: its own, or a look-alike's."""
        return nick_look(nick) in self._keys

    def alike(self, nick: str) -> str | None:
        """A key of the same look as C{nick}'s but not its own, or None."""
        others = self._keys.get(nick_look(nick))
        if not others:
            return None
        key = nick_key(nick)
        return next((other for other in sorted(others) if other != key), None)


class Unavailable(Exception):
    """The book of accounts cannot be read or written now (logged where it
    failed): the user is told to try again later."""


class AlreadyProtected(Exception):
    """/register of a nickname that is protected already."""


class NotProtected(Exception):
    """/unregister of a nickname that nobody protects."""


class Protection:
    """What the sessions ask of protected nicknames: whether one is, its
    password checked, protected and freed, and when it was last used.

    Every scrypt run (a check, a hash for /register) goes through its
    L{Tries}: throttled per address and in total, as /op's are, in a thread
    of the reactor's pool under twistd (C{checker}, C{hasher}). An account
    unused for longer than C{days} days counts as none, and is removed the
    first time it is found so. C{owners}: the nickname keys of this
    server's users who own their nickname (registered with its password, or
    protected it since); their departure records that it was used.

    A password is never kept, logged, nor put in an exception's text."""

    def __init__(
        self,
        accounts: Accounts,
        clock: IReactorTime,
        days: float,
        checker: Checker | None = None,
        hasher: Hasher | None = None,
    ) -> None:
        self.accounts = accounts
        self.clock = clock
        self.days = days
        self.checker: Checker = checker or check_here
        self.hasher: Hasher = hasher or hash_here
        self.tries = Tries(clock, act="nick-failed")
        self.owners: set[str] = set()
        # The nicknames whose /register is under way: one whose user leaves
        # meanwhile is not protected (someone else may hold it by then).
        self._protecting: set[str] = set()
        # The owners here use their nicknames: their accounts are marked
        # used every REFRESH seconds, so that neither --nick-days nor the
        # store's retention lifts the protection of an owner who stays.
        self._refresh = LoopingCall(self._refresh_owners)
        self._refresh.clock = clock

    def look_alike(self, nick: str) -> str | None:
        """A protected nickname that looks like C{nick} and is another
        (L{Accounts.look_alike}): find() says whether it still is."""
        return self.accounts.look_alike(nick)

    def surely_free(self, nick: str) -> bool:
        """Whether no account protects C{nick} nor a look-alike of it, known
        without a read (L{Accounts.surely_free})."""
        return self.accounts.surely_free(nick)

    def find(self, nick: str) -> Deferred[Account | None]:
        """The account that protects C{nick} now, or None; fails with
        L{Unavailable}."""
        d = self.accounts.find(nick)
        d.addCallback(self._unexpired)
        d.addErrback(self._failed, "reading the account of {nick}", nick)
        return d

    def _unexpired(self, account: Account | None) -> Account | Deferred[None] | None:
        if account is None or nick_key(account.nick) in self.owners:
            return account
        if self.clock.seconds() - account.used <= self.days * DAY:
            return account
        log.info(
            "{nick} was not used for {days:g} days: its protection is lifted",
            act="nick-expired",
            nick=account.nick,
            days=self.days,
        )
        return self.accounts.unprotect(account.nick)

    def check(
        self, host: str | None, nick: str, password: str
    ) -> Deferred[bool | None]:
        """Whether C{password} is that of C{nick}, tried from C{host}; None
        when nobody protects C{nick} (no try counted). Fails with
        L{Throttled} or L{Unavailable}."""

        def found(account: Account | None) -> Deferred[bool | None]:
            if account is None:
                return succeed(None)
            d = self.tries.check(host, self.checker, password, account.hash)
            d.addCallback(self._said, nick, host)
            d.addErrback(self._failed, "checking the password of {nick}", nick)
            return cast("Deferred[bool | None]", d)

        return self.find(nick).addCallback(found)

    def _said(self, right: bool, nick: str, host: str | None) -> bool:
        if not right:
            log.warn(
                "{nick} from {address}: wrong password for a protected nickname "
                "({failures} in a row)",
                act="nick-failed",
                nick=nick,
                address=host,
                failures=self.tries.failures(host),
            )
        return right

    def protect(self, host: str | None, nick: str, password: str) -> Deferred[None]:
        """Protect C{nick}, C{host}'s user's nickname, with C{password}.
        Fails with L{AlreadyProtected}, L{Throttled} or L{Unavailable}."""

        key = nick_key(nick)

        def found(account: Account | None) -> Deferred[str]:
            if account is not None:
                raise AlreadyProtected()
            self._protecting.add(key)
            d = self.tries.run(host, self.hasher, password)
            d.addErrback(self._failed, "making the hash of {nick}", nick)
            return d

        def made(stored: str) -> Deferred[None]:
            if key not in self._protecting:  # its user left meanwhile
                raise Unavailable()
            self._protecting.discard(key)
            account = Account(nick=nick, hash=stored, used=self.clock.seconds())
            d = self.accounts.protect(account)
            d.addErrback(self._failed, "protecting {nick}", nick)
            return d

        def protected(_: None) -> None:
            self._own(key)
            log.info(
                "{nick} is protected", act="nick-protected", nick=nick, address=host
            )

        return (
            self.find(nick).addCallback(found).addCallback(made).addCallback(protected)
        )

    def unprotect(self, host: str | None, nick: str, password: str) -> Deferred[bool]:
        """Lift the protection of C{nick} if C{password} is its own, tried
        from C{host}: whether it was. Fails with L{NotProtected},
        L{Throttled} or L{Unavailable}."""

        def checked(right: bool | None) -> bool | Deferred[bool]:
            if right is None:
                raise NotProtected()
            if not right:
                return False
            d = self.accounts.unprotect(nick)
            d.addErrback(self._failed, "freeing {nick}", nick)
            return d.addCallback(freed)

        def freed(_: None) -> bool:
            self._disown(nick_key(nick))
            log.info("{nick} is free", act="nick-freed", nick=nick, address=host)
            return True

        return self.check(host, nick, password).addCallback(checked)

    def arrived(self, nick: str) -> None:
        """An owner registered under its protected nickname: it was used."""
        self._own(nick_key(nick))
        self._touch(nick)

    def _own(self, key: str) -> None:
        self.owners.add(key)
        if not self._refresh.running:
            self._refresh.start(REFRESH, now=False)

    def _disown(self, key: str) -> None:
        self.owners.discard(key)
        if not self.owners and self._refresh.running:
            self._refresh.stop()

    def _refresh_owners(self) -> None:
        for key in self.owners:
            self._touch(key)

    def left(self, nick: str, seen: int) -> bool:
        """A user left, the history's newest line then C{seen}: if it was
        an owner, its nickname was used and C{seen} is its read position
        (whether it was)."""
        key = nick_key(nick)
        self._protecting.discard(key)
        if key not in self.owners:
            return False
        self._disown(key)
        self._touch(nick, seen)
        return True

    def read(self, nick: str, seen: int) -> None:
        """An owner here was given the lines up to C{seen}: its read
        position, saved as it goes (chatproto/positions.py)."""
        if nick_key(nick) in self.owners:
            self._touch(nick, seen)

    def _touch(self, nick: str, seen: int | None = None) -> None:
        d = self.accounts.touch(nick, self.clock.seconds(), seen)
        d.addErrback(self._failed, "recording that {nick} was used", nick)
        d.addErrback(lambda _: None)  # logged: the chat goes on

    def _failed(self, failure: Failure, doing: str, nick: str) -> Failure:
        """Log why the book or scrypt failed (never with a password: none
        is in their exceptions), and fail with L{Unavailable}; a throttled
        try fails as it is."""
        if failure.check(Unavailable, Throttled):
            return failure
        if failure.check(ClusterUnreachable):  # said by the cluster already
            log.warn(
                doing + ": {why}",
                nick=nick,
                why=failure.getErrorMessage(),
                act="accounts-failed",
            )
        else:
            log.failure(doing, failure, nick=nick, act="accounts-failed")
        raise Unavailable()


# The book of a cluster, in Redis: one hash, chatproto:CLUSTER:accounts,
# nickname key -> "USED<TAB>NICK<TAB>HASH", and one of read positions,
# chatproto:CLUSTER:seen, nickname key -> the history's stamp
# (cluster_redis.py lists the keys). ARGV[1] is the accounts' key, ARGV[2]
# the nickname key, ARGV[3] the positions' key.

_FIND = b"""
return {redis.call('HGET', ARGV[1], ARGV[2]), redis.call('HGET', ARGV[3], ARGV[2])}
"""
# ARGV[4]: the account's value.
_PROTECT = b"""
redis.call('HSET', ARGV[1], ARGV[2], ARGV[4])
redis.call('HDEL', ARGV[3], ARGV[2])
return 0
"""
_UNPROTECT = b"""
redis.call('HDEL', ARGV[1], ARGV[2])
redis.call('HDEL', ARGV[3], ARGV[2])
return 0
"""
# ARGV[4]: when it was used; ARGV[5]: its read position ('': unchanged).
# An account that is not there is not made.
_TOUCH = b"""
local v = redis.call('HGET', ARGV[1], ARGV[2])
if v then
  local tab = string.find(v, '\\t', 1, true)
  redis.call('HSET', ARGV[1], ARGV[2], ARGV[4] .. string.sub(v, tab))
  if ARGV[5] ~= '' then redis.call('HSET', ARGV[3], ARGV[2], ARGV[5]) end
end
return 0
"""


class RedisAccounts:
    """The book of a whole cluster, in its Redis (the database of --redis):
    a nickname protected on one node is protected on every node, and
    survives the restart of any node (and of Redis, if its persistence is
    on). Every Deferred fires once Redis holds the change, or fails with
    L{chatproto.registry.ClusterUnreachable}."""

    def __init__(self, commands: Evaluator, cluster: str) -> None:
        self.commands = commands
        self.key = f"chatproto:{cluster}:accounts"
        self.positions = f"chatproto:{cluster}:seen"

    def find(self, nick: str) -> Deferred[Account | None]:
        d = self.commands.eval(_FIND, (self.key, nick_key(nick), self.positions))
        return d.addCallback(_account)

    def look_alike(self, nick: str) -> str | None:
        return None  # a cluster checks letter case only (docs/protocol.md)

    def surely_free(self, nick: str) -> bool:
        return False  # only Redis knows

    def protect(self, account: Account) -> Deferred[None]:
        value = f"{account.used!r}\t{account.nick}\t{account.hash}"
        key = nick_key(account.nick)
        d = self.commands.eval(_PROTECT, (self.key, key, self.positions, value))
        return d.addCallback(lambda _: None)

    def unprotect(self, nick: str) -> Deferred[None]:
        d = self.commands.eval(_UNPROTECT, (self.key, nick_key(nick), self.positions))
        return d.addCallback(lambda _: None)

    def touch(self, nick: str, when: float, seen: int | None = None) -> Deferred[None]:
        position = "" if seen is None else str(seen)
        args = (self.key, nick_key(nick), self.positions, repr(when), position)
        return self.commands.eval(_TOUCH, args).addCallback(lambda _: None)


def _account(values: list[bytes | str | None]) -> Account | None:
    """An account as RedisAccounts keeps it (its value, its read
    position), or None."""
    value, seen = values
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    used, nick, stored = text.split("\t")
    return Account(
        nick=nick,
        hash=stored,
        used=float(used),
        seen=None if seen is None else int(seen),
    )


# The failed password tries of a cluster (operators.Tries's counts, shared),
# keys chatproto:CLUSTER:tries:KIND:... (cluster_redis.py lists them):
# failures:ADDRESS the failures in a row, expiring FORGET_AFTER after the
# last try; wait:ADDRESS, there for RETRY_AFTER after the last try; total,
# the tries of the whole cluster in the current second. One script decides
# and counts, so that no two nodes both let a try through.
# ARGV: the three keys, FREE_TRIES, RETRY_AFTER and FORGET_AFTER in ms,
# CLUSTER_TRIES_PER_SECOND. Answers {1, failures} (counted), {0, ms}
# (the address must wait), {-1, ms} (the cluster's tries in total).
_TAKE = b"""
local failures = tonumber(redis.call('GET', ARGV[1]) or '0')
if failures >= tonumber(ARGV[4]) then
  local wait = redis.call('PTTL', ARGV[2])
  if wait > 0 then return {0, wait} end
end
local total = tonumber(redis.call('GET', ARGV[3]) or '0')
if total >= tonumber(ARGV[7]) then
  local wait = redis.call('PTTL', ARGV[3])
  if wait < 1 then wait = 1000 end
  return {-1, wait}
end
if redis.call('INCR', ARGV[3]) == 1 then redis.call('PEXPIRE', ARGV[3], 1000) end
failures = redis.call('INCR', ARGV[1])
redis.call('PEXPIRE', ARGV[1], ARGV[6])
redis.call('SET', ARGV[2], '1', 'PX', ARGV[5])
return {1, failures}
"""
_RIGHT = b"""
redis.call('DEL', ARGV[1], ARGV[2])
return 0
"""


class RedisTries:
    """The failures of a cluster's password tries of one C{kind}, in its
    Redis (L{chatproto.operators.SharedCounts}): an address's failures on
    one node count on every node, and the whole cluster takes at most
    CLUSTER_TRIES_PER_SECOND tries a second. Every Deferred fails with
    L{chatproto.registry.ClusterUnreachable} when Redis cannot answer."""

    def __init__(self, commands: Evaluator, cluster: str, kind: str) -> None:
        self.commands = commands
        self.prefix = f"chatproto:{cluster}:tries:{kind}:"

    def _keys(self, host: str | None) -> tuple[str, str]:
        address = host or ""
        return self.prefix + "failures:" + address, self.prefix + "wait:" + address

    def take(self, host: str | None) -> Deferred[int]:
        failures, wait = self._keys(host)
        args = (
            failures,
            wait,
            self.prefix + "total",
            FREE_TRIES,
            round(RETRY_AFTER * 1000),
            round(FORGET_AFTER * 1000),
            CLUSTER_TRIES_PER_SECOND,
        )
        return self.commands.eval(_TAKE, args).addCallback(_taken)

    def right(self, host: str | None) -> Deferred[None]:
        d = self.commands.eval(_RIGHT, self._keys(host))
        return d.addCallback(lambda _: None)


def _taken(answer: list[int]) -> int:
    """The failures counted by _TAKE, or its refusal raised."""
    verdict, value = (int(x) for x in answer)
    if verdict == 1:
        return value
    wait = max(1, math.ceil(value / 1000))
    if verdict == 0:
        raise Throttled(wait)
    raise Busy(wait)
