"""Moderation in cluster mode: two nodes in one process on a real
redis-server (tests/test_cluster.py's harness). A kick reaches a user of
the other node; a ban holds on every node, a node started later included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto import wire
from chatproto.cluster_messages import Kick
from chatproto.operators import make_hash
from chatproto.server import ChatServerProtocol
from tests.redis_fixture import RedisServer, free_port, running_redis
from tests.test_cluster import Client, Node, nodes, until
from tests.test_cluster_e2e import DEADLINE, ROOT, RULE, WELCOME, Line

__all__ = ["nodes"]  # the fixture, used by name (redis: conftest.py)

pytestmark = pytest.mark.redis

CHEAP = {"n": 16, "r": 1, "p": 1}


def moderated(node: Node) -> Node:
    """The node with alice as an operator, wired to its cluster as tap.py does."""
    moderation = node.factory.moderation
    moderation.op_check.operators = {"alice": make_hash("pw", **CHEAP)}
    moderation.cluster = node.cluster.moderation
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
    await said(alice, wire.notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes")))
    await said(
        bob, wire.notice(wire.BANNED_YOU.format("alice", "10 minutes") + " : spam")
    )
    await until(lambda: not bob.connected)
    refused = wire.notice(wire.BANNED.format("10 minutes"))
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


@pytest_twisted.ensureDeferred
async def test_a_ban_by_nickname_reaches_a_user_of_the_other_node(
    nodes: Callable[[], Node],
) -> None:
    one, two = moderated(nodes()), moderated(nodes())
    await one.ready()
    await two.ready()
    alice = await operator(one)
    bob = await user(two, "bob", "203.0.113.9")
    carol = await user(one, "carol", "198.51.100.3")
    dan = await user(two, "dan", "198.51.100.4")
    alice.send(b"/ban bob 10 spam\n")
    # bob's node resolves the address, bans it and answers alice
    await said(alice, wire.notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes")))
    told = (
        wire.notice(wire.BANNED_YOU.format("alice", "10 minutes") + " : spam")
        + wire.BYE
    )
    await said(bob, told)
    await until(lambda: not bob.connected)
    departure = "Déconnection de bob (banni par alice : spam)\n".encode()
    for client in (carol, dan, alice):
        await said(client, departure)
    await until(lambda: bool(one.factory.moderation.bans.active()))
    for node in (one, two):
        refused = connect(node, "203.0.113.9").take()
        assert refused == wire.notice(wire.BANNED.format("10 minutes"))
    assert [b.address for b in await one.cluster.registry.bans(0)] == ["203.0.113.9"]
    for client in (carol, dan, alice):
        assert client.transport.value().count(departure) == 1  # once
    alice.send(b"/ban zoe 10\n")  # nobody holds it
    await said(alice, wire.notice(wire.NO_SUCH_USER.format("zoe")))


@pytest_twisted.ensureDeferred
async def test_a_ban_whose_node_died_unanswered_is_said_unknown(
    nodes: Callable[[], Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """carol's ban is answered through Redis, and waits no more; bob's node
    hears bob's ban and dies before it answers."""
    from twisted.internet import reactor

    from chatproto import moderation

    monkeypatch.setattr(moderation, "ANSWER_WAIT", 0.5)
    one, two = moderated(nodes()), moderated(nodes())
    await one.ready()
    await two.ready()
    alice = await operator(one)
    await user(two, "bob", "203.0.113.9")
    await user(two, "carol", "203.0.113.10")
    alice.send(b"/ban carol 10\n")
    await said(alice, wire.notice(wire.BAN_DONE.format("203.0.113.10", "10 minutes")))

    def die(kick: Kick) -> None:
        reactor.callLater(0, two.crash)

    two.factory.moderation.heard_kick = die  # type: ignore[method-assign]
    alice.send(b"/ban bob 10\n")
    unknown = wire.notice(wire.BAN_UNANSWERED.format("bob"))
    await said(alice, unknown)
    # carol's wait, started before, ended with its answer
    assert alice.transport.value().count("Pas de réponse".encode()) == 1


@pytest_twisted.ensureDeferred
async def test_while_cut_off_bans_are_refused_and_back_the_node_holds_redis_s(
    nodes: Callable[[], Node], redis: RedisServer
) -> None:
    from chatproto.bans import Ban

    one = moderated(nodes())
    await one.ready()
    alice = await operator(one)
    alice.send(b"/ban 198.51.100.1 10\n")
    await said(alice, wire.notice(wire.BAN_DONE.format("198.51.100.1", "10 minutes")))
    redis.pause()
    try:
        await until(lambda: not one.cluster.accepting)
        alice.send(b"/ban 198.51.100.2 10\n")
        await said(alice, wire.notice(wire.BAN_UNAVAILABLE))
        alice.send(b"/unban 198.51.100.1\n")
        await said(alice, wire.notice(wire.UNBAN_UNAVAILABLE))
    finally:
        redis.resume()
    # What another node did while this one was away, unheard by it: it
    # lifted the ban, and made another. (redis-cli blocks the reactor:
    # this node reads the bans only after.)
    bans = one.cluster.registry.prefix + "bans"
    later = Ban("198.51.100.3", one.factory.clock.seconds() + 600, "zoe", "")
    redis.cli("HDEL", bans, "198.51.100.1")
    redis.cli("HSET", bans, "198.51.100.3", later.shared().decode())
    await one.ready()
    moderation = one.factory.moderation
    await until(
        lambda: [b.address for b in moderation.bans.active()] == [later.address]
    )
    assert connect(one, "198.51.100.1").take() == wire.WELCOME
    assert connect(one, "198.51.100.2").take() == wire.WELCOME
    refused = connect(one, "198.51.100.3").take()
    assert refused == wire.notice(wire.BANNED.format("10 minutes"))
    alice.send(b"/unban 198.51.100.3\n")
    await said(alice, wire.notice(wire.UNBAN_DONE.format("198.51.100.3")))
    assert redis.cli("HLEN", bans) == "0"


async def unbanned(node: Node) -> None:
    await until(lambda: not node.factory.moderation.bans.active())


@pytest_twisted.ensureDeferred
async def test_redis_forgets_the_bans_that_expired_when_they_are_read(
    nodes: Callable[[], Node],
) -> None:
    from chatproto.bans import Ban

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


# Two real `twistd chat --redis` processes


class Process:
    """A `twistd -n chat --redis --operators` process, its log in a file."""

    def __init__(self, directory: Path, redis: RedisServer, operators: Path) -> None:
        self.port = free_port()
        directory.mkdir()
        self.log = directory / "twistd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "twistd"),
                    "-n",
                    "--pidfile=",
                    "chat",
                    "--port",
                    f"tcp:{self.port}:interface=127.0.0.1",
                    "--redis",
                    redis.url,
                    "--cluster",
                    "moderation",
                    "--node-timeout",
                    "2",
                    "--redis-timeout",
                    "0.5",
                    "--ping-interval",
                    "0",
                    "--flood-rate",
                    "0",
                    "--operators",
                    str(operators),
                ],
                cwd=directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def register(self, nick: str, source: str | None = None) -> Line:
        """A registered client, from C{source} if given (the node may not
        have joined its cluster yet: it is tried again until it has)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                user = Line(self.port, source)
                break
            except OSError:
                assert self.proc.poll() is None, self.output()
                assert time.monotonic() < deadline, self.output()
                time.sleep(0.05)  # a real process: wait for it to listen
        user.until(WELCOME)
        while True:
            user.send(f"/pseudo {nick}\n".encode())
            if user.until(b"\n") == f"Bienvenue {nick}\n".encode():
                break
            assert time.monotonic() < deadline, f"{nick} never registered"
            time.sleep(0.1)  # the node joins its cluster
        user.until(RULE)
        user.until(RULE)
        return user

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.mark.slow
def test_two_processes_share_kicks_and_bans(tmp_path: Path) -> None:
    """All clients come from 127.0.0.1 here: bob is kicked across the nodes,
    then a ban of carol's address (everyone's) refuses newcomers on both."""
    operators = tmp_path / "ops"
    operators.write_text(f"alice:{make_hash('pw', **CHEAP)}\n")
    with running_redis(tmp_path) as server:
        one = Process(tmp_path / "one", server, operators)
        two = Process(tmp_path / "two", server, operators)
        try:
            alice = one.register("alice")
            bob = two.register("bob")
            alice.send(b"/op pw\n")
            alice.until("Vous êtes opérateur".encode())
            alice.send(b"/kick bob assez\n")
            assert bob.rest() == (
                "Vous avez été expulsé par alice : assez\nDeconnexion\n".encode()
            )
            alice.until_all(
                "Déconnection de bob (expulsé par alice : assez)\n".encode(),
                "bob est expulsé\n".encode(),
            )
            carol = two.register("carol")
            alice.send(b"/ban 127.0.0.1 3\n")
            alice.until(b"L'adresse 127.0.0.1 est bannie pour 3 minutes\n")
            assert carol.rest() == (
                "Vous avez été banni par alice pour 3 minutes\nDeconnexion\n".encode()
            )
            refusal = b"Votre adresse est bannie de ce chat pour encore 3 minutes\n"
            for node in (one, two):
                assert Line(node.port).rest() == refusal
            assert alice.count(b"Deconnexion") == 0  # the operator stays
        finally:
            one.stop()
            two.stop()
    for node in (one, two):
        assert "Traceback" not in node.output()


@pytest.mark.slow
def test_two_processes_ban_a_user_of_the_other_node_by_nickname(
    tmp_path: Path,
) -> None:
    """alice on node one bans bob, a raw TCP client of node two: each user
    comes from its own loopback address, so that the ban of bob's covers
    bob only."""
    operators = tmp_path / "ops"
    operators.write_text(f"alice:{make_hash('pw', **CHEAP)}\n")
    with running_redis(tmp_path) as server:
        one = Process(tmp_path / "one", server, operators)
        two = Process(tmp_path / "two", server, operators)
        try:
            alice = one.register("alice", "127.0.0.2")
            carol = one.register("carol", "127.0.0.4")
            dan = two.register("dan", "127.0.0.5")
            bob = two.register("bob", "127.0.0.3")
            carol.until(b"Connexion de bob")
            alice.send(b"/op pw\n")
            alice.until("Vous êtes opérateur".encode())
            alice.send(b"/ban bob 5 spam\n")
            assert bob.rest() == (
                "Vous avez été banni par alice pour 5 minutes : spam\n"
                "Deconnexion\n".encode()
            )
            departure = "Déconnection de bob (banni par alice : spam)\n".encode()
            # the answer of bob's node, which knew its address
            alice.until_all(
                departure, b"L'adresse 127.0.0.3 est bannie pour 5 minutes\n"
            )
            refusal = b"Votre adresse est bannie de ce chat pour encore 5 minutes\n"
            for node in (one, two):
                assert Line(node.port, "127.0.0.3").rest() == refusal
            for user in (carol, dan):
                user.until(departure)
            # lines said after the departure, on each node: nothing more of
            # bob came before them
            dan.send(b"fin\n")
            for user in (alice, carol):
                user.until(b"-dan: fin\n")
            carol.send(b"fin aussi\n")
            dan.until(b"-carol: fin aussi\n")
            for user in (alice, carol, dan):
                assert user.count(departure) == 1
                assert user.count(b"bob") == 2  # its arrival, its departure
            assert alice.count("Pas de réponse".encode()) == 0
            for user in (carol, dan):
                assert user.count(b"Deconnexion") == 0  # only bob was banned
        finally:
            one.stop()
            two.stop()
    for node in (one, two):
        assert "Traceback" not in node.output()
