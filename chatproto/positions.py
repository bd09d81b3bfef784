"""Read positions: where each nickname was in the history when it left.

A user's read position is the number (L{chatproto.history.Kept}) of the
newest public line of the history when it left, taken after its own
departure line is recorded: C{/unread} at its next visit gives the lines
kept after it, exactly those said since it left (docs/protocol.md,
"/unread").

Where it lives: an owner of its protected nickname's in the book of
accounts that protects it (L{chatproto.accounts.Protection}: the store's
for a server with --store, surviving restarts; Redis's for a cluster; in
memory otherwise), for as long as the protection lasts; any other
nickname's here, in memory, for L{KEEP} seconds after its departure and
L{MOST} nicknames at most (the oldest dropped), so that a page that
reconnects after a network cut gets what it missed. Public lines only:
whoever takes the nickname next learns nothing private.

The positions of users still connected are not saved as they go: a crash
or C{kill -9} keeps the position of their previous departure, so
C{/unread} then shows more lines, never fewer.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from chatproto.accounts import Account, Protection
from chatproto.registry import nick_key

KEEP = 15 * 60.0  # seconds an unprotected nickname's position is kept
MOST = 10_000  # unprotected nicknames whose position is kept, at most


class Positions:
    """The read positions of a server's users (see the module's text)."""

    def __init__(
        self,
        protection: Protection,
        clock: IReactorTime,
        keep: float = KEEP,
        most: int = MOST,
    ) -> None:
        self.protection = protection
        self.clock = clock
        self.keep = keep
        self.most = most
        # Unprotected nicknames, by key: (when it left, its position),
        # the oldest departure first.
        self._recent: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # The users here, by key: the history's newest line before their
        # arrival line (what /unread reads up to: the lines after it, they
        # were given as they came).
        self._arrivals: dict[str, int] = {}

    def arrived(self, nick: str, newest: int) -> None:
        """C{nick} joins the chat, the history's newest line C{newest}."""
        self._arrivals[nick_key(nick)] = newest

    def arrival(self, nick: str) -> int | None:
        """The history's newest line when C{nick}, here, arrived."""
        return self._arrivals.get(nick_key(nick))

    def left(self, nick: str, newest: int) -> None:
        """C{nick} left, the history's newest line then C{newest}."""
        self._arrivals.pop(nick_key(nick), None)
        if self.protection.left(nick, newest):
            return
        key = nick_key(nick)
        recent = self._recent
        recent.pop(key, None)
        recent[key] = (self.clock.seconds(), newest)
        while len(recent) > self.most:
            recent.popitem(last=False)

    def find(self, nick: str) -> Deferred[int | None]:
        """C{nick}'s read position, None when no previous visit is known;
        fails with L{chatproto.accounts.Unavailable} when the book of
        accounts cannot be read now."""
        key = nick_key(nick)
        if key in self.protection.owners:
            return self.protection.find(nick).addCallback(_seen)
        self._expire()
        entry = self._recent.get(key)
        return succeed(None if entry is None else entry[1])

    def _expire(self) -> None:
        horizon = self.clock.seconds() - self.keep
        recent = self._recent
        while recent:
            key, (when, _) = next(iter(recent.items()))
            if when >= horizon:
                break
            del recent[key]


def _seen(account: Account | None) -> int | None:
    return None if account is None else account.seen
