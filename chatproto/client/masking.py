"""Which of the user's lines carry a password, and where it starts.

chatproto's server takes a password on four commands (docs/protocol.md):
C{/register PASSWORD}, C{/unregister PASSWORD}, C{/op PASSWORD} and
C{/pseudo NICK PASSWORD}. The client sends such a line as typed, but never
shows the password in clear nor keeps the line in the line editor's history
(L{chatproto.client.terminal}); nor does it name the password in a sentence
of its own. The server reads a command from the line stripped, so leading
blanks do not hide one here either.
"""

from __future__ import annotations

import re

__all__ = ["carries_password", "masked", "password_start"]

#: A command and what comes before its password: C{/pseudo} takes the
#: nickname first. Group C{head} ends where the password starts.
_COMMAND = re.compile(
    r"(?P<head>\s*(?:/(?:register|unregister|op)|/pseudo\s+\S+)\s)(?=.)", re.DOTALL
)


def password_start(line: str) -> int | None:
    """Where the password of C{line} starts (it runs to the end of the
    line), or None when C{line} carries none."""
    match = _COMMAND.match(line)
    return None if match is None else match.end("head")


def carries_password(line: str) -> bool:
    """C{line} (or, for a paste, one of its lines) carries a password."""
    return any(password_start(part) is not None for part in line.split("\n"))


def masked(line: str) -> str:
    """C{line} with its password, if any, shown as stars, one a character."""
    start = password_start(line)
    if start is None:
        return line
    return line[:start] + "*" * (len(line) - start)
