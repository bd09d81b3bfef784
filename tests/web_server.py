"""A real `twistd -n chat --port ... --web ...` process, for the tests that
run the chat as a user does (websockets clients, a real browser)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.test_twistd import ROOT, free_port, twistd


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class WebChat:
    """The chat on two loopback ports, the TCP one and the web one; it can
    be stopped and started again on the same ports (a restart). C{root}:
    where its code (chatproto/) is imported from, this checkout's or a
    copy's (a test that changes the page between two starts)."""

    def __init__(self, cwd: Path, *args: str, root: Path = ROOT) -> None:
        self.cwd = cwd
        self.args = args
        self.root = root
        self.port = free_port()
        self.web_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            twistd(
                "-n",
                "--pidfile=",
                "chat",
                "--port",
                f"tcp:{self.port}:interface=127.0.0.1",
                "--web",
                f"tcp:{self.web_port}:interface=127.0.0.1",
                *self.args,
            ),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(self.root)},
        )
        deadline = time.monotonic() + 30
        while not (listening(self.port) and listening(self.web_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                out = self.proc.stdout.read() if self.proc.stdout else b""
                raise AssertionError(f"twistd did not start: {out!r}")
            time.sleep(0.05)  # a real process: wait for it to listen

    def stop(self) -> None:
        """SIGTERM, as a user's service manager stops it; killed past 15 s."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def running(cwd: Path, *args: str, root: Path = ROOT) -> Iterator[WebChat]:
    """A L{WebChat} started, and stopped at the end (a test's fixture)."""
    server = WebChat(cwd, *args, root=root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
