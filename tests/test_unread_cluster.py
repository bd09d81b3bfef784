"""/unread and /history N avant K in a cluster: the history's numbers are
Redis's stamps, one more than the line before at least; a protected
nickname's read position is in Redis. On a real redis-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from chatproto import wire
from chatproto._redis import Commands
from chatproto.accounts import Account, RedisAccounts
from chatproto.config import ServerConfig
from chatproto.history import RedisHistory
from tests.redis_fixture import RedisServer
from tests.test_cluster import Node, received, until

pytestmark = pytest.mark.redis
r: Any = reactor


@pytest_twisted.ensureDeferred
async def test_lines_kept_in_one_script_get_distinct_increasing_numbers(
    commands: Commands,
) -> None:
    history = RedisHistory(commands, "t", ServerConfig())
    assert history.newest == 0
    await history.keep([b"1\n", b"2\n", b"3\n"], b"chan", None)
    await history.keep([b"4\n", b"5\n"], b"chan", None)
    kept = await history.last(10)
    stamps = [k.number for k in kept]
    assert [k.line for k in kept] == [b"%d\n" % n for n in range(1, 6)]
    assert stamps == sorted(set(stamps))  # unique, increasing
    assert history.newest == stamps[-1]
    total, since = await history.after(stamps[0], 3)
    assert (total, [k.number for k in since]) == (4, stamps[2:])
    assert await history.after(stamps[-1], 3) == (0, [])
    assert [k.number for k in await history.before(stamps[3], 2)] == stamps[1:3]
    assert [k.number for k in await history.before(None, 2)] == stamps[3:]
    assert await history.before(stamps[0], 2) == []


@pytest_twisted.ensureDeferred
async def test_the_redis_book_keeps_a_read_position_until_a_new_owner(
    commands: Commands, redis: RedisServer
) -> None:
    book = RedisAccounts(commands, "t")
    await book.protect(Account("Prof", "scrypt$1", 10.0))
    await book.touch("prof", 20.0, 1_795_633_048_250)
    await book.touch("prof", 30.0)  # an arrival: the position stays
    assert await book.find("PROF") == Account(
        "Prof", "scrypt$1", 30.0, 1_795_633_048_250
    )
    await book.touch("nobody", 1.0, 5)  # no account: nothing made
    assert redis.cli("HKEYS", "chatproto:t:seen").split() == ["prof"]
    await book.protect(Account("Prof", "scrypt$2", 40.0))
    assert (await book.find("prof")).seen is None  # type: ignore[union-attr]
    await book.touch("prof", 50.0, 7)
    await book.unprotect("prof")
    assert redis.cli("EXISTS", "chatproto:t:seen").strip() == "0"


@pytest.fixture
def nodes(redis: RedisServer) -> Iterator[Callable[[], Node]]:
    started: list[Node] = []

    def start() -> Node:
        node = Node(redis, history=True)
        node.factory.protection.accounts = node.cluster.accounts  # as tap.py
        started.append(node)
        return node

    yield start
    pytest_twisted.blockon(
        gatherResults([n.stop() for n in started if n.cluster.running])
    )


@pytest_twisted.ensureDeferred
async def test_unread_on_another_node_gives_every_line_said_since(
    nodes: Callable[[], Node], redis: RedisServer
) -> None:
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice = await a.user("alice")
    bob = await b.user("bob")
    bob.send(b"/register mot de passe\n")
    await received(bob, wire.notice(wire.REGISTER_DONE.format("bob")))
    alice.send(b"avant\n")
    await received(bob, b"-alice: avant\n")
    bob.send(b"/quit\n")
    await received(alice, "Déconnection de bob\n".encode())
    alice.send(b"un\ndeux\n")
    kept = ("LRANGE", "chatproto:test:history", "0", "-1")
    await until(lambda: "alice: deux" in redis.cli(*kept))
    bob = a.connect()
    bob.send(b"/pseudo bob mot de passe\n")
    await until(lambda: bob.transport.value().endswith(b"\n" + wire.RULE))
    bob.take()
    bob.send(b"/unread\n")
    answer = await received(bob, wire.notice(wire.UNREAD_END))
    lines = answer.splitlines(keepends=True)
    assert lines[0].startswith(b"--- ") and b"depuis votre derni" in lines[0]
    said = [line.split(b"]-", 1)[1] for line in lines[1:-1]]
    # Never fewer: every line since bob left. Node b's read position was the
    # newest line it knew kept (bob's arrival there), so the lines node a
    # kept before bob left come too.
    assert said[-3:] == [b"alice: un\n", b"alice: deux\n", b"Connexion de bob\n"]
    assert said[:2] == [b"alice: avant\n", "Déconnection de bob\n".encode()]
    # Redis away: one clear line.
    redis.stop()
    await until(lambda: not a.cluster.accepting)
    bob.take()
    bob.send(b"/unread\n")
    line = wire.notice(wire.UNREAD_UNAVAILABLE)
    assert await received(bob, line) == line
