"""The store as a user runs it: `twistd -n chat` in a directory, its
chat.sqlite3 there; killed, restarted, damaged."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatproto import wire
from chatproto.store import _migrate
from tests.test_twistd import (
    ROOT,
    WELCOME,
    Line,
    free_port,
    register,
    run_twistd,
    twistd,
)

pytestmark = pytest.mark.slow


@contextmanager
def running(cwd: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """twistd chat in C{cwd}, listening on a free loopback port; killed
    at the end if it still runs."""
    port = free_port()
    proc = subprocess.Popen(
        twistd(
            "-n",
            "--pidfile=",
            "chat",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            *args,
        ),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else b""
                raise AssertionError(f"twistd did not start: {out!r}")
            time.sleep(0.05)  # a real process: wait for it to listen
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _listening(port: int) -> bool:
    try:
        Line(port).sock.close()
    except OSError:
        return False
    return True


def kept(path: Path) -> list[bytes]:
    """The lines in the store's file, stamps cut off, oldest first."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT line FROM lines ORDER BY id").fetchall()
    finally:
        db.close()
    return [bytes(line).partition(b"]-")[2] for (line,) in rows]


def test_lines_delivered_a_second_before_a_kill_9_are_all_kept(tmp_path: Path) -> None:
    store = tmp_path / "chat.sqlite3"  # the default, in the working directory
    said = [f"ligne {n} éléphant".encode() for n in range(50)]
    with running(tmp_path, "--flood-burst=100") as (proc, port):
        alice = register(port, "alice")
        bob = register(port, "bob")
        for text in said:
            alice.send(text + b"\n")
        bob.until(said[-1] + b"\n")  # delivered
        time.sleep(1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    expected = [b"Connexion de alice\n", b"Connexion de bob\n"]
    expected += [b"alice: " + text + b"\n" for text in said]
    assert kept(store) == expected
    # Started again on the store the kill left: /history and /search read
    # it, it numbers on, and a SIGTERM commits what was said before it ends.
    with running(tmp_path) as (proc, port):
        carol = register(port, "carol")
        carol.send(b"/history 500\n")
        carol.until(b"--- historique (")
        block = carol.until(b"--- fin de l'historique ---\n").splitlines()
        shown = [line.partition(b"]-")[2] + b"\n" for line in block[1:-1]]
        assert shown == [*expected, b"Connexion de carol\n"], block
        carol.send(b"/search ELEPHANT\n")
        carol.until("--- recherche « ELEPHANT » (20 lignes) ---\n".encode())
        found = carol.until(b"--- fin de la recherche ---\n").splitlines()
        assert [line.partition(b"]-")[2] + b"\n" for line in found[:-1]] == (
            expected[-20:]
        )
        carol.send(b"me revoila\n")
        carol.send(b"/list\n")
        carol.until(b"carol\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) in (0, -signal.SIGTERM)
    assert kept(store) == [
        *expected,
        b"Connexion de carol\n",
        b"carol: me revoila\n",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.sqlite3"]


def test_store_none_writes_no_file(tmp_path: Path) -> None:
    with running(tmp_path, "--store", "none") as (proc, port):
        alice = register(port, "alice")
        alice.send(b"bonjour\n/list\n")
        alice.until(b"alice\n")
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert list(tmp_path.iterdir()) == []


def newer(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE lines (id INTEGER PRIMARY KEY)")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()


def truncated(path: Path) -> None:
    """A real store of a few thousand lines, cut in the middle."""
    db = sqlite3.connect(path, isolation_level=None)
    _migrate(db, 0)
    db.executemany(
        "INSERT INTO lines (id, at, line) VALUES (?, 0, ?)",
        [(n, b"[1.2.3]-alice: bonjour\n" * 5) for n in range(1, 5001)],
    )
    db.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


@pytest.mark.parametrize(
    ("make", "sentence"),
    [
        (random_bytes, "is not a chat store: it is not a SQLite database."),
        (truncated, "is damaged"),
        (newer, "was written by a newer chatproto (schema 99; this one knows up to"),
    ],
)
def test_a_store_that_cannot_be_opened_stops_the_start_untouched(
    tmp_path: Path, make: object, sentence: str
) -> None:
    path = tmp_path / "old.sqlite3"
    make(path)  # type: ignore[operator]
    before = path.read_bytes()
    result = run_twistd(
        tmp_path, "-n", "--pidfile=", "chat", "--port", "tcp:0", "--store", str(path)
    )
    assert result.returncode != 0
    [said] = result.stderr.decode().splitlines()
    assert said.startswith("twistd chat: ") and str(path) in said, said
    assert sentence in said
    assert said.count(". ") == 0 and said.endswith("."), said  # one sentence
    assert b"Traceback" not in result.stdout + result.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sqlite3"]


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 command")
def test_a_backup_taken_while_the_server_runs_is_a_whole_store(tmp_path: Path) -> None:
    """The backup docs/operating.md gives: sqlite3's .backup, while the
    server writes; the copy opens as a store, with every line committed."""
    with running(tmp_path, "--flood-burst=100") as (proc, port):
        alice = register(port, "alice")
        for n in range(20):
            alice.send(f"avant {n}\n".encode())
        alice.send(b"/list\n")
        alice.until(b"alice\n")
        time.sleep(0.5)  # committed
        for n in range(20):  # written while the backup reads
            alice.send(f"pendant {n}\n".encode())
        subprocess.run(
            ["sqlite3", "chat.sqlite3", ".backup copy.sqlite3"],
            cwd=tmp_path,
            check=True,
            timeout=30,
        )
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    copy = kept(tmp_path / "copy.sqlite3")
    assert copy[:21] == [
        b"Connexion de alice\n",
        *[f"alice: avant {n}\n".encode() for n in range(20)],
    ]
    assert copy == kept(tmp_path / "chat.sqlite3")[: len(copy)]
    with running(tmp_path, "--store", "copy.sqlite3") as (proc, port):
        register(port, "bob")


def test_a_protected_nickname_holds_across_a_restart(tmp_path: Path) -> None:
    """/register keeps the account in the store: after a restart on it,
    the nickname asks for its password, refuses a wrong one, takes the
    right one."""
    with running(tmp_path) as (proc, port):
        prof = register(port, "prof")
        prof.send(b"/register mot de passe\n")
        prof.until(wire.notice(wire.REGISTER_DONE.format("prof")))
        proc.send_signal(signal.SIGKILL)  # committed before the answer
        proc.wait(10)
    with running(tmp_path) as (proc, port):
        again = Line(port)
        again.until(WELCOME)
        again.send(b"/pseudo prof\n")
        again.until(wire.notice(wire.PASSWORD_PROMPT))
        again.send(b"pas le bon\n")
        again.until(wire.TAKEN)
        again.send(b"/pseudo prof mot de passe\n")
        assert again.until(b"=>prof\n").startswith(b"Bienvenue prof\n")
