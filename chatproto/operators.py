"""C{python -m chatproto.operators hash}: a line's hash for the operators file.

It reads the password from the terminal (asked twice, not echoed) or, in a
pipe, the first line of standard input, and prints the hash
(C{scrypt$N$R$P$SALT$HASH}): put C{NICK:} before it, one operator a line,
in the file given to C{--operators}.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from typing import TextIO

from chatproto.moderation import make_hash

USAGE = "usage: python -m chatproto.operators hash  (the password on stdin)\n"


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print the hash of the password read; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if args != ["hash"]:
        stderr.write(USAGE)
        return 2
    if stdin.isatty():
        password = getpass.getpass("Mot de passe : ")
        if getpass.getpass("Encore une fois : ") != password:
            stderr.write("The two passwords differ; nothing was made.\n")
            return 1
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        stderr.write("An empty password cannot be an operator's.\n")
        return 1
    if password != password.strip():
        # /op PASSWORD loses the spaces around it: such a hash never matches
        stderr.write("A password cannot start or end with a space.\n")
        return 1
    stdout.write(make_hash(password) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
