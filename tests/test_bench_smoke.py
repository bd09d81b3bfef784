"""The benchmark's machinery works end to end on a small load.

Builds bench/chatbench.c and drives bench/naive_chat.py with it, directly and
through bench/run.py; needs a C compiler, not ngIRCd.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

pytestmark = pytest.mark.slow

LOAD = [
    "--clients",
    "20",
    "--spread",
    "10",
    "--senders",
    "4",
    "--rate",
    "5",
    "--duration",
    "1",
    "--drain",
    "3",
    "--settle",
    "0.1",
    "--timeout",
    "20",
]
QUICK = ["--quick", "--servers", "naive", "--scenarios", "msg1"]


def compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build bench/chatbench.c")
    return cc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the naive chat exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the naive chat is not listening")


def test_chatbench_counts_every_delivery(tmp_path: Path) -> None:
    """20 clients register; each line of 4 senders reaches the 19 others,
    with a latency, and the server's CPU is read from /proc."""
    tool = tmp_path / "chatbench"
    build = [compiler(), "-O2", "-o", str(tool), str(BENCH / "chatbench.c"), "-lm"]
    subprocess.run(build, check=True, timeout=60)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "naive_chat.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, server)
        done = subprocess.run(
            [str(tool), "--port", str(port), "--pid", str(server.pid), *LOAD],
            capture_output=True,
            check=True,
            timeout=30,
        )
    finally:
        server.kill()
        server.wait()
    result = json.loads(done.stdout)
    assert result["registered"] == 20
    assert result["sent"] == 4 * 5
    assert result["delivered"] == result["expected"] == 4 * 5 * 19
    assert 0 <= result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] + 1
    assert result["send_server_cpu_s"] >= 0


def test_run_py_prints_a_table_for_the_naive_chat(tmp_path: Path) -> None:
    """bench/run.py --quick builds the tool, runs one scenario against the naive
    chat, writes its JSON and prints the table, and leaves no server behind."""
    compiler()
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), *QUICK, "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "deliveries per server CPU-second" in done.stdout
    data = json.loads(out.read_text())
    naive = data["results"]["msg1"]["naive"]
    assert naive["registered"] == naive["clients"]
    assert naive["delivered"] == naive["expected"] > 0
    assert naive["server_survived"]
