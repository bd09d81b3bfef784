"""Each cluster node's own store, fed from Redis's window: /history, /search
and /unread at the single server's scale on every node. Real ChatFactory,
ClusterNode and Store objects on a real redis-server (the nodes of
tests/test_cluster.py, given a store as tap.py does)."""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import ILogObserver, globalLogPublisher

from chatproto import wire
from chatproto._redis import Commands
from chatproto.config import CLUSTER_WINDOW_LINES, ServerConfig
from chatproto.history import Kept, RedisHistory
from chatproto.store import Store
from tests.redis_fixture import RedisServer
from tests.test_cluster import Client, Node, received, until

pytestmark = pytest.mark.redis
r: Any = reactor
STAMP = re.compile(rb"\[\d{1,2}\.\d{1,2}\.\d{1,2}\]-")
WINDOW = 6  # Redis's window in these tests: far fewer lines than are said
KEY = "chatproto:test:history"


class StoreNode(Node):
    """A node with a store, and a Redis window of WINDOW lines."""

    def __init__(self, redis: RedisServer, path: Path) -> None:
        super().__init__(redis, history=True, store=path, history_lines=WINDOW)

    def store_newest(self) -> int:
        assert self.store is not None
        return self.store.newest


@pytest.fixture
def nodes(redis: RedisServer, tmp_path: Path) -> Iterator[Callable[[str], StoreNode]]:
    """Start a node on the store named C{name} (a name given again: the
    same file)."""
    started: list[StoreNode] = []

    def start(name: str) -> StoreNode:
        node = StoreNode(redis, tmp_path / f"{name}.sqlite3")
        started.append(node)
        return node

    yield start
    pytest_twisted.blockon(
        gatherResults(
            [
                n.stop() if n.cluster.running else n.close_store()
                for n in started
                if n.store is not None and n.store._closed is None
            ]
        )
    )


def tail(redis: RedisServer) -> int:
    """The stamp of the newest line in Redis's window."""
    newest = redis.cli("LINDEX", "chatproto:test:history", "-1")
    return int(newest.split(" ", 1)[0])


async def copied(redis: RedisServer, *nodes: StoreNode) -> None:
    """Every node's store holds the newest line of Redis's window (lines
    said faster than the nodes copy them would be past a window as small
    as this test's)."""
    newest = tail(redis)
    await until(lambda: all(node.store_newest() >= newest for node in nodes))


def stripped(block: bytes) -> list[bytes]:
    return [STAMP.sub(b"", line, count=1) for line in block.splitlines(True)]


async def history(client: Client, count: int = 100) -> list[bytes]:
    """The lines said in the answer to /history COUNT, without stamps,
    arrivals and departures."""
    client.take()
    client.send(b"/history %d\n" % count)
    answer = await received(client, wire.HISTORY_END)
    client.take()
    lines = stripped(answer[answer.index(b"--- historique") :])[1:-1]
    return [line for line in lines if b": " in line]


async def search(client: Client, words: str) -> list[bytes]:
    client.take()
    client.send(f"/search {words}\n".encode())
    answer = await received(client, wire.SEARCH_END)
    client.take()
    return stripped(answer[answer.index(b"--- recherche") :])[1:-1]


def said(nick: str, text: str) -> bytes:
    return f"{nick}: {text}\n".encode()


@pytest_twisted.ensureDeferred
async def test_every_node_reads_every_line_far_past_redis_window(
    nodes: Callable[[str], StoreNode], redis: RedisServer
) -> None:
    """Redis keeps WINDOW lines; each node's store keeps them all, in the
    order Redis kept them, and searches them with accents and case."""
    a, b = nodes("a"), nodes("b")
    await a.ready()
    await b.ready()
    alice, bob = await a.user("alice"), await b.user("bob")
    expected = []
    for n in range(10):
        alice.send(f"Éléphant numéro {n}\n".encode())
        await received(bob, f"-alice: Éléphant numéro {n}\n".encode())
        bob.send(f"souris {n}\n".encode())
        await received(alice, f"-bob: souris {n}\n".encode())
        await copied(redis, a, b)
        expected += [said("alice", f"Éléphant numéro {n}"), said("bob", f"souris {n}")]
    assert int(redis.cli("LLEN", "chatproto:test:history")) == WINDOW
    assert await history(alice) == expected
    assert await history(bob) == expected
    assert await history(bob, 3) == expected[-3:]
    found = await search(bob, "ELEPHANT numero")
    assert found == [line for line in expected if line.startswith(b"alice")]
    # /history's bound is the store's, not Redis's window
    bob.take()
    bob.send(b"/history 500\n")
    assert wire.HISTORY_END in await received(bob, wire.HISTORY_END)


@pytest_twisted.ensureDeferred
async def test_a_node_back_on_its_store_gets_what_was_said_while_away(
    nodes: Callable[[str], StoreNode], redis: RedisServer
) -> None:
    a, b = nodes("a"), nodes("b")
    await a.ready()
    await b.ready()
    alice, bob = await a.user("alice"), await b.user("bob")
    before = []
    for n in range(8):  # more than the window
        alice.send(b"avant %d\n" % n)
        before.append(said("alice", f"avant {n}"))
        await received(bob, b"-alice: avant %d\n" % n)
        await copied(redis, a, b)
    await received(bob, b"-alice: avant 7\n")
    assert await history(alice) == before
    a.crash()
    await a.close_store()
    during = []
    for n in range(3):  # fewer than the window: all in Redis
        bob.send(b"pendant %d\n" % n)
        during.append(said("bob", f"pendant {n}"))
    key = "chatproto:test:history"
    await until(lambda: "bob: pendant 2" in redis.cli("LRANGE", key, "0", "-1"))
    again = nodes("a")  # on a's store
    await again.ready()
    carol = await again.user("carol")
    assert await history(carol) == before + during
    assert await search(carol, "pendant") == during


@pytest_twisted.ensureDeferred
async def test_while_redis_is_away_the_store_answers_with_what_it_has(
    nodes: Callable[[str], StoreNode], redis: RedisServer
) -> None:
    a = nodes("a")
    await a.ready()
    alice = await a.user("alice")
    alice.send("un éléphant\n".encode())
    await until(lambda: a.store_newest() > 0 and tail(redis) == a.store_newest())
    await copied(redis, a)
    redis.stop()
    await until(lambda: not a.cluster.accepting)
    assert await history(alice) == [said("alice", "un éléphant")]
    assert await search(alice, "ELEPHANT") == [b"alice: un \xc3\xa9l\xc3\xa9phant\n"]


@pytest_twisted.ensureDeferred
async def test_a_node_away_longer_than_the_window_says_what_it_lacks(
    nodes: Callable[[str], StoreNode], redis: RedisServer
) -> None:
    a, b = nodes("a"), nodes("b")
    await a.ready()
    await b.ready()
    bob = await b.user("bob")
    bob.send(b"avant\n")
    await until(lambda: "bob: avant" in redis.cli("LINDEX", KEY, "-1"))
    await copied(redis, a)
    a.crash()
    await a.close_store()
    for n in range(WINDOW + 2):  # the window forgets some of them
        bob.send(b"pendant %d\n" % n)
    await until(lambda: f"pendant {WINDOW + 1}" in redis.cli("LINDEX", KEY, "-1"))
    logged: list[dict[str, Any]] = []
    observer = cast(ILogObserver, logged.append)
    globalLogPublisher.addObserver(observer)
    try:
        again = nodes("a")
        await again.ready()
        carol = await again.user("carol")
        kept = await history(carol)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert kept[0] == said("bob", "avant")
    assert kept[-1] == said("bob", f"pendant {WINDOW + 1}")
    assert said("bob", "pendant 0") not in kept  # forgotten by the window
    assert any(
        "this node's store lacks public lines" in event.get("log_format", "")
        for event in logged
    )


@pytest_twisted.ensureDeferred
async def test_unread_on_another_node_is_exact_with_stores(
    nodes: Callable[[str], StoreNode], redis: RedisServer
) -> None:
    a, b = nodes("a"), nodes("b")
    for node in (a, b):
        node.factory.protection.accounts = node.cluster.accounts  # as tap.py
        await node.ready()
    alice, bob = await a.user("alice"), await b.user("bob")
    bob.send(b"/register mot de passe\n")
    await received(bob, wire.notice(wire.REGISTER_DONE.format("bob")))
    alice.send(b"avant\n")
    await received(bob, b"-alice: avant\n")
    await copied(redis, a, b)
    bob.send(b"/quit\n")
    await received(alice, "Déconnection de bob\n".encode())
    alice.send(b"un\ndeux\n")
    await until(lambda: "alice: deux" in redis.cli("LINDEX", KEY, "-1"))
    await copied(redis, a)
    bob = a.connect()
    bob.send(b"/pseudo bob mot de passe\n")
    await until(lambda: bob.transport.value().endswith(b"\n" + wire.RULE))
    bob.take()
    bob.send(b"/unread\n")
    answer = await received(bob, wire.notice(wire.UNREAD_END))
    lines = answer.splitlines(keepends=True)
    assert b"3 messages depuis votre derni" in lines[0], lines[0]
    assert [line.split(b"]-", 1)[1] for line in lines[1:-1]] == [
        "Déconnection de bob\n".encode(),
        b"alice: un\n",
        b"alice: deux\n",
    ]


# Redis's window, read from a stamp (RedisHistory.since)


@pytest_twisted.ensureDeferred
async def test_since_reads_the_lines_after_a_stamp_however_far_back(
    commands: Commands,
) -> None:
    history = RedisHistory(commands, "t", ServerConfig(history_lines=1000))
    for batch in range(30):
        await history.keep([b"%d\n" % (batch * 10 + n) for n in range(10)], b"c", None)
    cut, every = await history.since(0, 1000)
    assert cut == 0
    assert [k.line for k in every] == [b"%d\n" % n for n in range(300)]
    stamps = [k.number for k in every]
    for start in (0, 5, 100, 283, 298):
        _, found = await history.since(stamps[start], 50)
        assert [k.number for k in found] == stamps[start + 1 : start + 51]
    assert await history.since(stamps[-1], 10) == (0, [])
    assert await history.since(stamps[-1] + 1000, 10) == (0, [])
    # A smaller window forgets the oldest: the newest forgotten is the cut.
    small = RedisHistory(commands, "t", ServerConfig(history_lines=100))
    await small.keep([b"300\n"], b"c", None)
    cut, kept = await small.since(0, 1000)
    assert [k.line for k in kept] == [b"%d\n" % n for n in range(201, 301)]
    assert cut == stamps[200]


# A store numbered by the cluster (Store.keep)


@pytest_twisted.inlineCallbacks
def test_a_store_numbered_by_the_cluster_counts_across_gaps(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "node.sqlite3"
    store = Store.open(str(path), r, r)
    store.start()
    try:
        stamps = [1_800_000_000_000 + 7 * n for n in range(10)]
        store.history.keep([Kept(s, s / 1000, b"%d\n" % s) for s in stamps])
        store.history.keep([Kept(stamps[3], 0.0, b"again\n")])  # had: passed over
        assert store.newest == stamps[-1]
        total, last = yield store.history.after(stamps[2], 3, until=stamps[8])
        assert total == 6 and [k.number for k in last] == stamps[6:9]
    finally:
        yield store.close()
    again = Store.open(str(path), r, r)  # counted from the file's seqs
    again.start()
    try:
        assert again.newest == stamps[-1]
        total, _ = yield again.history.after(stamps[0], 0)
        assert total == 9
        kept = yield again.history.last(20)
        assert [k.line for k in kept] == [b"%d\n" % s for s in stamps]
    finally:
        yield again.close()


# As twistd builds it


@pytest_twisted.inlineCallbacks
def test_a_node_with_a_store_reads_it_and_stops_it_after_itself(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    from chatproto.cluster import ClusterNode
    from chatproto.store import StoreService
    from chatproto.tap import Options, makeService

    options = Options()
    path = str(tmp_path / "node.sqlite3")
    options.parseOptions(
        ["--port=tcp:0", "--redis", "redis://127.0.0.1:1/0", "--store", path]
    )
    assert options["config"].history_lines == CLUSTER_WINDOW_LINES
    top = makeService(options)
    services = list(top)  # type: ignore[call-overload]
    store, node = services[0], services[1]
    assert isinstance(store, StoreService) and isinstance(node, ClusterNode)
    assert node.feed is not None and node.feed.store is store.store.history
    assert node.chat.history is node.history  # type: ignore[attr-defined]
    assert node.history is not None and node.history.limit == 500
    yield store.store.close()
    options = Options()
    options.parseOptions(
        ["--port=tcp:0", "--redis", "redis://127.0.0.1:1/0", "--store", "none"]
    )
    assert options["config"].history_lines == 100
    node = next(iter(makeService(options)))  # type: ignore[call-overload]
    assert isinstance(node, ClusterNode) and node.feed is None


@pytest_twisted.ensureDeferred
async def test_history_holds_the_askers_own_line_and_the_others_just_said(
    nodes: Callable[[str], StoreNode],
) -> None:
    """A line said in the same read as /history, and one another node's
    user said just before: both in the answer, though no copy was due."""
    a, b = nodes("a"), nodes("b")
    await a.ready()
    await b.ready()
    alice, bob = await a.user("alice"), await b.user("bob")
    bob.send(b"juste avant\n")
    await received(alice, b"-bob: juste avant\n")
    alice.take()
    alice.send(b"dans la meme lecture\n/history 2\n")
    answer = await received(alice, wire.HISTORY_END)
    assert stripped(answer)[1:3] == [
        said("bob", "juste avant"),
        said("alice", "dans la meme lecture"),
    ]
