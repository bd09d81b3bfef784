"""Read positions: where each nickname was in the history when it left.

A user's read position is the number (L{chatproto.history.Kept}) of the
newest public line of the history when it left, taken after its own
departure line is recorded: C{/unread} at its next visit gives the lines
kept after it, exactly those said since it left (docs/protocol.md,
"/unread"). For a user whose connection was lost (or that stopped
answering pings or reading), the server gives an earlier one: the newest
line when it sent the last ping the user answered
(L{chatproto.server.ChatFactory.depart}).

Where it lives: an owner of its protected nickname's in the book of
accounts that protects it (L{chatproto.accounts.Protection}: the store's
for a server with --store, surviving restarts; Redis's for a cluster; in
memory otherwise), for as long as the protection lasts; any other
nickname's here, in memory, for L{KEEP} seconds after its departure and
L{MOST} nicknames at most (the oldest dropped), so that a page that
reconnects after a network cut gets what it missed. Public lines only:
whoever takes the nickname next learns nothing private.

An owner here that asked C{/unread} (as the page does on registering)
has its position saved as it goes too, every L{SAVE_INTERVAL} seconds
while new lines come: after a crash or C{kill -9}, its C{/unread} gives
the lines said since the last save, so none it was given shows twice but
those of the last L{SAVE_INTERVAL} (the store itself keeps the lines
said up to a second before). Its C{/unread} answers, for the rest of its
visit, from the position it had before (read once, at its first
C{/unread}: the saves never hide what it missed). An owner that never
asks keeps, through a crash, the position of its previous departure:
C{/unread} then shows more lines, never fewer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from chatproto.accounts import Account, Protection
from chatproto.registry import nick_key

KEEP = 15 * 60.0  # seconds an unprotected nickname's position is kept
MOST = 10_000  # unprotected nicknames whose position is kept, at most
SAVE_INTERVAL = 1.0  # seconds between saves of the owners here


class Positions:
    """The read positions of a server's users (see the module's text)."""

    def __init__(
        self,
        protection: Protection,
        clock: IReactorTime,
        newest: Callable[[], int],
        keep: float = KEEP,
        most: int = MOST,
    ) -> None:
        self.protection = protection
        self.clock = clock
        self.newest = newest  # the history's newest line
        self.keep = keep
        self.most = most
        # Unprotected nicknames, by key: (when it left, its position),
        # the oldest departure first.
        self._recent: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # The users here, by key: the history's newest line before their
        # arrival line (what /unread reads up to: the lines after it, they
        # were given as they came).
        self._arrivals: dict[str, int] = {}
        # The owners here whose position before this visit was read (their
        # first /unread), by key: their nickname, that position, and the
        # position last saved for them.
        self._owners: dict[str, tuple[str, int | None, int | None]] = {}
        self._saver = LoopingCall(self._save)
        self._saver.clock = clock

    def arrived(self, nick: str, newest: int) -> None:
        """C{nick} joins the chat, the history's newest line C{newest}."""
        self._arrivals[nick_key(nick)] = newest

    def arrival(self, nick: str) -> int | None:
        """The history's newest line when C{nick}, here, arrived."""
        return self._arrivals.get(nick_key(nick))

    def left(self, nick: str, newest: int) -> None:
        """C{nick} left, the history's newest line then C{newest}."""
        self._arrivals.pop(nick_key(nick), None)
        self._owners.pop(nick_key(nick), None)
        if not self._owners and self._saver.running:
            self._saver.stop()
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
        if key in self._owners:
            return succeed(self._owners[key][1])
        if key in self.protection.owners:
            d = self.protection.find(nick).addCallback(_seen)
            return d.addCallback(self._read, nick)
        self._expire()
        entry = self._recent.get(key)
        return succeed(None if entry is None else entry[1])

    def _read(self, position: int | None, nick: str) -> int | None:
        """The position of C{nick}, an owner, before this visit: read; if
        it is still here, its position is saved as it goes from now on."""
        key = nick_key(nick)
        if key in self._arrivals and key in self.protection.owners:
            self._owners.setdefault(key, (nick, position, position))
            if not self._saver.running:
                self._saver.start(SAVE_INTERVAL, now=False)
        return position

    def _save(self) -> None:
        """Save the position of each owner here given lines since its last
        save: the history's newest line, given to everyone here."""
        newest = self.newest()
        for key, (nick, before, saved) in self._owners.items():
            if saved != newest:
                self.protection.read(nick, newest)
                self._owners[key] = (nick, before, newest)

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
