"""The user list block, assembled from its lines.

A server shows its users as a block: a rule, C{Utilisateurs en ligne:},
one C{=> NICK} line each (C{projet.py} puts a blank line after each), and a
rule. A L{ListBlock} takes the lines that belong to it; the protocol shows
it once it is closed, once the connection has been quiet for a while, or
once the connection closes. A hostile server cannot make it grow without
bound: past L{ListBlock.MAX_LINES} lines or L{ListBlock.MAX_CHARS}
characters it is C{cut}, shown as far as it went.
"""

from __future__ import annotations

from chatproto.client.events import Event, Notice, UserList
from chatproto.client.servers import (
    GOODBYES,
    LIST_ENTRY,
    LIST_TITLE,
    RULE,
    STAMPED,
    WELCOMES,
)

__all__ = ["ListBlock"]


class ListBlock:
    """The user list block being assembled, from the rule that opens it."""

    #: The most lines, and characters, a user list block may hold. chatproto's
    #: C{/list} shows every user (10,000 a node by default, and a cluster has
    #: several nodes), and C{projet.py} puts a blank line after each name; a
    #: name line is 14 characters at most.
    MAX_LINES = 100_000
    MAX_CHARS = 2 * 2**20

    def __init__(self, rule: str) -> None:
        self.lines = [rule]
        self.nicknames: list[str] = []
        self.chars = len(rule)
        #: Its closing rule came.
        self.complete = False
        #: It grew past its bounds: it ends here.
        self.cut = False

    def take(self, text: str) -> bool:
        """Take C{text} into the block if it belongs there."""
        if RULE.fullmatch(text):
            self.lines.append(text)
            self.complete = True
            return True
        if text in WELCOMES or text in GOODBYES or STAMPED.match(text):
            return False
        if len(self.lines) == 1 and text != LIST_TITLE:
            return False
        if len(self.lines) >= self.MAX_LINES or self.chars + len(text) > self.MAX_CHARS:
            # A block that never ends would take all the memory: show it as
            # it is; the lines that follow are lines of their own.
            self.cut = True
            return False
        self.lines.append(text)
        self.chars += len(text)
        entry = LIST_ENTRY.fullmatch(text)
        if entry and entry["nick"].strip():
            self.nicknames.append(entry["nick"].strip())
        return True

    def event(self) -> Event:
        """What the block shows as: a rule alone is a line of its own."""
        if len(self.lines) == 1:
            return Notice(lines=tuple(self.lines))
        return UserList(
            lines=tuple(self.lines),
            nicknames=tuple(self.nicknames),
            complete=self.complete,
            cut=self.cut,
        )
