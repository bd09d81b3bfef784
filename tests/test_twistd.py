"""The server as a user runs it: `twistd -n --pidfile= chat`, in a process."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def running(
    cwd: Path, port: int, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`twistd -n --pidfile= chat ARGS`, once it accepts connections on
    C{port} of 127.0.0.1; killed at the end if it is still running."""
    proc = subprocess.Popen(
        twistd("-n", "--pidfile=", "chat", *args),
        cwd=cwd,
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
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with running(
        tmp_path, port, "--port", f"tcp:{port}:interface=127.0.0.1", "--ping-interval=1"
    ) as started:
        yield started


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
    # the server's own reactor (chatproto/_reactor.py), twistd chose none
    assert b"reactor class: chatproto._reactor.ChatReactor." in output


def test_a_reactor_chosen_with_twistd_is_kept(tmp_path: Path) -> None:
    """twistd --reactor=poll: the chat runs on Twisted's poll reactor."""
    port = free_port()
    proc = subprocess.Popen(
        twistd("--reactor=poll", "-n", "--pidfile=", "chat", "--port", str(port)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                alice = register(port, "alice")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)  # a real process: wait for it to listen
        alice.send(b"/quit\n")
        assert alice.rest().endswith(b"Deconnexion\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = proc.stdout.read() if proc.stdout else b""
    assert b"reactor class: twisted.internet.pollreactor.PollReactor." in output


def run_twistd(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """twistd run to its end, as a user types it; bounded in time."""
    return subprocess.run(
        twistd(*args),
        cwd=cwd,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


# How a user starts the server: in the foreground with and without a pid
# file, and as a daemon (whose pid file and log go to the test's directory).
FOREGROUND = ("-n", "--pidfile=")
FORMS = {
    "foreground": FOREGROUND,
    "foreground, pid file": ("-n",),
    "daemon": ("--logfile=twistd.log",),
}


def assert_one_sentence(
    result: subprocess.CompletedProcess[bytes], sentence: str, status: int
) -> None:
    """The sentence on stderr, the exit status, and neither a traceback nor
    the option list anywhere."""
    assert result.returncode == status
    assert sentence.encode() in result.stderr
    everything = result.stdout + result.stderr
    assert b"Traceback" not in everything
    assert b"--shutdown-timeout" not in everything  # the option list


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["--bogus"], "twistd chat: --bogus is not an option"),
        (
            ["--ping-interval", "abc"],
            "twistd chat: --ping-interval takes a number, not 'abc'.\n",
        ),
        (
            ["--port", "tcp:70000"],
            "twistd chat: --port: 70000 is not a port number (1-65535).\n",
        ),
        (
            ["--max-line", "lots"],
            "twistd chat: --max-line takes a whole number, not 'lots'.\n",
        ),
        (["--port"], "twistd chat: --port needs a value.\n"),
        (["stray"], "twistd chat: 'stray' is not an option;"),
    ],
)
def test_a_usage_mistake_is_one_sentence_and_status_2(
    tmp_path: Path, argv: list[str], sentence: str
) -> None:
    result = run_twistd(tmp_path, *FOREGROUND, "chat", *argv)
    assert_one_sentence(result, sentence, 2)
    assert result.stderr.count(b"\n") == 1
    assert result.stdout == b""


@pytest.mark.parametrize("form", ["foreground, pid file", "daemon"])
def test_a_usage_mistake_reads_the_same_in_every_form(
    tmp_path: Path, form: str
) -> None:
    result = run_twistd(tmp_path, *FORMS[form], "chat", "--bogus")
    assert_one_sentence(result, "twistd chat: --bogus is not an option", 2)
    assert not (tmp_path / "twistd.pid").exists()


@pytest.fixture
def port_in_use() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("form", list(FORMS))
def test_a_port_in_use_is_one_sentence_and_status_1(
    tmp_path: Path, port_in_use: int, form: str
) -> None:
    port = f"tcp:{port_in_use}:interface=127.0.0.1"
    result = run_twistd(tmp_path, *FORMS[form], "chat", "--port", port)
    sentence = f"twistd chat: port {port_in_use} on 127.0.0.1 is already in use.\n"
    assert_one_sentence(result, sentence, 1)
    assert result.stderr == sentence.encode()
    assert not (tmp_path / "twistd.pid").exists()  # twistd cleaned up


def test_an_address_the_machine_lacks_is_one_sentence(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1, reserved for documentation: nobody has it.
    port = free_port()
    result = run_twistd(
        tmp_path, *FOREGROUND, "chat", "--port", f"tcp:{port}:interface=192.0.2.77"
    )
    assert_one_sentence(
        result,
        f"twistd chat: cannot listen on port {port} on 192.0.2.77: this machine "
        "has no such address.\n",
        1,
    )


def test_help_still_lists_every_option(tmp_path: Path) -> None:
    result = run_twistd(tmp_path, "chat", "--help")
    assert result.returncode == 0
    for option in (
        b"--port=",
        b"--ping-interval=",
        b"--shutdown-timeout=",
        b"--redis=",
    ):
        assert option in result.stdout


def test_the_venv_finds_the_plugin_of_this_tree_without_pythonpath(
    tmp_path: Path,
) -> None:
    """make installs this directory in editable mode, its root on sys.path:
    twistd finds twisted/plugins/ there, and runs this tree's code."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import chatproto.tap; print(chatproto.tap.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert where.stdout.decode().strip() == str(ROOT / "chatproto" / "tap.py")
    result = subprocess.run(
        twistd("chat", "--help"), cwd=tmp_path, capture_output=True, env=env, timeout=60
    )
    assert result.returncode == 0
    assert b"--ping-interval=" in result.stdout
