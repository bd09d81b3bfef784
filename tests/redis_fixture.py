"""A real redis-server for the tests: on a free loopback port, in a temporary
directory, with nothing saved to disk (or, C{persistent}, with every write
in its append-only file before it answers), stopped at the end of the test.

Each test module that needs one writes a three-line fixture around
L{running_redis} (a fixture imported from here would be an unused import, or a
redefinition, to the linter).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process that a test can stop, pause and start again
    on the same port: with its data lost, as a restart without persistence;
    or, C{persistent}, with its data read back from its append-only file
    in C{directory} (appendonly yes, appendfsync always)."""

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        assert self.proc is None
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115
        with log:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes" if self.persistent else "no",
                    "--appendfsync",
                    "always",
                    "--dir",
                    str(self.directory),
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.SubprocessError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = (self.directory / "redis.log").read_text(errors="replace")
                raise AssertionError(f"redis-server did not start: {log_text}")
            time.sleep(0.02)  # a real process: wait for it to listen

    def stop(self) -> None:
        """Stop at once, as a crash would (SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(10)

    def terminate(self) -> None:
        """Stop as an operator would (SIGTERM): Redis writes what it keeps
        and exits."""
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(10)  # past that, stop() kills it
        self.proc = None
        assert code == 0, f"redis-server exited with {code}"

    def pause(self) -> None:
        """Freeze the server: connections stay open, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        """A command through redis-cli; its output, stripped."""
        assert REDIS_CLI is not None
        result = subprocess.run(
            [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=10,
            check=True,
        )
        return result.stdout.decode().strip()

    def key_names(self, pattern: str = "*") -> list[str]:
        return sorted(
            k for k in self.cli("--scan", "--pattern", pattern).split("\n") if k
        )


@contextmanager
def running_redis(directory: Path, persistent: bool = False) -> Iterator[RedisServer]:
    """A started redis-server, stopped on the way out; the test is skipped
    where no redis-server is installed (.ci/run installs it)."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(directory, persistent)
    try:
        server.start()
        yield server
    finally:
        server.stop()
