"""Protected nicknames: who owns a nickname, and the book that keeps them.

A nickname protected with C{/register PASSWORD} is let in only with that
password (docs/protocol.md, "Protected nicknames"). An L{Accounts} book
keeps the L{Account}s: in memory for a server without a store, in the
SQLite store (chatproto/store.py) otherwise. It never holds a password,
only its scrypt hash (chatproto/operators.py's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred


@dataclass(frozen=True, slots=True)
class Account:
    """A protected nickname: its owner's password hash, when last used."""

    nick: str  # the nickname as it was protected
    hash: str  # chatproto.operators.make_hash's string, never a password
    used: float  # last registered under it or left it, seconds since epoch


class Accounts(Protocol):
    """A book of protected nicknames, found by their key (nick_key): each
    Deferred fires once the change is kept (in a store: committed), or
    fails when the book cannot be read or written now."""

    def find(self, nick: str) -> Deferred[Account | None]: ...
    def protect(self, account: Account) -> Deferred[None]:
        """Keep C{account}, in place of any account of the same nickname."""

    def unprotect(self, nick: str) -> Deferred[None]: ...
    def touch(self, nick: str, when: float) -> Deferred[None]:
        """The nickname was used at C{when}: its account's C{used}."""
