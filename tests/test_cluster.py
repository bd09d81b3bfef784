"""Cluster nodes in one process: real ChatFactory and ClusterNode objects on a
real redis-server and the test's reactor, with in-memory client transports.

Lines between nodes go through Redis; a node "dies" by dropping its Redis
connections without a word, as a killed process would.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto import wire
from chatproto.cluster import ClusterNode
from chatproto.config import ClusterConfig, RedisAddress, ServerConfig
from chatproto.server import ChatFactory, ChatServerProtocol
from chatproto.store import Store
from tests.redis_fixture import RedisServer

pytestmark = pytest.mark.redis
r: Any = reactor
NODE_TIMEOUT = 1.0
UNAVAILABLE = wire.notice(wire.UNAVAILABLE)
_ports = itertools.count(40000)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await deferLater(r, 0.01)


class Client:
    """One connection to a node, in memory."""

    def __init__(self, proto: ChatServerProtocol) -> None:
        self.proto = proto
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = proto
        proto.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    @property
    def connected(self) -> bool:
        return bool(self.transport.connected)


class Node:
    """A server process of the cluster "test", without its sockets."""

    def __init__(
        self,
        redis: RedisServer,
        history: bool = False,
        store: Path | None = None,
        **settings: Any,
    ) -> None:
        config = ClusterConfig(
            RedisAddress.parse(redis.url),
            "test",
            node_timeout=NODE_TIMEOUT,
            redis_timeout=0.3,
        )
        self.factory = ChatFactory(
            ServerConfig(
                ping_interval=0, registration_timeout=0, flood_rate=0, **settings
            ),
            clock=r,
        )
        # Its own store (a file), fed from Redis, as tap.py makes it.
        self.store = None
        if store is not None:
            self.store = Store.open(str(store), r, r)
            self.store.start()
        self.cluster = ClusterNode(
            config,
            self.factory,
            clock=r,
            history=self.factory.config if history else None,
            store=None if self.store is None else self.store.history,
        )
        # As tap.py wires it.
        self.factory.room.registry = self.cluster.nicknames
        self.factory.room.relay = self.cluster.relay
        self.factory.rooms.attach(self.cluster.rooms)
        if self.cluster.history is not None:
            self.factory.room.history = self.cluster.history
        self.cluster.startService()

    async def ready(self) -> None:
        await until(lambda: self.cluster.accepting)

    def connect(self) -> Client:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        assert isinstance(proto, ChatServerProtocol)
        client = Client(proto)
        assert client.take() == wire.WELCOME
        return client

    async def user(self, nick: str) -> Client:
        """A registered client, its output taken."""
        client = self.connect()
        client.send(f"/pseudo {nick}\n".encode())
        await until(lambda: client.transport.value().endswith(b"\n" + wire.RULE))
        assert f"Bienvenue {nick}\n".encode() in client.take()
        return client

    def crash(self) -> None:
        """Die as kill -9 would: the connections to Redis drop, nothing is
        said, the lease is no longer renewed."""
        cluster = self.cluster
        cluster.heartbeat.stop()
        cluster.running = False
        for connection in (cluster.commands, cluster.subscription):
            connection.close()  # the kernel closes a killed process's sockets

    def stop(self) -> Any:
        """Stop as twistd does: say goodbye to the users, then leave (then
        close the store)."""
        self.factory.shutdown()
        d = self.cluster.stopService()
        if self.store is not None:
            d.addCallback(lambda _: self.close_store())
        return d

    def close_store(self) -> Any:
        assert self.store is not None
        return self.store.close()


@pytest.fixture
def nodes(redis: RedisServer) -> Iterator[Callable[[], Node]]:
    """Start nodes; those still running are stopped at the end."""
    started: list[Node] = []

    def start() -> Node:
        node = Node(redis)
        started.append(node)
        return node

    yield start
    pytest_twisted.blockon(
        gatherResults([n.stop() for n in started if n.cluster.running])
    )


async def received(client: Client, needle: bytes) -> bytes:
    """Wait until the client got C{needle}; everything it got (since the
    last take)."""
    await until(lambda: needle in client.transport.value())
    return client.transport.value()


def departure(nick: str) -> bytes:
    return f"-Déconnection de {nick}\n".encode()


async def settled(*clients: Client, via: Client) -> None:
    """A public line from C{via} reached every client: whatever was in flight
    from any node before it has arrived (Redis keeps the order)."""
    marker = f"marker{next(_ports)}".encode()
    via.send(marker + b"\n")
    for client in clients:
        if client is via:
            continue  # nothing comes back to the sender
        await until(lambda c=client: marker in c.transport.value())  # type: ignore[misc]


@pytest_twisted.ensureDeferred
async def test_a_public_line_reaches_every_node_once(
    redis: RedisServer, nodes: Callable[[], Node]
) -> None:
    """The sender's node delivers without waiting on Redis (frozen here);
    another node gets it through Redis; nobody gets it twice, the sender not
    at all."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, ann, bob = await a.user("alice"), await a.user("ann"), await b.user("bob")
    await until(lambda: b"Connexion de bob" in ann.transport.value())
    redis.pause()
    try:
        alice.send(b"bonjour\n")
        await received(ann, b"-alice: bonjour\n")
    finally:
        redis.resume()
    await received(bob, b"-alice: bonjour\n")
    await settled(alice, ann, via=bob)
    for client, count in ((alice, 0), (ann, 1), (bob, 1)):
        assert client.transport.value().count(b"bonjour") == count


@pytest_twisted.ensureDeferred
async def test_a_private_line_reaches_its_target_on_another_node(
    nodes: Callable[[], Node],
) -> None:
    """msg finds the target on whichever node holds it, in any case; a
    nickname nobody holds gets the usual error."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, ann, bob = await a.user("alice"), await a.user("ann"), await b.user("Bob")
    alice.send(b"msg BOB un secret\n")
    got = await received(bob, "privé de alice: un secret\n".encode())
    assert got.count(b"un secret") == 1
    alice.send(b"msg nobody hello\n")
    assert (await received(alice, "connecté".encode())).endswith(
        "Erreur : nobody n'est pas connecté\n".encode()
    )
    await settled(ann, bob, via=alice)
    assert b"secret" not in ann.transport.value()
    assert bob.transport.value().count(b"secret") == 1


@pytest_twisted.ensureDeferred
async def test_the_list_shows_the_cluster_and_a_nickname_is_unique_in_it(
    nodes: Callable[[], Node],
) -> None:
    """/list shows the users of every node in registration order; a nickname
    held on another node, in any case, gets the Ruby client's line."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice = await a.user("alice")
    await b.user("Bob")
    await a.user("carol")
    alice.send(b"/list\n")
    block = wire.RULE + wire.LIST_TITLE + b"=>alice\n=>Bob\n=>carol\n" + wire.RULE
    assert (await received(alice, block)).endswith(block)
    other = a.connect()
    other.send(b"/pseudo bob\n")
    assert await received(other, wire.TAKEN) == wire.TAKEN


@pytest_twisted.ensureDeferred
async def test_a_departure_is_announced_once_on_every_node(
    nodes: Callable[[], Node],
) -> None:
    """A user who quits and one whose connection drops: each departure once
    everywhere; the nickname is free again on any node."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, ann, bob = await a.user("alice"), await a.user("ann"), await b.user("bob")
    watcher = await a.user("watcher")
    alice.send(b"/quit\n")
    ann.transport.loseConnection()
    await received(bob, departure("ann"))
    await settled(bob, via=watcher)
    for client in (bob, watcher):
        assert client.transport.value().count(departure("alice")) == 1
        assert client.transport.value().count(departure("ann")) == 1
    again = await b.user("alice")
    again.send(b"/list\n")
    block = b"=>bob\n=>watcher\n=>alice\n" + wire.RULE
    assert (await received(again, block)).endswith(block)


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_users_are_announced_gone_once_within_the_bound(
    nodes: Callable[[], Node],
) -> None:
    """A node dies: within the node timeout the survivors free its users'
    nicknames, and exactly one survivor announces each departure."""
    a, b, c = nodes(), nodes(), nodes()
    for node in (a, b, c):
        await node.ready()
    alice, bob = await a.user("alice"), await b.user("bob")
    await c.user("carol")
    await c.user("cyril")
    c.crash()
    died = time.monotonic()
    await received(alice, departure("cyril"))
    await received(bob, departure("cyril"))
    assert time.monotonic() - died < NODE_TIMEOUT + 0.5
    await deferLater(r, 2 * c.cluster.config.tick)  # a second reap finds nothing
    await settled(alice, bob, via=alice)
    await settled(alice, bob, via=bob)
    for client in (alice, bob):
        assert client.transport.value().count(departure("carol")) == 1
        assert client.transport.value().count(departure("cyril")) == 1
    await a.user("carol")


@pytest_twisted.ensureDeferred
async def test_without_redis_a_node_refuses_registrations_and_chats_locally(
    redis: RedisServer, nodes: Callable[[], Node]
) -> None:
    """Redis stops: new nicknames are refused with a French line (not one the
    Ruby client exits on), the users of a node keep chatting there. Redis
    returns empty: the users are registered again before new ones, and a
    departure during the outage reaches the other node once."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, ann, bob = await a.user("alice"), await a.user("ann"), await b.user("bob")
    redis.stop()
    await until(lambda: not a.cluster.accepting and not b.cluster.accepting)
    dave = a.connect()
    dave.send(b"/pseudo dave\n")
    assert await received(dave, UNAVAILABLE) == UNAVAILABLE
    assert UNAVAILABLE.rstrip(b"\n") not in wire.CLIENT_EXITS
    alice.send(b"toujours la\n")
    await received(ann, b"-alice: toujours la\n")
    ann.send(b"/quit\n")
    await received(alice, departure("ann"))
    alice.send(b"/list\n")
    assert (await received(alice, wire.RULE + wire.LIST_TITLE)).endswith(
        b"=>alice\n" + wire.RULE
    )

    redis.start()
    await a.ready()
    await b.ready()
    await received(bob, departure("ann"))
    dave.send(b"dave\n")
    await received(dave, b"Bienvenue dave\n")
    bob.send(b"/list\n")
    listed = await received(bob, b"\n" + wire.RULE)
    assert sorted(line for line in listed.split(b"\n") if line.startswith(b"=>")) == [
        b"=>alice",
        b"=>bob",
        b"=>dave",
    ]
    alice.send(b"de retour\n")
    await received(bob, b"-alice: de retour\n")
    await settled(alice, bob, via=dave)
    assert bob.transport.value().count(departure("ann")) == 1
    assert alice.transport.value().count(departure("ann")) == 1


@pytest_twisted.ensureDeferred
async def test_a_nickname_taken_during_an_outage_is_told_and_disconnected(
    redis: RedisServer, nodes: Callable[[], Node]
) -> None:
    """Redis lost its data and another node gave alice's nickname away before
    alice's node came back: she is told, gets Deconnexion, and her departure
    is announced on her node only (elsewhere, alice is somebody else)."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    alice, ann, bob = await a.user("alice"), await a.user("ann"), await b.user("bob")
    a.cluster.heartbeat.stop()  # node A does not notice until told
    redis.cli("FLUSHALL")
    other = b.connect()
    other.send(b"/pseudo\n")
    deadline = time.monotonic() + 5
    while b"Bienvenue ALICE" not in other.transport.value():
        assert time.monotonic() < deadline
        other.send(b"ALICE\n")  # refused until B registered bob again
        await deferLater(r, 0.05)
    a.cluster.heartbeat.start(a.cluster.config.tick)
    lost = await received(alice, wire.BYE)
    assert lost.endswith(
        wire.notice(
            "Votre pseudo alice a été pris par quelqu'un d'autre pendant une "
            "coupure du serveur : reconnectez-vous avec un autre pseudo"
        )
        + wire.BYE
    )
    assert not alice.connected
    assert a.factory.metrics.departures["cluster"] == 1  # chatproto/metrics
    await received(ann, departure("alice"))
    await settled(ann, bob, other, via=ann)
    assert ann.transport.value().count(departure("alice")) == 1
    assert departure("alice") not in bob.take() + other.take()
    ann.send(b"/list\n")
    listed = await received(ann, b"\n" + wire.RULE)
    assert sorted(line for line in listed.split(b"\n") if line.startswith(b"=>")) == [
        b"=>ALICE",
        b"=>ann",
        b"=>bob",
    ]


@pytest_twisted.ensureDeferred
async def test_a_stopping_node_announces_its_users_and_leaves_no_key(
    redis: RedisServer, nodes: Callable[[], Node]
) -> None:
    """A node that stops tells the other nodes its users left, and gives its
    keys back; when everyone left, only the cluster's epoch remains."""
    a, b = nodes(), nodes()
    await a.ready()
    await b.ready()
    await a.user("alice")
    await a.user("ann")
    bob, bea = await b.user("bob"), await b.user("bea")
    await a.stop()
    await received(bob, departure("ann"))
    await settled(bob, via=bea)
    assert bob.transport.value().count(departure("alice")) == 1
    assert bob.transport.value().count(departure("ann")) == 1
    bob.send(b"/quit\n")
    bea.send(b"/quit\n")
    await until(lambda: "chatproto:test:users" not in redis.key_names())
    await b.stop()
    assert redis.key_names() == ["chatproto:test:epoch"]
