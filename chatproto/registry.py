"""Who is in the chat: the nickname registry.

The registry owns one fact: which nicknames are taken, in the order they were
registered. It does no I/O of its own and knows nothing of connections, so
that a Redis-backed twin (the cluster mode) can stand in for it without the
protocol noticing. Every method returns a Deferred for that reason: the
in-memory registry answers at once, a remote one answers later.
"""

from __future__ import annotations

import enum
import itertools
import re
import sys
from typing import Protocol

from twisted.internet.defer import Deferred, fail, succeed

NICKNAME = re.compile(r"[A-Za-z0-9_-]{2,12}", re.ASCII)


def valid_nickname(nick: str) -> bool:
    """Whether C{nick} is 2 to 12 letters, digits, C{_} or C{-}."""
    return NICKNAME.fullmatch(nick) is not None


def nick_key(nick: str) -> str:
    """The case-insensitive identity of a nickname (C{Alice} is C{alice}).

    The registry, the rooms and the positions keep one string per user, not
    one each: a nickname in lower case already is its own key (the very
    string, which the session keeps too); another's key is interned. Not
    every key is interned: an entry of the interpreter's table of interned
    strings and a second copy of the nickname were 149 bytes per idle user
    (bench/memory.py, 10,000 users), for nicknames that are nearly all in
    lower case.
    """
    key = nick.lower()
    return nick if key == nick else sys.intern(key)


# Characters that look alike in a terminal's font, or in a page's: I
# (capital i) and l (small L), 1 and l, 0 and O. Lower case comes first, so
# that Alice is alice; I is then i, which must be l too.
_LOOK_ALIKE = str.maketrans("i10", "llo")


def nick_look(nick: str) -> str:
    """What C{nick} looks like: one string for every nickname that could
    pass for it (C{alice}, C{Alice}, C{aIice}, C{a1ice} and C{ALlCE}; C{bob}
    and C{b0b}). The registry refuses a nickname whose look somebody has,
    so that no one passes for another; a lowercase nickname without C{i},
    C{1} or C{0} is its own look (no copy)."""
    look = nick.lower().translate(_LOOK_ALIKE)
    return nick if look == nick else look


class NicknameTaken(Exception):
    """Somebody already has this nickname, in any letter case."""


class ClusterUnreachable(Exception):
    """The cluster's Redis cannot be reached now: raised for whatever needs
    it (a nickname claimed, a history read, a private line, a kick or a ban
    for another node)."""


class Reach(enum.Enum):
    """Who hears that a user left: the argument of every departure.

    A single server is its whole chat (EVERYWHERE and HERE are one); a
    cluster node tells the other nodes too, unless the user's nickname is
    someone else's there now (HERE), or they announced it already (NOWHERE).
    """

    EVERYWHERE = "everywhere"  # every user of the chat; the nickname is freed
    HERE = "here"  # the users of this server only; the cluster keeps the name
    NOWHERE = "nowhere"  # nobody: the cluster announced it and freed the name


class Registry(Protocol):
    """What the server needs from a registry of nicknames."""

    def claim(self, nick: str) -> Deferred[str]:
        """Take C{nick}; fail with L{NicknameTaken} if someone has it."""

    def release(self, nick: str, reach: Reach = Reach.EVERYWHERE) -> Deferred[None]:
        """Give C{nick} back as its user leaves, as far as C{reach} says
        (see L{Reach}); releasing a free nickname does nothing."""

    def names(self, limit: int | None = None) -> Deferred[tuple[list[str], int]]:
        """The first C{limit} nicknames (all if None) in registration order,
        and how many there are in all."""


class MemoryRegistry:
    """The registry of a single server process: a nickname by its look
    (L{nick_look}), so that two which could pass for each other are never
    registered at once."""

    def __init__(self) -> None:
        self._nicks: dict[str, str] = {}
        # The last answer of names(): its limit and its names. Each newcomer
        # to a big chat is sent the same first --list-limit names; they
        # change only when one of them leaves, or while there are fewer.
        # Kept rather than read again from the dict (4 us for 100 names:
        # the list block was 13 us of the 120 of a registration in a chat
        # of 10,000, profiled).
        self._first: tuple[int | None, tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return len(self._nicks)

    def __contains__(self, nick: str) -> bool:
        return nick_look(nick) in self._nicks

    def claim(self, nick: str) -> Deferred[str]:
        key = nick_look(nick)
        if key in self._nicks:
            return fail(NicknameTaken(nick))
        self._nicks[key] = nick
        first = self._first
        if first is not None and (first[0] is None or len(self._nicks) <= first[0]):
            self._first = None  # among the first: the names change
        return succeed(nick)

    def release(self, nick: str, reach: Reach = Reach.EVERYWHERE) -> Deferred[None]:
        look = nick_look(nick)
        held = self._nicks.get(look)
        # Only the nickname itself, in any case: never a look-alike's.
        if held is not None and nick_key(held) == nick_key(nick):
            del self._nicks[look]
            self._first = None
        return succeed(None)

    def names(self, limit: int | None = None) -> Deferred[tuple[list[str], int]]:
        first = self._first
        if first is None or first[0] != limit:
            first = self._first = (
                limit,
                tuple(itertools.islice(self._nicks.values(), limit)),
            )
        return succeed((list(first[1]), len(self._nicks)))
