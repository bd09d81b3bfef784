"""A protected nickname's read position as a user runs the server: `twistd
-n chat` on its store, stopped, restarted, killed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from chatproto import wire
from tests.test_store_twistd import running
from tests.test_twistd import WELCOME, Line, register

pytestmark = pytest.mark.slow
PASSWORD = b"mot de passe"


def owner(port: int) -> Line:
    prof = Line(port)
    prof.until(WELCOME)
    prof.send(b"/pseudo prof " + PASSWORD + b"\n")
    prof.until(b"=>prof\n" + wire.RULE)
    return prof


def unread(user: Line) -> list[bytes]:
    """The answer to /unread: its header, then its lines without stamps."""
    user.send(b"/unread\n")
    user.until(b"--- ")
    block = user.until(wire.notice(wire.UNREAD_END)).splitlines(keepends=True)
    return [b"--- " + block[0], *(line.partition(b"]-")[2] for line in block[1:-1])]


def test_a_protected_position_survives_a_restart_and_a_kill_9(tmp_path: Path) -> None:
    with running(tmp_path) as (proc, port):
        prof = register(port, "prof")
        prof.send(b"/register " + PASSWORD + b"\n")
        prof.until(wire.notice(wire.REGISTER_DONE.format("prof")))
        alice = register(port, "alice")
        prof.send(b"/quit\n")
        prof.until(wire.BYE)
        alice.until("Déconnection de prof\n".encode())
        alice.send(b"un\ndeux\n")
        alice.send(b"/history 1\n")
        alice.until(b"alice: deux\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) in (0, -signal.SIGTERM)
    with running(tmp_path) as (proc, port):
        prof = owner(port)
        since = unread(prof)
        # Up to its arrival, not its own arrival line.
        assert since[1:] == [b"alice: un\n", b"alice: deux\n"]
        assert since[0].startswith(b"--- 2 messages depuis votre derni")
        alice = register(port, "alice")
        alice.send(b"trois\n")
        prof.until(b"alice: trois\n")
        time.sleep(1.5)  # on the disk, and prof's position (SAVE_INTERVAL)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with running(tmp_path) as (proc, port):
        alice = register(port, "alice")
        alice.send(b"quatre\n")
        alice.send(b"/history 1\n")
        alice.until(b"alice: quatre\n")
        prof = owner(port)
        since = unread(prof)
        # It had asked /unread: its position was saved as it went, and
        # /unread gives exactly what was said since it was killed.
        assert since[1:] == [b"Connexion de alice\n", b"alice: quatre\n"]
        # Connected when the server stops: its position is the newest line.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) in (0, -signal.SIGTERM)
    with running(tmp_path) as (proc, port):
        prof = owner(port)
        prof.send(b"/unread\n")
        prof.until(wire.notice(wire.UNREAD_NONE))
