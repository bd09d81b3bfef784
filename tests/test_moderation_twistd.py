"""Moderation in a real `twistd -n chat --operators FILE` process: a bad file
stops the start, SIGHUP reads the file again, bans survive a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from chatproto.operators import make_hash
from tests.test_twistd import (
    FOREGROUND,
    ROOT,
    Line,
    assert_one_sentence,
    free_port,
    register,
    run_twistd,
    twistd,
)

CHEAP = {"n": 16, "r": 1, "p": 1}


def test_a_bad_line_of_the_operators_file_stops_the_start_with_status_2(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ops"
    path.write_text(f"# operators\nalice:{make_hash('pw', **CHEAP)}\nbob\n")
    result = run_twistd(tmp_path, *FOREGROUND, "chat", "--operators", str(path))
    assert_one_sentence(
        result,
        f"twistd chat: --operators: {path}, line 3: 'bob' is not NICK:HASH "
        "with a valid nickname.\n",
        2,
    )


def test_a_missing_operators_file_stops_the_start_with_status_2(
    tmp_path: Path,
) -> None:
    result = run_twistd(tmp_path, *FOREGROUND, "chat", "--operators", "nope")
    assert_one_sentence(
        result, "twistd chat: --operators: cannot read nope: No such file", 2
    )


def test_a_bans_file_of_the_wrong_type_stops_the_start_with_status_2(
    tmp_path: Path,
) -> None:
    """It stopped with a 29-line traceback and status 1."""
    bans = tmp_path / "bans.json"
    entry = '{"address": "192.0.2.1", "until": "soon", "by": "alice", "reason": ""}'
    bans.write_text(f'{{"bans": [{entry}]}}')
    result = run_twistd(tmp_path, *FOREGROUND, "chat", "--bans", str(bans))
    assert_one_sentence(
        result,
        f'twistd chat: --bans: {bans}, entry 1: "until" must be a number: when '
        "it ends, in seconds since the epoch, not 'soon'; fix it, or delete the "
        "entry.\n",
        2,
    )
    assert result.stderr.count(b"\n") == 1
    bans.write_text('{"bans": {"192.0.2.1": 5}}')  # the wrong shape
    result = run_twistd(tmp_path, *FOREGROUND, "chat", "--bans", str(bans))
    assert_one_sentence(
        result,
        f'twistd chat: --bans: {bans} is not a bans file: it must be {{"bans": '
        "[...]}, a list of entries; fix it, or delete it to start with no bans.\n",
        2,
    )
    assert result.stderr.count(b"\n") == 1


class Server:
    """A twistd chat with operators (or without: None), its log in a file."""

    def __init__(self, directory: Path, operators: Path | None) -> None:
        given = () if operators is None else ("--operators", str(operators))
        self.port = free_port()
        self.log = directory / "twistd.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                twistd(
                    *FOREGROUND,
                    "chat",
                    "--port",
                    f"tcp:{self.port}:interface=127.0.0.1",
                    "--ping-interval=0",
                    *given,
                ),
                cwd=directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"no start: {self.output()}") from None
                time.sleep(0.05)  # a real process: wait for it to listen

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str) -> None:
        deadline = time.monotonic() + 10
        while text not in self.output():
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)  # a real process writes its log in its time

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.slow
def test_sighup_rereads_the_file_and_bans_survive_a_restart(tmp_path: Path) -> None:
    operators = tmp_path / "ops"
    operators.write_text(f"alice:{make_hash('pw', **CHEAP)}\n")
    server = Server(tmp_path, operators)
    try:
        bob = register(server.port, "bob")
        bob.send(b"/op bpw\n")
        assert bob.until(b"\n") == "Erreur : mot de passe d'opérateur refusé\n".encode()
        operators.write_text(
            f"alice:{make_hash('pw', **CHEAP)}\nbob:{make_hash('bpw', **CHEAP)}\n"
        )
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log("operators file reloaded: 2 operators")
        bob.send(b"/op bpw\n")
        assert bob.until(b"\n").startswith("Vous êtes opérateur".encode())
        operators.write_text("broken\n")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log("operators file not reloaded, the old list stays")
        alice = register(server.port, "alice")
        alice.send(b"/op pw\n")
        assert alice.until(b"\n").startswith("Vous êtes opérateur".encode())
        bob.until(b"-Connexion de alice\n")
        alice.send(b"/ban bob 5 test\n")
        assert (
            bob.rest()
            == (
                "Vous avez été banni par alice pour 5 minutes : test\nDeconnexion\n"
            ).encode()
        )
        alice.until(b"L'adresse 127.0.0.1 est bannie pour 5 minutes\n")
        refused = Line(server.port)
        assert refused.rest() == (
            b"Votre adresse est bannie de ce chat pour encore 5 minutes\n"
        )
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    assert (tmp_path / "ops.bans").exists()  # next to the operators file
    operators.write_text(f"alice:{make_hash('pw', **CHEAP)}\n")
    again = Server(tmp_path, operators)
    try:
        refused = Line(again.port)
        assert refused.rest().startswith(
            b"Votre adresse est bannie de ce chat pour encore"
        )
    finally:
        again.stop()


@pytest.mark.slow
def test_sighup_without_operators_leaves_the_chat_serving(tmp_path: Path) -> None:
    """systemctl reload sends SIGHUP: it ended a server started without
    --operators ("Hangup"), its users told nothing."""
    server = Server(tmp_path, None)
    try:
        alice = register(server.port, "alice")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log("SIGHUP: nothing to reload (no --operators)")
        bob = register(server.port, "bob")
        alice.until(b"-Connexion de bob\n")
        alice.send(b"bonjour\n")
        assert bob.until(b"bonjour\n").endswith(b"-alice: bonjour\n")
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert "Traceback" not in server.output()
