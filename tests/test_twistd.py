"""The server as a user runs it: `twistd -n --pidfile= chat`, in a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WELCOME = b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def twistd(*args: str) -> list[str]:
    """The twistd command installed beside this Python, as a user runs it."""
    return [str(Path(sys.executable).parent / "twistd"), *args]


class Line:
    """A blocking client socket with a deadline on every read."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, needle: bytes) -> bytes:
        deadline = time.monotonic() + 10
        while needle not in self.buffer:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed; received {self.buffer!r}")
            self.buffer += chunk
        end = self.buffer.index(needle) + len(needle)
        got, self.buffer = self.buffer[:end], self.buffer[end:]
        return got

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        self.sock.settimeout(10)
        while chunk := self.sock.recv(65536):
            self.buffer += chunk
        got, self.buffer = self.buffer, b""
        return got


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen(
        twistd(
            "-n",
            "--pidfile=",
            "chat",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--ping-interval=1",
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else b""
                proc.kill()
                raise AssertionError(f"twistd did not start: {out!r}") from None
            time.sleep(0.05)  # a real process: wait for it to listen
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def register(port: int, nick: str) -> Line:
    user = Line(port)
    assert user.until(WELCOME) == WELCOME
    user.send(b"/pseudo\n")
    assert user.until(b"Entrez votre pseudo: \n") == b"Entrez votre pseudo: \n"
    user.send(nick.encode() + b"\n")
    user.until(b"=>" + nick.encode() + b"\n----------------------\n")
    return user


def test_twistd_serves_a_chat(server: tuple[subprocess.Popen[bytes], int]) -> None:
    """Two users register, exchange a public and a private line, get pinged."""
    _, port = server
    alice = register(port, "alice")
    bob = register(port, "bob")
    alice.until(b"-Connexion de bob\n")
    alice.send(b"bonjour\n")
    assert bob.until(b"bonjour\n").endswith(b"-alice: bonjour\n")
    bob.send(b"msg alice psst\n")
    assert alice.until(b"psst\n").endswith("-message privé de bob: psst\n".encode())
    assert alice.until(b"ping\n").endswith(b"ping\n")
    alice.send(b"pong\n/quit\n")
    assert alice.rest().endswith(b"Deconnexion\n")
    assert bob.until(b"alice\n").endswith("-Déconnection de alice\n".encode())


def test_sigterm_says_goodbye_and_exits(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    """On SIGTERM every client is told, gets Deconnexion, and the process ends."""
    proc, port = server
    alice = register(port, "alice")
    waiting = Line(port)
    waiting.until(WELCOME)
    proc.send_signal(signal.SIGTERM)
    goodbye = "Le serveur s'arrête, à bientôt\nDeconnexion\n".encode()
    assert alice.rest().endswith(goodbye)
    assert waiting.rest() == goodbye
    # twistd ends by the signal it got once it has stopped cleanly
    assert proc.wait(10) in (0, -signal.SIGTERM)
    output = proc.stdout.read() if proc.stdout else b""
    assert b"Traceback" not in output


def test_bad_option_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        twistd("-n", "--pidfile=", "chat", "--max-line", "lots"),
        cwd=tmp_path,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        b"--max-line takes a whole number, not 'lots'." in result.stderr + result.stdout
    )
    assert b"Traceback" not in result.stderr + result.stdout
