"""What the client tests share (no tests here): the client and chatproto's
server as processes, and a scripted server for the cases no real server
plays on demand (silence, a close in the middle of a line, escapes).

Every wait has a deadline; nothing here sleeps for a fixed time except where
a test needs real time to pass (pings).
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 15.0
RUBY_WELCOME = (
    b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
)


def client_command(*args: str) -> list[str]:
    """python -m chatproto.client, as a user runs it."""
    return [sys.executable, "-m", "chatproto.client", *args]


def client_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("PYTHONWARNINGS", None)
    return env


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Reader:
    """Lines from a process's pipe, read with deadlines."""

    def __init__(self, pipe: object) -> None:
        self.fd = pipe.fileno()  # type: ignore[attr-defined]
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.lines: list[str] = []
        self.eof = False

    def fill(self, timeout: float) -> None:
        """Read what the pipe holds, waiting C{timeout} at most for it."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            if not sel.select(timeout):
                return
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.eof = True
            return
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        self.lines.extend(line.decode("utf-8", "replace") for line in complete)

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> str:
        """The first line seen that matches C{pattern} (a regex)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if re.search(pattern, line):
                    return line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}")
            self.fill(min(left, 0.5))

    def rest(self, timeout: float = DEADLINE) -> list[str]:
        """All lines, once the pipe is closed."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.fill(deadline - time.monotonic())
        if self.buffer:
            self.lines.append(self.buffer.decode("utf-8", "replace"))
            self.buffer = b""
        return self.lines


class OurServer:
    """chatproto's server, run by twistd as a user runs it, on a free
    loopback port."""

    def __init__(self, *options: str) -> None:
        twistd = str(Path(sys.executable).parent / "twistd")
        self.process = subprocess.Popen(
            [
                twistd,
                "--pidfile=",
                "-n",
                "chat",
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--store",
                "none",
                *options,
            ],
            cwd=ROOT,
            env=client_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.log = Reader(self.process.stdout)
        line = self.log.wait_for(r"starting on \d+")
        match = re.search(r"starting on (\d+)", line)
        assert match is not None
        self.port = int(match[1])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


class Client:
    """The client in pipe mode, as a process whose input stays open until
    L{finish}."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            client_command(*args),
            cwd=ROOT,
            env=client_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = Reader(self.process.stdout)

    def type(self, *lines: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(line + "\n" for line in lines).encode())
        self.process.stdin.flush()

    def end_input(self) -> None:
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()

    def finish(self, timeout: float = DEADLINE) -> tuple[int, list[str], str]:
        """End the input, and return the exit status, the output lines and
        the standard error."""
        self.end_input()
        return self.wait(timeout)

    def wait(self, timeout: float = DEADLINE) -> tuple[int, list[str], str]:
        code = self.process.wait(timeout)
        lines = self.out.rest()
        assert self.process.stderr is not None
        err = self.process.stderr.read().decode("utf-8", "replace")
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
        return code, lines, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_client(
    args: Sequence[str], stdin: str = "", timeout: float = DEADLINE
) -> subprocess.CompletedProcess[str]:
    """Run the client to its end with C{stdin} piped in."""
    return subprocess.run(
        client_command(*args),
        cwd=ROOT,
        env=client_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Scripted:
    """A loopback server whose every byte the test writes by hand."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.listener.settimeout(DEADLINE)

    def accept(self) -> Peer:
        conn, _ = self.listener.accept()
        return Peer(conn)

    def close(self) -> None:
        self.listener.close()


class Peer:
    """One accepted connection, seen from the scripted server."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.conn.settimeout(DEADLINE)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def line(self) -> bytes:
        """The next line from the client, without its \\n."""
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise AssertionError(f"closed by the client; pending {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def closed(self) -> bool:
        """Wait for the client to close; tell whether it did."""
        try:
            while chunk := self.conn.recv(4096):
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.conn.close()
