"""The cluster's choice for issue 21, shown with real processes: Redis,
with its persistence on (appendonly yes, appendfsync always), holds the
protected nicknames and a window of the history; each node copies that
window into its own store (the default, chat.sqlite3 in its directory) and
answers /history and /search from it. Two `twistd chat --redis` nodes; node
A is killed with SIGKILL and started again (on a new directory, or on its
own store), then Redis is stopped (SIGTERM, or SIGKILL) and started again
on the same directory and port: /history and /search on both nodes give
every line said, and the protected nickname still holds on both. And a
Redis outage longer than --node-timeout costs no node its users, even when
a node that knows nothing of it starts as Redis comes back."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatproto import wire
from tests.redis_fixture import RedisServer, running_redis
from tests.test_cluster_e2e import (
    DEADLINE,
    NODE_TIMEOUT,
    WELCOME,
    Line,
    Node,
    departure,
    listed,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

STAMP = re.compile(rb"\[\d{1,2}\.\d{1,2}\.\d{1,2}\]-")
SAID = re.compile(rb"(alice|bob|carl|dora): ")
PASSWORD = b"mot de passe"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """redis-server with appendonly yes, appendfsync always, in a directory
    of its own (the nodes' are beside it)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with running_redis(directory, persistent=True) as server:
        yield server


def said_in(block: bytes) -> list[bytes]:
    """The lines users said in a /history or /search block, their stamps
    cut off (arrivals, departures and the block's own lines left out)."""
    lines = [STAMP.sub(b"", line, count=1) for line in block.splitlines(True)]
    return [line for line in lines if SAID.match(line)]


def history(user: Line) -> list[bytes]:
    user.send(b"/history 100\n")
    user.until(b"--- historique (")
    return said_in(user.until(wire.HISTORY_END))


def search(user: Line) -> list[bytes]:
    user.send(b"/search ELEPHANT\n")
    user.until("--- recherche « ELEPHANT » (".encode())
    return said_in(user.until(wire.SEARCH_END))


def say(speaker: Line, nick: str, text: str, *hearers: Line) -> bytes:
    """C{nick}'s line, said by C{speaker}, once its hearers (on another
    node) got it: it was published in the same Redis script as it was kept,
    so it is in Redis (and, appendfsync always, on disk)."""
    speaker.send(text.encode() + b"\n")
    for hearer in hearers:
        hearer.until(text.encode() + b"\n")
    return f"{nick}: {text}\n".encode()


def prof_holds(*nodes: Node) -> None:
    """On each node a wrong password for prof is refused, then the right
    one lets prof in (and prof leaves again)."""
    for node in nodes:
        wrong = Line(node.port)
        wrong.until(WELCOME)
        wrong.send(b"/pseudo prof\n")
        wrong.until(wire.notice(wire.PASSWORD_PROMPT))
        wrong.send(b"pas le bon\n")
        assert wrong.until(b"\n") == wire.TAKEN
        wrong.close()
    for node in nodes:
        owner = Line(node.port)
        owner.until(WELCOME)
        deadline = time.monotonic() + DEADLINE
        while True:  # prof's release on the other node may still be on its way
            owner.send(b"/pseudo prof " + PASSWORD + b"\n")
            answer = owner.until(b"\n")
            if answer == b"Bienvenue prof\n":
                break
            assert answer == wire.TAKEN, answer
            assert time.monotonic() < deadline, "prof never got in"
            time.sleep(0.1)  # a real process: wait for it
        owner.send(b"/quit\n")
        assert owner.rest().endswith(wire.BYE)


def everything_there(readers: list[Line], said: list[bytes]) -> None:
    for reader in readers:
        assert history(reader) == said


def everything_there_again(readers: list[Line], said: list[bytes]) -> None:
    """After Redis came back: a node answers /history from its store alone
    until it is in the cluster again (it may hear lines a moment before),
    then copies what it lacks; every line is there by the deadline."""
    deadline = time.monotonic() + DEADLINE
    for reader in readers:
        while (got := history(reader)) != said and time.monotonic() < deadline:
            time.sleep(0.2)  # a real process: wait for it
        assert got == said
        assert search(reader) == said


@pytest.mark.parametrize("redis_stop", ["SIGTERM", "SIGKILL"])
def test_history_and_protected_nicknames_survive_node_and_redis_restarts(
    tmp_path: Path, redis: RedisServer, redis_stop: str
) -> None:
    a = Node(tmp_path / "a", redis, "a")
    b = Node(tmp_path / "b", redis, "b")
    again: Node | None = None
    try:
        a.wait_listening()
        b.wait_listening()
        alice, bob = a.register("alice"), b.register("bob")
        prof = a.register("prof")
        prof.send(b"/register " + PASSWORD + b"\n")
        prof.until(wire.notice(wire.REGISTER_DONE.format("prof")))
        said = []
        for n in range(1, 4):
            said.append(say(alice, "alice", f"l'Éléphant n°{n} à la fenêtre", bob))
            said.append(
                say(bob, "bob", f"un ÉLÉPHANT {n}, ça trompe énormément", alice)
            )

        # (a) kill -9 node A, start it again
        a.stop()
        bob.until_all(departure("alice"), departure("prof"))
        again = Node(tmp_path / "again", redis, "again")
        again.wait_listening()
        carl = again.register("carl")
        everything_there([carl, bob], said)
        prof_holds(again, b)

        said.append(say(carl, "carl", "dernier elephant avant l'arrêt", bob))
        said.append(say(bob, "bob", "Elephant, réponse de bob", carl))

        # (b) stop Redis, start it again on the same directory and port
        if redis_stop == "SIGTERM":
            redis.terminate()
        else:
            redis.stop()
        redis.start()
        dora = again.register("dora")  # the nodes serve again
        b.register("eve")
        said.append(say(dora, "dora", "éléphant après le retour", bob))
        said.append(say(bob, "bob", "ELEPHANT, bob aussi après", dora))
        everything_there_again([dora, bob], said)
        prof_holds(again, b)

        for ran in (a, b, again):
            assert "Traceback" not in ran.output(), ran.output()
    finally:
        for node in (a, b, again):
            if node is not None:
                node.stop()


def test_a_redis_outage_longer_than_the_node_timeout_keeps_every_user(
    tmp_path: Path, redis: RedisServer
) -> None:
    """Redis, persistent, stopped longer than --node-timeout: every lease
    in it has expired when it comes back, with the epoch the nodes know.
    The node that syncs first must not reap the other: both nodes' users
    stay, nobody is told anyone left, and they hear each other again."""
    a = Node(tmp_path / "a", redis, "a")
    b = Node(tmp_path / "b", redis, "b")
    try:
        a.wait_listening()
        b.wait_listening()
        alice, bob = a.register("alice"), b.register("bob")
        say(alice, "alice", "avant la panne", bob)

        redis.terminate()
        time.sleep(2 * NODE_TIMEOUT)  # a real process: the leases run out
        redis.start()
        carl, dora = a.register("carl"), b.register("dora")  # both serve
        say(alice, "alice", "après la panne", bob, dora)
        say(bob, "bob", "bob aussi", alice, carl)
        for user in (alice, bob, carl, dora):
            assert b"connection de" not in user.received, user.received
        for ran in (a, b):
            assert "Traceback" not in ran.output(), ran.output()
    finally:
        a.stop()
        b.stop()


def test_a_node_started_right_after_a_long_redis_outage_reaps_nobody(
    tmp_path: Path, redis: RedisServer
) -> None:
    """Issue 21: Redis, persistent, stopped longer than --node-timeout,
    comes back with every lease run out, and a third node starts at once.
    It knows nothing of the outage, and the first two have not reconnected
    yet (held with SIGSTOP until the new node has served for three
    heartbeats, each of which would reap): its registration is the
    cluster's first renewal after a silence, so Redis reaps nobody for
    --node-timeout plus the reconnection delay, and the two come back in
    that time. Nobody is announced gone; everyone chats."""
    a = Node(tmp_path / "a", redis, "a")
    b = Node(tmp_path / "b", redis, "b")
    c: Node | None = None
    try:
        a.wait_listening()
        b.wait_listening()
        alice, bob = a.register("alice"), b.register("bob")
        say(alice, "alice", "avant la panne", bob)

        redis.terminate()
        time.sleep(2 * NODE_TIMEOUT)  # a real process: the leases run out
        for held in (a, b):  # cut off, retrying: not back yet
            held.proc.send_signal(signal.SIGSTOP)
        redis.start()
        c = Node(tmp_path / "c", redis, "c")
        c.wait_listening()
        carl = c.register("carl")  # c serves: it reaps every heartbeat
        time.sleep(3 * NODE_TIMEOUT / 4)  # three heartbeats of c's
        for held in (a, b):
            held.proc.send_signal(signal.SIGCONT)
        erin, dora = a.register("erin"), b.register("dora")  # a and b are back
        say(alice, "alice", "après la panne", bob, carl, dora)
        say(bob, "bob", "bob aussi", alice, carl, erin)
        say(carl, "carl", "et carl", alice, bob)
        assert sorted(listed(carl)) == [b"alice", b"bob", b"carl", b"dora", b"erin"]
        for user in (alice, bob, carl, dora, erin):
            assert b"connection de" not in user.received, user.received
        assert "no node is reaped for 4.0 s" in c.output()
        for ran in (a, b, c):
            assert "Traceback" not in ran.output(), ran.output()
    finally:
        for node in (a, b, c):
            if node is not None:
                node.stop()


def test_each_nodes_store_keeps_every_line_past_redis_window_across_restarts(
    tmp_path: Path, redis: RedisServer
) -> None:
    """Each node's own store (the default), Redis's window only 8 lines:
    every line said is on both nodes. Node A killed with SIGKILL and started
    again on its directory (its store) has the lines said before, and those
    said while it was away; Redis killed and started again changes
    nothing."""
    window = ("--history-lines", "8")
    a = Node(tmp_path / "a", redis, "a", extra=window)
    b = Node(tmp_path / "b", redis, "b", extra=window)
    again: Node | None = None
    try:
        a.wait_listening()
        b.wait_listening()
        alice, bob = a.register("alice"), b.register("bob")
        said = []
        for n in range(1, 7):
            said.append(say(alice, "alice", f"l'Éléphant n°{n}", bob))
            said.append(say(bob, "bob", f"un ÉLÉPHANT {n}", alice))
            # The nodes copy the window into their stores a fraction of a
            # second after each line: a window of 8 lines holds what two
            # lines say, not twelve said at once.
            time.sleep(0.3)
        everything_there([alice, bob], said)

        a.stop()  # SIGKILL
        bob.until(departure("alice"))
        for n in range(1, 3):
            said.append(say(bob, "bob", f"elephant pendant l'absence {n}"))
        again = Node(tmp_path / "a", redis, "again", extra=window)
        again.wait_listening()
        carl = again.register("carl")
        everything_there([carl, bob], said)

        redis.stop()  # SIGKILL
        redis.start()
        dora = again.register("dora")  # the nodes serve again
        said.append(say(dora, "dora", "éléphant après le retour", bob))
        time.sleep(0.3)
        everything_there_again([dora, bob], said)
        for ran in (a, b, again):
            assert "Traceback" not in ran.output(), ran.output()
    finally:
        for node in (a, b, again):
            if node is not None:
                node.stop()
