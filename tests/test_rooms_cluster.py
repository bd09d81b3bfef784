"""Rooms across the nodes of a cluster, in one process: real ChatFactory and
ClusterNode objects on a real redis-server (tests/test_cluster.py's nodes),
users of one room on two nodes. What docs/protocol.md "Rooms" says of a
single server holds on the cluster; a room's lines go only to the nodes
with members in it (the Redis channel's subscribers); a dead node's members
leave their rooms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from chatproto import wire
from tests.redis_fixture import RedisServer
from tests.test_cluster import (
    Client,
    Node,
    departure,
    received,
    settled,
    until,
)

pytestmark = pytest.mark.redis
ROOM_CHANNEL = "chatproto:test:0:room:{}"
Start = Callable[..., Node]


@pytest.fixture
def nodes(redis: RedisServer) -> Iterator[Start]:
    """Start nodes (keywords: Node's); those still running are stopped at
    the end."""
    started: list[Node] = []

    def start(**settings: Any) -> Node:
        node = Node(redis, **settings)
        started.append(node)
        return node

    yield start
    pytest_twisted.blockon(
        gatherResults([n.stop() for n in started if n.cluster.running])
    )


def subscribers(redis: RedisServer, room: str) -> int:
    """How many nodes hear the room's channel (PUBSUB NUMSUB)."""
    answer = redis.cli("pubsub", "numsub", ROOM_CHANNEL.format(room)).split()
    return int(answer[-1])


async def answered(client: Client, command: bytes, end: bytes) -> bytes:
    """Send C{command}; what came up to C{end} (the client's output taken)."""
    client.take()
    client.send(command + b"\n")
    await until(lambda: client.transport.value().endswith(end))
    return client.take()


def names(*nicks: str) -> bytes:
    return wire.user_list(list(nicks), len(nicks))


def current(room: str) -> bytes:
    return wire.notice(wire.ROOM_CURRENT.format(room))


ROOMS_END = (wire.ROOMS_END + "\n").encode()


@pytest_twisted.ensureDeferred
async def test_a_room_spans_two_nodes_and_costs_nothing_where_it_has_no_member(
    redis: RedisServer, nodes: Start
) -> None:
    """Members on both nodes: /join lists every member in the order they
    joined, a line in the room reaches the other node's member and not the
    lobby's users; the node without members does not hear the room."""
    a, b, c = nodes(), nodes(), nodes()
    await a.ready()
    await b.ready()
    await c.ready()
    alice, ann = await a.user("alice"), await a.user("ann")
    bob, carl = await b.user("bob"), await c.user("carl")
    await settled(alice, ann, bob, via=carl)
    assert await answered(alice, b"/join #Salle", wire.RULE) == current(
        "salle"
    ) + names("alice")
    assert subscribers(redis, "salle") == 1
    assert await answered(bob, b"/join #salle", wire.RULE) == current("salle") + names(
        "alice", "bob"
    )
    assert subscribers(redis, "salle") == 2
    await received(alice, b"-#salle Connexion de bob\n")
    bob.send(b"bonjour la salle\n")
    await received(alice, b"-#salle bob: bonjour la salle\n")
    await settled(alice, ann, bob, via=carl)  # what was in flight arrived
    for lobby in (ann, carl):
        assert b"salle" not in lobby.transport.value()
    # Both nodes' members, in the order they joined; one more on node a.
    await answered(ann, b"/join #salle", wire.RULE)
    assert await answered(bob, b"/list", wire.RULE) == names("alice", "bob", "ann")
    assert subscribers(redis, "salle") == 2  # node a hears it once


@pytest_twisted.ensureDeferred
async def test_lobby_and_room_lines_reach_a_member_in_the_order_made(
    redis: RedisServer, nodes: Start
) -> None:
    """Lines of the lobby and of a room, made in one turn on one node, reach
    a member on the other node in the order they were made."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, ann, bob = await a.user("alice"), await a.user("ann"), await b.user("bob")
    await answered(alice, b"/join #r", wire.RULE)
    await answered(bob, b"/join #r", wire.RULE)
    await answered(bob, b"/join #accueil", wire.RULE)  # the lobby is current
    await received(alice, b"Connexion de bob\n")
    # One turn of node a: a lobby line, a room line, a lobby line.
    ann.send(b"one\n")
    alice.send(b"two\n")
    ann.send(b"three\n")
    got = await received(bob, b"-ann: three\n")
    one, two = got.index(b"-ann: one\n"), got.index(b"-#r alice: two\n")
    assert one < two < got.index(b"-ann: three\n")


@pytest_twisted.ensureDeferred
async def test_rooms_counts_the_cluster_and_max_rooms_holds_across_it(
    redis: RedisServer, nodes: Start
) -> None:
    """/rooms counts every node's members (the lobby every user); a new
    room past --max-rooms is refused whichever node asks."""
    a, b = nodes(max_rooms=2), nodes(max_rooms=2)
    await a.ready()
    await b.ready()
    alice, bob = await a.user("alice"), await b.user("bob")
    bea = await b.user("bea")
    await answered(alice, b"/join #x", wire.RULE)
    await answered(bob, b"/join #x", wire.RULE)
    await answered(bea, b"/join #y", wire.RULE)
    block = wire.rooms_block([("accueil", 3), ("x", 2), ("y", 1)])
    assert await answered(alice, b"/rooms", ROOMS_END) == block
    assert await answered(bea, b"/rooms", ROOMS_END) == block
    refusal = wire.notice(wire.TOO_MANY_ROOMS.format(2))
    assert await answered(alice, b"/join #z", b"\n") == refusal
    assert subscribers(redis, "z") == 0  # heard while it was tried only
    # The last member of node a leaves #x: node a stops hearing it.
    assert subscribers(redis, "x") == 2
    part = wire.notice(wire.ROOM_LEFT.format("x")) + current("accueil")
    assert await answered(alice, b"/part", current("accueil")) == part
    await received(bob, b"-#x D\xc3\xa9part de alice\n")
    assert subscribers(redis, "x") == 1
    # A room emptied across the cluster makes room for another.
    await answered(bob, b"/part #x", current("accueil"))
    assert await answered(alice, b"/join #z", wire.RULE) == current("z") + names(
        "alice"
    )
    block = wire.rooms_block([("accueil", 3), ("y", 1), ("z", 1)])
    assert await answered(bob, b"/rooms", ROOMS_END) == block


@pytest_twisted.ensureDeferred
async def test_a_topic_set_on_one_node_is_seen_on_the_other_and_goes_with_the_room(
    redis: RedisServer, nodes: Start
) -> None:
    """An operator on node a sets the topic; the member on node b gets the
    line, /topic and a later /join show it; once the room is empty on every
    node, it is gone."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, bob, bea = await a.user("alice"), await b.user("bob"), await b.user("bea")
    # alice is made an operator as /op would (the password is moderation's).
    a.factory.moderation.op_check.operating.add(alice.proto.session)
    await answered(alice, b"/join #t", wire.RULE)
    await answered(bob, b"/join #t", wire.RULE)
    alice.send(b"/topic le sujet\n")
    await received(bob, b"-#t Sujet : le sujet (par alice)\n")
    topic = wire.notice(wire.ROOM_TOPIC.format("t", "le sujet"))
    assert await answered(bob, b"/topic", b"\n") == topic
    assert (
        await answered(bea, b"/join #t", topic)
        == current("t") + names("alice", "bob", "bea") + topic
    )
    for user in (alice, bob, bea):
        await answered(user, b"/part #t", b"\n")
    await until(lambda: "chatproto:test:room:t:topic" not in redis.key_names())
    await answered(bob, b"/join #t", wire.RULE)
    none = wire.notice(wire.ROOM_NO_TOPIC.format("t"))
    assert await answered(bob, b"/topic", b"\n") == none


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_members_leave_their_rooms(
    redis: RedisServer, nodes: Start
) -> None:
    """A node that dies: once reaped, its members are out of their rooms
    (lists and counts right again, a room it alone had gone), as its
    nicknames are."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, ann, bob = await a.user("alice"), await a.user("ann"), await b.user("bob")
    await answered(alice, b"/join #both", wire.RULE)
    await answered(ann, b"/join #mine", wire.RULE)
    await answered(bob, b"/join #both", wire.RULE)
    a.crash()
    await received(bob, departure("alice"))
    await received(bob, departure("ann"))
    assert await answered(bob, b"/list", wire.RULE) == names("bob")
    block = wire.rooms_block([("accueil", 1), ("both", 1)])
    assert await answered(bob, b"/rooms", ROOMS_END) == block
    assert "chatproto:test:room:mine" not in redis.key_names()
    assert f"chatproto:test:node:{a.cluster.id}:rooms" not in redis.key_names()
    assert f"chatproto:test:node:{b.cluster.id}:rooms" in redis.key_names()


@pytest_twisted.ensureDeferred
async def test_room_history_and_search_on_a_node_read_the_rooms_lines(
    redis: RedisServer, nodes: Start, tmp_path: Path
) -> None:
    """A room's lines made on node a are kept with their room: /history and
    /search in the room on node b (with a store, and without) give them, the
    lobby's /history does not."""
    a = nodes(history=True, store=tmp_path / "a.sqlite")
    b = nodes(history=True, store=tmp_path / "b.sqlite")
    c = nodes(history=True)  # no store: read from Redis's window
    for node in (a, b, c):
        await node.ready()
    alice, bob = await a.user("alice"), await b.user("bob")
    cleo = await c.user("cleo")
    await answered(alice, b"/join #h", wire.RULE)
    alice.send(b"dans la salle\n")
    alice.send(b"/join #accueil\n")
    alice.send(b"dans le hall\n")
    await received(bob, b"-alice: dans le hall\n")
    for user in (bob, cleo):
        await answered(user, b"/join #h", wire.RULE)
        got = await answered(user, b"/history", b"\n--- fin de l'historique ---\n")
        assert b"-#h alice: dans la salle\n" in got
        assert b"dans le hall" not in got
        got = await answered(user, b"/search salle", wire.SEARCH_END)
        assert b"-#h alice: dans la salle\n" in got
        await answered(user, b"/join #accueil", wire.RULE)
        got = await answered(user, b"/history", b"\n--- fin de l'historique ---\n")
        assert b"dans le hall" in got
        assert b"dans la salle" not in got
