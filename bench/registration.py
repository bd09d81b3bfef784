"""The Python CPU of one registration, in memory: no sockets, no kernel.

    .venv/bin/python bench/registration.py [--users N] [--profile tottime]

N clients (10 per address, as chatbench) connect to the server's factory
on a fake clock (chatproto.testing.Chat) and register as the Ruby client
does: the welcome, C{/pseudo}, the prompt, the nickname, the list block.
One reactor turn per 100 registrations, as a herd's are batched. Prints
the process CPU per registration, with the garbage collector off (its
passes over a growing heap are the largest part of the run-to-run noise).

What the herd scenario of bench/run.py measures over loopback is this
and Twisted's transport and the kernel's sockets; a change to the
registration's own code shows here first, within a few % (compare two
checkouts run alternately, several times each), where the herd's noise is
10% or more. C{--profile KEY} prints cProfile's top functions by KEY
(tottime, cumulative), and the number of calls of each.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time

from chatproto.testing import Chat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--profile", metavar="KEY", help="cProfile, sorted by KEY")
    args = parser.parse_args()
    n = args.users
    chat = Chat(max_connections=2 * n, max_per_ip=100)
    hosts = [f"10.{i // 250 % 250}.{i % 250}.1" for i in range(n // 10 + 1)]
    profile = cProfile.Profile() if args.profile else None
    gc.disable()
    start = time.process_time()
    if profile is not None:
        profile.enable()
    for i in range(n):
        client = chat.connect(hosts[i // 10])
        client.send(b"/pseudo\n")
        client.send(b"b%d\n" % i)
        if i % 100 == 99:
            chat.clock.advance(0)  # the reactor turn: logs, timers
        client.transport.clear()
    if profile is not None:
        profile.disable()
    spent = time.process_time() - start
    gc.enable()
    members = len(chat.factory.sessions)
    assert members == n, f"{members} of {n} registered"
    print(f"{n:,} registrations: {spent * 1e6 / n:.1f} us of CPU each")
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.profile).print_stats(30)


if __name__ == "__main__":
    main()
