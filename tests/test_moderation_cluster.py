"""Moderation in cluster mode: two nodes in one process on a real
redis-server (tests/test_cluster.py's harness). A kick reaches a user of
the other node; a ban holds on every node, a node started later included."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto import wire
from chatproto.moderation import make_hash
from chatproto.server import ChatServerProtocol
from tests.test_cluster import Client, Node, nodes, redis, until

__all__ = ["nodes", "redis"]  # the fixtures, used by name

pytestmark = pytest.mark.redis

CHEAP = {"n": 16, "r": 1, "p": 1}


def moderated(node: Node) -> Node:
    """The node with alice as an operator, wired to its cluster as tap.py does."""
    moderation = node.factory.moderation
    moderation.operators = {"alice": make_hash("pw", **CHEAP)}
    moderation.cluster = node.cluster
    return node


class From(Client):
    """A connection to a node from C{host}."""

    def __init__(self, proto: ChatServerProtocol, host: str) -> None:
        self.proto = proto
        peer = IPv4Address("TCP", host, 1)
        self.transport = StringTransportWithDisconnection(peerAddress=peer)
        self.transport.protocol = proto
        proto.makeConnection(self.transport)


def connect(node: Node, host: str) -> Client:
    proto = node.factory.buildProtocol(IPv4Address("TCP", host, 1))
    assert isinstance(proto, ChatServerProtocol)
    return From(proto, host)


async def user(node: Node, nick: str, host: str) -> Client:
    client = connect(node, host)
    assert client.take() == wire.WELCOME
    client.send(f"/pseudo {nick}\n".encode())
    await until(lambda: client.transport.value().endswith(b"\n" + wire.RULE))
    assert f"Bienvenue {nick}\n".encode() in client.take()
    return client


async def operator(node: Node) -> Client:
    alice = await user(node, "alice", "192.0.2.1")
    alice.send(b"/op pw\n")
    assert alice.take() == wire.notice(wire.OP_GRANTED)
    return alice


async def said(client: Client, needle: bytes) -> None:
    await until(lambda: needle in client.transport.value())


@pytest_twisted.ensureDeferred
async def test_a_kick_reaches_a_user_of_the_other_node(
    nodes: Callable[[], Node],
) -> None:
    one, two = moderated(nodes()), moderated(nodes())
    await one.ready()
    await two.ready()
    alice = await operator(one)
    bob = await user(two, "bob", "198.51.100.2")
    carol = await user(one, "carol", "198.51.100.3")
    alice.send(b"/kick bob hors sujet\n")
    await said(alice, wire.notice(wire.KICK_DONE.format("bob")))
    told = wire.notice(wire.KICKED_YOU.format("alice") + " : hors sujet") + wire.BYE
    await said(bob, told)
    await until(lambda: not bob.connected)
    departure = "Déconnection de bob (expulsé par alice : hors sujet)\n".encode()
    await said(carol, departure)
    assert carol.transport.value().count(b"bob") == 1  # once, with the reason
    alice.send(b"/kick bob\n")  # gone everywhere now
    await said(alice, wire.notice(wire.NO_SUCH_USER.format("bob")))


@pytest_twisted.ensureDeferred
async def test_a_ban_holds_on_every_node_a_later_one_included(
    nodes: Callable[[], Node],
) -> None:
    one, two = moderated(nodes()), moderated(nodes())
    await one.ready()
    await two.ready()
    alice = await operator(one)
    bob = await user(two, "bob", "203.0.113.9")
    alice.send(b"/ban 203.0.113.9 10 spam\n")
    await said(alice, wire.notice(wire.BAN_DONE.format("203.0.113.9", 10)))
    await said(bob, wire.notice(wire.BANNED_YOU.format("alice", 10) + " : spam"))
    await until(lambda: not bob.connected)
    refused = wire.notice(wire.BANNED.format(10))
    assert connect(two, "203.0.113.9").take() == refused
    three = moderated(nodes())
    await three.ready()
    await until(lambda: bool(three.factory.moderation.bans.active()))
    assert connect(three, "203.0.113.9").take() == refused
    alice.send(b"/unban 203.0.113.9\n")
    await said(alice, wire.notice(wire.UNBAN_DONE.format("203.0.113.9")))
    for node in (two, three):
        await unbanned(node)
        assert connect(node, "203.0.113.9").take() == wire.WELCOME


async def unbanned(node: Node) -> None:
    await until(lambda: not node.factory.moderation.bans.active())


@pytest_twisted.ensureDeferred
async def test_redis_forgets_the_bans_that_expired_when_they_are_read(
    nodes: Callable[[], Node],
) -> None:
    from chatproto.moderation import Ban

    one = moderated(nodes())
    await one.ready()
    registry = one.cluster.registry
    now = one.factory.clock.seconds()
    await registry.ban(Ban("198.51.100.1", now + 60, "alice", "a\tb"))
    await registry.ban(Ban("198.51.100.2", now + 3600, "alice", ""))
    both = sorted(await registry.bans(now), key=lambda b: b.address)
    assert [(b.address, b.reason) for b in both] == [
        ("198.51.100.1", "a\tb"),
        ("198.51.100.2", ""),
    ]
    [kept] = await registry.bans(now + 61)
    assert (kept.address, kept.reason) == ("198.51.100.2", "")
    left = await registry.commands.call("hkeys", registry.prefix + "bans")
    assert [k.decode() if isinstance(k, bytes) else k for k in left] == ["198.51.100.2"]
    assert kept.until == now + 3600
