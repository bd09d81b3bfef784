"""The benchmark's machinery works end to end on a small load.

Builds bench/chatbench.c and drives bench/naive_chat.py (and, through
bench/run.py, our server) with it; needs a C compiler, not ngIRCd.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
HERD = ["--spread", "10", "--inflight", "0", "--accept-window", "0"]
HERD += ["--connect-rate", "0", "--settle", "0.1", "--timeout", "30"]


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


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bench/chatbench.c, built once for the module."""
    tool = tmp_path_factory.mktemp("chatbench") / "chatbench"
    build = [compiler(), "-O2", "-o", str(tool), str(BENCH / "chatbench.c"), "-lm"]
    subprocess.run(build, check=True, timeout=60)
    return tool


def start_naive(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "naive_chat.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, server)
    return server


@pytest.fixture
def naive() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The naive chat on a free port."""
    port = free_port()
    server = start_naive(port)
    yield port, server
    server.kill()
    server.wait()


def test_chatbench_counts_every_delivery(
    tool: Path, naive: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """20 clients register; each line of 4 senders reaches the 19 others,
    with a latency, and the server's CPU is read from /proc."""
    port, server = naive
    done = subprocess.run(
        [str(tool), "--port", str(port), "--pid", str(server.pid), *LOAD],
        capture_output=True,
        check=True,
        timeout=30,
    )
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


def test_a_herd_connects_every_client_at_once_and_registers_them(
    tool: Path, naive: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """With no window, no bound in flight and no rate, chatbench issues every
    connect() before it reads anything, and times the last registration."""
    port, server = naive
    herd = ["--clients", "40", "--reg-timeout", "10", *HERD]
    done = subprocess.run(
        [str(tool), "--port", str(port), "--pid", str(server.pid), *herd],
        capture_output=True,
        check=True,
        timeout=30,
    )
    result = json.loads(done.stdout)
    assert result["registered"] == 40
    assert 0 <= result["connects_s"] <= result["reg_last_s"] <= result["reg_s"]
    assert result["stuck_unwelcomed"] == result["stuck_connecting"] == 0


def test_a_client_connected_but_never_welcomed_counts_as_lost(tool: Path) -> None:
    """A listener that never accepts: the kernel completes a few handshakes
    into its queue and leaves the rest unanswered; at the deadline every
    client is lost, and the JSON says where each got stuck."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        port = listener.getsockname()[1]
        herd = ["--clients", "10", "--reg-timeout", "1", *HERD]
        done = subprocess.run(
            [str(tool), "--port", str(port), *herd],
            capture_output=True,
            check=True,
            timeout=30,
        )
    result = json.loads(done.stdout)
    assert result["registered"] == 0
    assert result["stuck_unwelcomed"] >= 1
    assert result["stuck_unwelcomed"] + result["stuck_connecting"] == 10
    assert result["reg_s"] >= 1


def test_clients_reconnect_and_register_again_after_a_restart(tool: Path) -> None:
    """chatbench says when its clients are registered; the server is
    restarted on the same port; on SIGUSR1 chatbench times the clients
    retrying until every one has registered again."""
    port = free_port()
    server = start_naive(port)
    load = ["--clients", "20", "--spread", "10", "--settle", "0.1", "--timeout", "40"]
    load += ["--reconnect", "50", "--reconnect-timeout", "15", "--reconnect-wait", "20"]
    bench = subprocess.Popen(
        [str(tool), "--port", str(port), *load],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert bench.stdout
        assert json.loads(bench.stdout.readline()) == {"registered": 20}
        server.terminate()
        server.wait(timeout=10)
        server = start_naive(port)
        bench.send_signal(signal.SIGUSR1)
        result = json.loads(bench.stdout.readline())
        bench.wait(timeout=10)
    finally:
        bench.kill()
        server.kill()
        server.wait()
    assert result["re_target"] == result["re_registered"] == 20
    assert result["re_lost"] == 0
    assert 0 <= result["re_s"] < 15
    assert result["re_connects"] >= 20


def test_quick_mode_says_not_measured_and_runs_the_herds(tmp_path: Path) -> None:
    """--quick measures no target at its size: every target says "not
    measured", none PASS or FAIL; the herd and reconnect rows are there,
    for our server and the naive chat."""
    compiler()
    out = tmp_path / "bench.json"
    herds = ["--quick", "--servers", "ours,naive", "--scenarios", "herd,reconnect"]
    herds += ["--herd-clients", "30", "--reconnect-clients", "20"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), *herds, "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=90,
    )
    targets = [line for line in done.stdout.splitlines() if line.startswith("  [")]
    assert len(targets) == 2
    assert all(line.startswith("  [not measured] ") for line in targets)
    assert "[PASS]" not in done.stdout and "[FAIL]" not in done.stdout
    assert "time from listening to all re-registered (s)" in done.stdout
    data = json.loads(out.read_text())
    for key in ("ours", "naive"):
        herd = data["results"]["herd"][key]
        assert herd["registered"] == herd["clients"] == 30
        again = data["results"]["reconnect"][key]
        assert again["re_registered"] == again["clients"] == 20
        assert again["server_survived"]


def load_run_py() -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("quick", "status"), [(False, "FAIL"), (True, "not measured")])
def test_a_target_quick_mode_did_not_measure_is_neither_pass_nor_fail(
    quick: bool, status: str
) -> None:
    """The same losing numbers FAIL a full run's target, and say "not
    measured" in a --quick run, which measures nothing at the target's size."""
    run = load_run_py()
    plan, _ = run.make_plan(quick, {"herd", "reconnect"})
    lost = {"clients": 10, "registered": 7, "re_registered": 7}
    results = {"herd": {"ours": lost}, "reconnect": {"ours": lost}}
    statuses = [t.status for t in run.targets(results, plan)]
    assert statuses == [status, status]


def test_a_target_without_its_measurement_is_not_measured() -> None:
    run = load_run_py()
    plan, _ = run.make_plan(False, {"msg1", "herd"})
    statuses = [t.status for t in run.targets({"msg1": {}, "herd": {}}, plan)]
    assert statuses == ["not measured"] * 3
