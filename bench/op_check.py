"""Does /op's password check stall the chat? A real `twistd -n chat`, with an
operators file at the real scrypt cost; attackers on many loopback addresses
(127.0.0.10 and up, one connection each) send wrong passwords as fast as the
throttle lets them be checked, while a prober's `/list` round trip is timed.

    .venv/bin/python bench/op_check.py [--port 7750] [--seconds 10] [--addresses 40]

It prints the prober's round trips (median, p99, max, in ms) with the
attackers and without them, and how many passwords were checked. Loopback
only; it stops by itself after the seconds given (twice: quiet, then
attacked), and stops its server.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import cast

from chatproto.operators import make_hash

RULE = b"----------------------\n"
WELCOME_END = b"\n"


def connect(port: int, nick: str, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
    sock.sendall(b"/pseudo\n")
    until(sock, b"Entrez votre pseudo: \n")
    sock.sendall(nick.encode() + b"\n")
    until(sock, b"=>" + nick.encode() + b"\n" + RULE)
    return sock


def until(sock: socket.socket, end: bytes, buffer: bytearray | None = None) -> None:
    data = buffer if buffer is not None else bytearray()
    while end not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit(f"the server closed a connection: {bytes(data)!r}")
        data += chunk


def probe(sock: socket.socket, seconds: float) -> list[float]:
    """/list round trips for C{seconds}, one every 20 ms; in ms."""
    times = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        start = time.perf_counter()
        sock.sendall(b"/list\n")
        until(sock, b"\n" + RULE)
        times.append((time.perf_counter() - start) * 1000)
        time.sleep(0.02)  # a real process: pace the probe
    return times


def attack(attackers: list[socket.socket], seconds: float) -> int:
    """Wrong passwords, one per answer; how many were answered as checked."""
    sel = selectors.DefaultSelector()
    for sock in attackers:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        sock.sendall(b"/op mauvais\n")
    checked = 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        for key, _ in sel.select(0.05):
            sock = cast(socket.socket, key.fileobj)
            data = sock.recv(65536)
            checked += data.count("mot de passe d'opérateur refusé".encode())
            sock.sendall(b"/op mauvais\n")  # at once: the throttle decides
    return checked


def summary(name: str, times: list[float]) -> str:
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return (
        f"{name}: {len(times)} round trips, median {statistics.median(times):.2f} ms,"
        f" p99 {p99:.2f} ms, max {times[-1]:.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7750)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--addresses", type=int, default=40)
    args = parser.parse_args()
    twistd = str(Path(sys.executable).parent / "twistd")
    with tempfile.TemporaryDirectory() as folder:
        ops = Path(folder) / "ops"
        ops.write_text(f"alice:{make_hash('le bon')}\n")
        log = open(Path(folder) / "twistd.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "chat", "--port",
             f"tcp:{args.port}:interface=127.0.0.1", "--ping-interval=0",
             "--flood-rate=0", "--operators", str(ops)],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    prober = connect(args.port, "sonde")
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.1)  # a real process: wait for it to listen
            quiet = probe(prober, args.seconds)
            attackers = [
                connect(args.port, f"a{i}", f"127.0.0.{10 + i}")
                for i in range(args.addresses)
            ]
            result: list[int] = []
            thread = threading.Thread(
                target=lambda: result.append(attack(attackers, args.seconds + 1))
            )
            thread.start()
            time.sleep(0.5)  # the attack under way
            attacked = probe(prober, args.seconds)
            thread.join()
            print(summary("quiet", quiet))
            print(summary("attacked", attacked))
            print(f"wrong passwords checked meanwhile: {result[0]}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(20)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
