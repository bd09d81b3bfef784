"""Pipe mode: the client when standard input or output is not a terminal.

Each input line is sent, each line the server sends is written to standard
output as it came (made harmless), one per line; at the end of input the
client sends C{/quit} and waits for the answer. A refused nickname ends the
session: nobody is there to type another.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from chatproto.client.events import Event
from chatproto.client.options import ClientOptions
from chatproto.client.session import ClientSession, run

__all__ = ["PipeUI", "read_lines", "run_pipe"]


class PipeUI:
    """Standard input to the session, line by line; each server line to
    C{out} as it came, one per line."""

    def __init__(
        self,
        session: ClientSession,
        out: TextIO,
        input_fd: int | None,
        call_from_thread: Callable[..., None],
    ) -> None:
        self.session = session
        self.out = out
        self.input_fd = input_fd
        self.call_from_thread = call_from_thread
        #: Standard output was closed (C{| head}): nothing more is
        #: written, and the session leaves.
        self.broken = False

    def show(self, event: Event) -> None:
        if self.broken or not event.lines:
            return
        try:
            self.out.write("".join(line + "\n" for line in event.lines))
            self.out.flush()
        except (BrokenPipeError, ValueError):
            # Nobody reads any more (| head): leave, and keep Python quiet
            # about the lost output at exit.
            self.broken = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
            self.session.user_quit()

    def ask_nickname(self, why: str) -> None:
        """Never asked: in a pipe a refusal ends the session."""

    def start(self) -> None:
        if self.input_fd is None:
            self.session.user_quit()
            return
        threading.Thread(
            target=read_lines,
            args=(self.input_fd, self._lines, self.call_from_thread),
            name="stdin",
            daemon=True,
        ).start()

    def _lines(self, lines: list[str]) -> None:
        for line in lines:
            self.session.user_line(line)
        if not lines:
            self.session.user_quit()

    def stop(self) -> None:
        return None


def read_lines(
    fd: int,
    deliver: Callable[[list[str]], None],
    call_from_thread: Callable[..., None],
) -> None:
    """Read C{fd} to its end (in a thread), calling C{deliver} in the
    reactor thread with each batch of lines, and with C{[]} at the end.

    C{os.read} rather than C{sys.stdin}: a daemon thread blocked in a
    buffered read would hold its lock when the interpreter exits.
    """
    rest = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        *lines, rest = (rest + chunk).split(b"\n")
        if lines:
            call_from_thread(deliver, [_decode(line) for line in lines])
    if rest:
        call_from_thread(deliver, [_decode(rest)])
    call_from_thread(deliver, [])


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace").removesuffix("\r")


def run_pipe(options: ClientOptions) -> int:
    """Pipe mode, on the default reactor."""
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        input_fd: int | None = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # no standard input at all
        input_fd = None
    return run(
        reactor,
        options,
        lambda session: PipeUI(session, sys.stdout, input_fd, reactor.callFromThread),
        reask=False,
    )
