"""/search and /history N on a cluster node: their cost on its reactor thread.

RedisHistory.search reads every line the cluster keeps (at most
--history-lines) with one script, then looks for the words in Python. This
fills a real redis-server (on a free loopback port, nothing saved) with
LINES lines through RedisHistory.keep, then times, ROUNDS times each:

- search: RedisHistory.search of a word no line holds (every line is
  looked at: the worst case), ASCII (the cheap first look applies) and
  non-ASCII (every line folded by search_words);
- last: RedisHistory.last(LINES), the reading alone (the reply parsed by
  txredisapi, then the lines made into Kept).

"cpu" is this process's CPU time during the call (Redis runs in its own
process, so this is the reactor's work); "wall" adds Redis's script and
the round trip. Best and median of the rounds, in milliseconds.

    .venv/bin/python bench/cluster_search.py 1000 10000
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from chatproto._redis import Commands
from chatproto.config import RedisAddress, ServerConfig
from chatproto.history import RedisHistory, search_words

ROUNDS = 20
BATCH = 500
LINE = "[12.34.56]-utilisateur{}: un message ordinaire de la discussion, n°{}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def timed(call: Any) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await call()
    return 1000 * (time.process_time() - cpu), 1000 * (time.perf_counter() - wall)


async def measure(commands: Commands, lines: int) -> None:
    config = ServerConfig(
        history_lines=lines, history_bytes=64 * 1024 * 1024, history_age=12 * 3600
    )
    history = RedisHistory(commands, f"bench{lines}", config)
    for start in range(0, lines, BATCH):
        batch = [
            LINE.format(n % 50, n).encode()
            for n in range(start, min(lines, start + BATCH))
        ]
        await history.keep(batch, b"bench", None)
    assert len(await history.last(lines)) == lines
    cases = {
        "search ascii": lambda: history.search(search_words("girafe"), 20),
        "search non-ascii": lambda: history.search(search_words("жираф"), 20),
        "last (all)": lambda: history.last(lines),
    }
    for name, call in cases.items():
        results = [await timed(call) for _ in range(ROUNDS)]
        cpu = sorted(c for c, _ in results)
        wall = sorted(w for _, w in results)
        print(
            f"{lines:>6} lines  {name:<17} cpu best {cpu[0]:6.2f} "
            f"median {statistics.median(cpu):6.2f}   wall best {wall[0]:6.2f} "
            f"median {statistics.median(wall):6.2f}"
        )


async def main(reactor: Any, counts: list[int]) -> None:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [server, "--port", str(port), *options, "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        commands = Commands(RedisAddress("127.0.0.1", port), reactor, 10.0)
        try:
            time.sleep(0.3)  # a real process: let it listen
            commands.start()
            done: Deferred[None] = commands.first_connected
            await done
            for lines in counts:
                await measure(commands, lines)
        finally:
            await commands.close()
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    task.react(lambda reactor: ensureDeferred(main(reactor, counts)))
