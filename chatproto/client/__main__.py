"""C{python -m chatproto.client [HOST] [PORT]}: the terminal when standard
input and output are both terminals, the pipe otherwise.

The terminal interface is imported only when it is used: it installs
Twisted's asyncio reactor, which must come before anything imports the
reactor, and loads prompt_toolkit, which a pipe does not need.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from chatproto.client.options import parse_args
from chatproto.client.pipe import run_pipe

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client with C{argv} (the command line's); return the exit
    status."""
    options = parse_args(argv)
    if sys.stdin.isatty() and sys.stdout.isatty():
        from chatproto.client.terminal import run_interactive

        return run_interactive(options)
    return run_pipe(options)


if __name__ == "__main__":
    sys.exit(main())
