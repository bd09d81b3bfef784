"""The bytes of Python objects one registered idle user costs the server.

    .venv/bin/python bench/memory.py [--users N] [--lines K] [--by line]

One process: the server's factory on the real reactor, listening on
127.0.0.1 with TLS kept out as twistd does (chatproto._twisted), and N
plain sockets from 127.1.x.y (10 per address, as chatbench) that register
(welcome, C{/pseudo NICK}, the list block) and then stay idle. tracemalloc
counts what was allocated from the moment the first of them connects until
all are registered and idle, less what this script allocates itself (its
client sockets and buffers), and prints it per user, in all and by the
source file that allocated it (Twisted's transport, the socket module,
chatproto's modules). Resident memory at 10,000 users is what `make bench`
measures (the idle scenario); this is the part of it made of Python
objects, and where it comes from.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import socket
import time
import tracemalloc

from chatproto._twisted import import_without_tls

import_without_tls()

from twisted.internet import reactor  # noqa: E402
from twisted.logger import LogPublisher, globalLogBeginner  # noqa: E402

from chatproto.config import ServerConfig  # noqa: E402
from chatproto.server import ChatFactory  # noqa: E402

SPREAD = 10  # clients per source address, as chatbench


def connect(address: tuple[str, int], first: int, count: int) -> list[socket.socket]:
    clients = []
    for i in range(first, first + count):
        client = socket.socket()
        n = i // SPREAD
        client.bind((f"127.1.{n // 250}.{n % 250 + 1}", 0))
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # connecting
            client.connect(address)
        clients.append(client)
    return clients


def register(clients: list[socket.socket], first: int, seconds: float = 120) -> int:
    """Run the reactor until every client got its list block."""
    got = {c: b"" for c in clients}
    asked: set[socket.socket] = set()
    done: set[socket.socket] = set()
    deadline = time.monotonic() + seconds
    while len(done) < len(clients) and time.monotonic() < deadline:
        reactor.iterate(0.001)
        for i, c in enumerate(clients):
            if c in done:
                continue
            try:
                got[c] += c.recv(65536)
            except BlockingIOError:
                continue
            if c not in asked and got[c].endswith(b"/pseudo\n"):
                c.send(b"/pseudo u%d\n" % (first + i))
                asked.add(c)
            if got[c].count(b"------\n") == 2:
                done.add(c)
    return len(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=15, help="files to list")
    parser.add_argument(
        "--by", choices=("file", "line"), default="file", help="what to list them by"
    )
    args = parser.parse_args()
    n = args.users
    # Logging started, as twistd starts it: until then Twisted keeps every
    # event in memory (up to 65,536), the users' arrivals among them. A
    # publisher with no observers drops them.
    globalLogBeginner.beginLoggingTo([LogPublisher()], redirectStandardIO=False)
    factory = ChatFactory(
        ServerConfig(max_connections=n + 100, max_per_network=0, ping_interval=1000),
        clock=reactor,
    )
    port = reactor.listenTCP(0, factory, backlog=n, interface="127.0.0.1")
    address = ("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
    warm = connect(address, 0, 50)  # the first connections import and cache
    register(warm, 0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    clients = connect(address, 50, n)
    registered = register(clients, 50)
    for _ in range(50):
        reactor.iterate(0.001)
    gc.collect()
    after = tracemalloc.take_snapshot()
    mine = [tracemalloc.Filter(False, __file__)]
    key = "lineno" if args.by == "line" else "filename"
    stats = after.filter_traces(mine).compare_to(before.filter_traces(mine), key)
    by_file: collections.Counter[str] = collections.Counter()
    for stat in stats:
        frame = stat.traceback[0]
        parts = frame.filename.split("/")
        package = "twisted/" if "twisted" in parts else ""
        package = "chatproto/" if "chatproto" in parts else package
        line = f":{frame.lineno}" if args.by == "line" else ""
        by_file[package + parts[-1] + line] += stat.size_diff
    total = sum(by_file.values())
    print(f"{registered:,} of {n:,} users registered and idle")
    print(f"{total / n:,.0f} bytes of Python objects per user, of which:")
    for name, size in by_file.most_common(args.lines):
        print(f"  {size / n:7.0f}  {name}")


if __name__ == "__main__":
    main()
