"""--metrics and --logger=chatproto.logs.json as an operator runs them: a
real twistd process, scraped over HTTP, its JSON lines read back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.test_twistd import ROOT, free_port, register, twistd


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate(timeout=10)[0]
                raise AssertionError(f"twistd did not start: {out!r}") from None
            time.sleep(0.05)  # a real process: wait for it to listen


def test_twistd_serves_metrics_and_logs_json_lines(tmp_path: Path) -> None:
    chat, scrape = free_port(), free_port()
    proc = subprocess.Popen(
        twistd(
            "-n",
            "--pidfile=",
            "--logger=chatproto.logs.json",
            "chat",
            f"--port=tcp:{chat}:interface=127.0.0.1",
            f"--metrics=tcp:{scrape}:interface=127.0.0.1",
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(chat, proc)
        wait_for(scrape, proc)
        alice = register(chat, "alice")
        bob = register(chat, "bob")  # kept: a closed socket would be lost
        alice.send(b"bonjour\n/quit\n")
        assert alice.rest().endswith(b"Deconnexion\n")
        bob.until("Déconnection de alice\n".encode())
        url = f"http://127.0.0.1:{scrape}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("chatproto_users", ("tcp",))] == 1
    assert samples[("chatproto_lines_total", ("public",))] == 1
    assert samples[("chatproto_departures_total", ("quit",))] == 1
    events = [json.loads(line) for line in out.decode().splitlines()]
    left = [(e["nick"], e["reason"]) for e in events if e.get("act") == "departure"]
    assert left[0] == ("alice", "quit")  # then bob, as the server stops
    assert ("bob", "shutdown") in left
    assert b"Traceback" not in out + err
