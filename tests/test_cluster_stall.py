"""A cluster node's states, and its decisions after a stall and while it
joins, over a fake clock: the real ClusterNode, RedisRegistry and
ChatFactory, with a double of the Redis connections whose answers the test
gives (or holds back).

A stall is the clock jumping without its timers running: on waking, the
reactor may read a client's lines or a message from Redis before it runs the
timers that fell due meanwhile (the next advance(0) runs them).
"""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, formatEvent
from twisted.python.failure import Failure

from chatproto import cluster_membership as membership_module
from chatproto import cluster_roles as roles_module
from chatproto import wire
from chatproto._redis import MAX_RETRY_DELAY
from chatproto.cluster import ClusterNode
from chatproto.cluster_membership import (
    TRANSITIONS,
    ImpossibleTransition,
    Membership,
    NodeState,
    grace,
)
from chatproto.cluster_redis import (
    CLAIM,
    LEAVE,
    NAMES,
    REAP,
    RELEASE,
    RENEW,
    SYNC,
    WHISPER,
    RedisRegistry,
)
from chatproto.config import ClusterConfig, RedisAddress, ServerConfig
from chatproto.history import KEEP
from chatproto.registry import ClusterUnreachable
from chatproto.server import ChatFactory, ChatServerProtocol
from chatproto.testing import START, Client, RecordingTransport

CONFIG = ClusterConfig(
    RedisAddress("127.0.0.1"), "test", node_timeout=4.0, redis_timeout=1.0
)  # a heartbeat every second, a lease of 3 s
CLUSTER_LOST = wire.notice(wire.CLUSTER_LOST)
UNAVAILABLE = wire.notice(wire.UNAVAILABLE)
PUBLIC = b"chatproto:test:0:all"
NODE = b"chatproto:test:0:node:here"


class FakeRedis:
    """The node's command connection: each script gets its usual answer at
    once, but those in C{held} wait for the test's L{answer}."""

    address = CONFIG.redis
    connected = True

    def __init__(self) -> None:
        self.first_connected: Deferred[None] = succeed(None)
        self.calls: list[tuple[bytes, tuple[Any, ...]]] = []
        self.held: set[bytes] = set()
        self.waiting: list[tuple[bytes, Deferred[Any]]] = []
        self.published: list[bytes] = []
        self.sent: list[tuple[bytes, bytes]] = []  # (channel, payload)
        self.answers: dict[bytes, Any] = {
            SYNC: [b"E1", [], [], [], 0, 0],
            RENEW: 1,
            CLAIM: 1,
            RELEASE: 1,
            NAMES: [0, []],
            WHISPER: 1,
            KEEP: 0,  # the newest line's stamp
        }

    def eval(self, script: bytes, args: Any) -> Deferred[Any]:
        self.calls.append((script, tuple(args)))
        if script in self.held:
            d: Deferred[Any] = Deferred()
            self.waiting.append((script, d))
            return d
        answer = self.answers.get(script, [])
        if callable(answer):
            answer = answer(args)
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)

    def answer(self, script: bytes, result: Any) -> None:
        """Answer the oldest call of C{script} that waits."""
        for entry in self.waiting:
            if entry[0] == script:
                self.waiting.remove(entry)
                entry[1].callback(result)
                return
        raise AssertionError("no such call waits")

    def count(self, script: bytes) -> int:
        return sum(1 for called, _ in self.calls if called == script)

    def last(self, script: bytes) -> tuple[Any, ...]:
        """The arguments of the last call of C{script}: prefix, node..."""
        return self.arguments(script)[-1]

    def arguments(self, script: bytes) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == script]

    def call(self, command: str, *args: Any) -> Deferred[Any]:
        assert command == "publish"
        self.published.append(args[1])
        self.sent.append((args[0], args[1]))
        return succeed(1)

    def start(self) -> None:
        pass

    def close(self) -> Deferred[None]:
        return succeed(None)


def known_and_users(sync: tuple[Any, ...]) -> tuple[Any, ...]:
    """Of the arguments of a call of SYNC: the epoch the node knows, then
    its users (key, Nick...)."""
    return (sync[4], *sync[7:])


class FakeSubscription:
    """The node's subscription: the test says when it is up; the channels
    it hears besides the node's own (rooms')."""

    listening = False

    def __init__(self) -> None:
        self.channels: list[bytes] = []

    def subscribe(self, channel: bytes) -> Deferred[None]:
        self.channels.append(channel)
        return succeed(None)

    def unsubscribe(self, channel: bytes) -> Deferred[None]:
        self.channels.remove(channel)
        return succeed(None)

    def start(self) -> None:
        pass

    def close(self) -> Deferred[None]:
        return succeed(None)


class Cluster:
    """One node ("here") of the cluster "test", and its users."""

    def __init__(self, joined: bool = True, history: bool = False) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.redis = FakeRedis()
        self.subscription = FakeSubscription()

        def connect(node: ClusterNode) -> Any:
            registry = RedisRegistry(
                self.redis,  # type: ignore[arg-type]
                CONFIG.name,
                node.id,
                CONFIG.lease,
                grace(CONFIG),
            )
            return self.redis, self.subscription, registry

        self.factory = ChatFactory(
            ServerConfig(
                ping_interval=0, registration_timeout=0, flood_rate=0, batch_delay=0
            ),
            clock=self.clock,
        )
        self.node = ClusterNode(
            CONFIG,
            self.factory,
            clock=self.clock,
            node_id="here",
            connect=connect,
            history=self.factory.config if history else None,
        )
        # As tap.py wires it.
        self.factory.room.registry = self.node.nicknames
        self.factory.room.relay = self.node.relay
        self.factory.rooms.attach(self.node.rooms)
        if self.node.history is not None:
            self.factory.room.history = self.node.history
        self.node.startService()
        self._port = 40000
        if joined:
            self.subscribed()

    def subscribed(self) -> None:
        """The subscription to the node's channels is up: the node joins."""
        self.subscription.listening = True
        self.node.listening(True, "")

    def connect(self) -> Client:
        self._port += 1
        peer = IPv4Address("TCP", "192.0.2.1", self._port)
        proto = self.factory.buildProtocol(peer)
        assert isinstance(proto, ChatServerProtocol)
        transport = RecordingTransport(peerAddress=peer)
        transport.protocol = proto
        proto.makeConnection(transport)
        client = Client(proto, transport, self.clock)
        assert client.take() == wire.WELCOME
        return client

    def user(self, nick: str) -> Client:
        client = self.connect()
        client.send(f"/pseudo {nick}\n".encode())
        assert f"Bienvenue {nick}\n".encode() in client.take()
        return client

    def heard(self, message: bytes) -> None:
        """A message on the public channel, from another node."""
        self.node.heard(PUBLIC, message)

    def stall(self, seconds: float) -> None:
        """The process was stopped this long: the time jumps, and the timers
        due meanwhile have not run yet."""
        self.clock.rightNow += seconds

    def departure(self, nick: str) -> bytes:
        return wire.departure_prefix(self.factory.stamp()) + nick.encode() + b"\n"


@pytest.mark.parametrize("first", ["a message", "a client line", "the heartbeat"])
def test_a_node_reaped_during_a_stall_drops_its_users_without_a_departure_line(
    first: str,
) -> None:
    """Whatever the reactor hands over first on waking, the node asks Redis
    before it delivers or relays anything. Reaped: each user gets one notice
    and Deconnexion, nobody is told of a departure (the reaper announced
    them, once), nothing typed during the stall is published, and the node
    joins again with no users."""
    cluster = Cluster()
    alice, ann = cluster.user("alice"), cluster.user("ann")
    redis = cluster.redis
    redis.published.clear()  # the join notices
    redis.held.add(RENEW)
    renewals = redis.count(RENEW)
    cluster.stall(CONFIG.node_timeout + 4)
    reaped = b"there@here " + cluster.departure("ann")
    events = {
        "a message": lambda: cluster.heard(reaped),
        "a client line": lambda: alice.send(b"pendant la pause\n"),
        "the heartbeat": lambda: cluster.clock.advance(0),
    }
    events.pop(first)()
    for event in events.values():
        event()
    assert redis.count(RENEW) == renewals + 1  # one check, nothing else yet
    assert redis.published == []
    redis.answer(RENEW, 0)  # reaped

    for user in (alice, ann):
        got = user.take()
        assert got.endswith(CLUSTER_LOST + wire.BYE)
        assert got.count(CLUSTER_LOST) == 1
        assert "Déconnection".encode() not in got
        assert not user.connected
    assert cluster.factory.metrics.departures["cluster"] == 2  # chatproto/metrics
    assert redis.published == []
    # A new node, with no users and no known epoch.
    assert known_and_users(redis.last(SYNC)) == ("",)
    assert cluster.node.accepting
    assert cluster.clock.getDelayedCalls() == [cluster.node.heartbeat.call]


@pytest.mark.parametrize("renewal", [1, 2])
def test_a_node_not_reaped_during_a_stall_delivers_and_relays_what_waited(
    renewal: int,
) -> None:
    """The stall outlasted the lease but no node reaped this one: what came
    in and went out meanwhile goes on, once, and nobody is told a thing.
    (2: every node stalled, and this renewal was the first after it.)"""
    cluster = Cluster()
    alice, ann = cluster.user("alice"), cluster.user("ann")
    alice.take()
    redis = cluster.redis
    redis.published.clear()  # the join notices
    redis.held.add(RENEW)
    cluster.stall(CONFIG.node_timeout + 4)
    cluster.heard(b"there [1.2.3]-bob: bonjour\n")
    alice.send(b"pendant la pause\n")
    alice.send(b"msg bob psst\n")
    newcomer = cluster.connect()
    newcomer.send(b"/pseudo carol\n")
    assert alice.take() == b""
    assert redis.published == []
    assert newcomer.take() == b""
    redis.answer(RENEW, renewal)  # renewed: not reaped

    assert cluster.node.state is NodeState.SERVING
    assert alice.take().startswith(b"[1.2.3]-bob: bonjour\n")
    assert ann.take().count(b"-alice: pendant la pause\n") == 1
    stamp = cluster.factory.stamp().encode()
    assert redis.published == [
        b"here " + stamp + b"-alice: pendant la pause\n",
        b"here " + stamp + b"-Connexion de carol\n",
    ]
    assert b"Bienvenue carol\n" in newcomer.take()
    assert alice.connected and ann.connected


def test_a_reapers_announcement_of_this_nodes_users_is_never_delivered() -> None:
    """A departure published by the node that reaped this one is not for this
    node's users (they are told by their own node); the departure of
    another dead node's user is."""
    cluster = Cluster()
    alice = cluster.user("alice")
    cluster.heard(b"there@here " + cluster.departure("alice"))
    assert alice.take() == b""
    cluster.heard(b"there@third " + cluster.departure("dave"))
    assert alice.take() == cluster.departure("dave")


def test_a_stall_shorter_than_the_lease_asks_redis_nothing() -> None:
    """Lines from Redis are delivered at once after a short stall."""
    cluster = Cluster()
    alice = cluster.user("alice")
    renewals = cluster.redis.count(RENEW)
    cluster.stall(CONFIG.lease - 0.5)
    cluster.heard(b"there [1.2.3]-bob: bonjour\n")
    assert alice.take() == b"[1.2.3]-bob: bonjour\n"
    assert cluster.redis.count(RENEW) == renewals + 1  # the heartbeat's


def test_a_node_cut_off_past_its_lease_finds_it_was_reaped_when_it_syncs() -> None:
    """Redis could not say whether the node was reaped; when it answers
    again, registering the users again finds the node reaped in the epoch it
    knew: the users are dropped rather than silently brought back."""
    cluster = Cluster()
    alice = cluster.user("alice")
    redis = cluster.redis
    redis.answers[RENEW] = ClusterUnreachable("Redis did not answer in time")
    redis.answers[SYNC] = ClusterUnreachable("Redis did not answer in time")
    cluster.clock.advance(CONFIG.tick)
    assert not cluster.node.accepting
    assert alice.take() == b""
    redis.answers[SYNC] = lambda args: [b"E1", [], [], [], int(args[4] == "E1"), 0]
    redis.answers[RENEW] = 1
    syncs = redis.count(SYNC)
    cluster.clock.advance(CONFIG.tick)
    assert alice.take().endswith(CLUSTER_LOST + wire.BYE)  # reaped in E1
    assert [known_and_users(args) for args in redis.arguments(SYNC)[syncs:]] == [
        ("E1", "alice", "alice"),
        ("",),  # then a new node, with no users
    ]
    assert cluster.node.accepting


def test_a_claim_made_while_the_node_joins_waits_for_the_join() -> None:
    """A node listens before it has joined: a registration then is answered
    once it has, not refused."""
    cluster = Cluster(joined=False)
    early = cluster.connect()
    early.send(b"/pseudo alice\n")
    cluster.clock.advance(CONFIG.redis_timeout / 2)
    assert early.take() == b""
    cluster.subscribed()
    assert b"Bienvenue alice\n" in early.take()


def test_a_claim_waits_for_the_join_no_longer_than_the_redis_timeout() -> None:
    cluster = Cluster(joined=False)
    early = cluster.connect()
    early.send(b"/pseudo alice\n")
    cluster.clock.advance(CONFIG.redis_timeout)
    assert early.take() == UNAVAILABLE
    early.send(b"alice\n")
    cluster.subscribed()
    assert b"Bienvenue alice\n" in early.take()
    assert cluster.clock.getDelayedCalls() == [cluster.node.heartbeat.call]


def test_a_redis_time_limit_counts_the_seconds_the_process_ran() -> None:
    """A call's timer that fires late after a stall gives Redis the time limit
    again (its answer may be waiting to be read); one that fires on time
    gives up a reactor turn later, and says so; a process late every time
    gives up all the same, after two more time limits."""
    from chatproto._redis import within

    clock = Clock()
    expired: list[str] = []
    answered: Deferred[str] = Deferred()
    within(answered, 1.0, clock, lambda: expired.append("answered"))
    clock.advance(0.9)
    clock.rightNow += 0.2  # SIGSTOP, just as the time limit ran out
    clock.advance(0)
    assert not answered.called
    answered.callback("OK")
    assert (answered.result, expired) == ("OK", [])
    assert clock.getDelayedCalls() == []

    hung: Deferred[str] = Deferred()
    within(hung, 1.0, clock, lambda: expired.append("hung"))
    clock.advance(1.0)  # and the turn after, when a readable reply was read
    assert expired == ["hung"]
    failures: list[Failure] = []
    hung.addErrback(failures.append)
    assert [f.type for f in failures] == [CancelledError]

    late: Deferred[str] = Deferred()
    within(late, 1.0, clock, lambda: expired.append("late"))
    for _ in range(3):
        clock.rightNow += 1.5
        clock.advance(0)
    clock.advance(0)
    assert expired == ["hung", "late"]
    late.addErrback(lambda f: None)


def test_a_node_whose_check_gets_no_answer_is_cut_off_and_delivers_nothing_twice() -> (
    None
):
    """Redis does not answer the check: the node is cut off (as when Redis is
    away), the message that waited is delivered here once, the line typed
    meanwhile stays here, and the node asks once, not once per message."""
    cluster = Cluster()
    alice, ann = cluster.user("alice"), cluster.user("ann")
    alice.take()
    redis = cluster.redis
    redis.published.clear()
    redis.held.add(RENEW)
    renewals = redis.count(RENEW)
    cluster.stall(CONFIG.node_timeout + 4)
    cluster.heard(b"there [1.2.3]-bob: bonjour\n")
    cluster.heard(b"there [1.2.3]-bob: encore\n")
    ann.send(b"pendant la pause\n")
    away = ClusterUnreachable("Redis did not answer in time")
    redis.answers[SYNC] = away  # and it stays away
    redis.waiting[0][1].errback(away)
    assert redis.count(RENEW) == renewals + 1
    assert not cluster.node.accepting
    got = alice.take()
    assert got.count(b"bob: bonjour\n") == got.count(b"bob: encore\n") == 1
    assert got.count(b"-ann: pendant la pause\n") == 1
    assert redis.published == []
    assert alice.connected and ann.connected


# -- The node's states --------------------------------------------------------


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[LogEvent]:
    """What the cluster logs, from here on: the node's moves among them."""
    events: list[LogEvent] = []
    logger = Logger("chatproto.cluster", observer=cast(ILogObserver, events.append))
    monkeypatch.setattr(membership_module, "log", logger)
    return events


def idle_node(cluster: Cluster) -> ClusterNode:
    """Another node of the cluster's chat, built and never started."""

    def connect(node: ClusterNode) -> Any:
        return FakeRedis(), FakeSubscription(), cluster.node.registry

    return ClusterNode(CONFIG, cluster.factory, clock=cluster.clock, connect=connect)


def said(events: list[LogEvent]) -> list[tuple[NodeState, NodeState, str]]:
    """The node's moves in the log: from, to, and the sentence."""
    return [(e["old"], e["new"], formatEvent(e)) for e in events if "new" in e]


def test_the_diagram_in_the_docstring_is_the_table_of_transitions() -> None:
    """What the class's docstring draws is what _become allows; every state
    is reached from STOPPED, and leads back to it."""
    doc = Membership.__doc__ or ""
    drawn: dict[NodeState, set[NodeState]] = {state: set() for state in NodeState}
    for sources, target in re.findall(r"^ +([A-Z_, ]+) --.*--> ([A-Z_]+)$", doc, re.M):
        for source in sources.split(", "):
            drawn[NodeState[source]].add(NodeState[target])
    assert drawn == {state: set(targets) for state, targets in TRANSITIONS.items()}

    def reached(
        start: NodeState, moves: dict[NodeState, set[NodeState]]
    ) -> set[NodeState]:
        seen, todo = {start}, [start]
        while todo:
            for target in moves[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    assert reached(NodeState.STOPPED, drawn) == set(NodeState)
    backwards: dict[NodeState, set[NodeState]] = {state: set() for state in NodeState}
    for source, targets in drawn.items():
        for target in targets:
            backwards[target].add(source)
    assert reached(NodeState.STOPPED, backwards) == set(NodeState)


def test_a_node_joins_is_cut_off_and_comes_back_and_the_log_says_each_move(
    moves: list[LogEvent],
) -> None:
    cluster = Cluster(joined=False)
    assert cluster.node.state is NodeState.JOINING
    cluster.subscribed()
    assert cluster.node.state is NodeState.SERVING
    cluster.user("alice")
    redis = cluster.redis
    redis.answers[RENEW] = ClusterUnreachable("Redis did not answer in time")
    cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.CUT_OFF
    redis.answers[RENEW] = 1
    cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.SERVING
    assert said(moves) == [
        (
            NodeState.STOPPED,
            NodeState.JOINING,
            "node here joining cluster test through redis://127.0.0.1:6379/0",
        ),
        (
            NodeState.JOINING,
            NodeState.SERVING,
            "node here is in cluster test (redis://127.0.0.1:6379/0)",
        ),
        (
            NodeState.SERVING,
            NodeState.CUT_OFF,
            "Redis unreachable (Redis did not answer in time): new registrations "
            "are refused; the 1 users here chat among themselves until it is back",
        ),
        (
            NodeState.CUT_OFF,
            NodeState.SERVING,
            "Redis is back: the 1 users here are registered again, new "
            "registrations are accepted",
        ),
    ]
    assert {e["act"] for e in moves if "new" in e} == {"cluster"}  # for grep
    levels = [e["log_level"] for e in moves if "new" in e]
    assert levels == [LogLevel.info, LogLevel.info, LogLevel.warn, LogLevel.info]


def test_a_node_back_from_an_outage_reaps_nobody_until_the_others_can_be_back() -> None:
    """A persistent Redis away longer than a lease comes back with every
    lease run out (their expiry is a time of day): the first node back must
    let the others, alive, register again (their reconnection delay, then a
    lease) before it reaps any of them."""
    cluster = Cluster()
    redis = cluster.redis
    redis.answers[RENEW] = ClusterUnreachable("no connection to Redis")
    cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.CUT_OFF
    redis.answers[RENEW] = 1
    cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.SERVING
    back, reaps = cluster.clock.seconds(), redis.count(REAP)
    while cluster.clock.seconds() + CONFIG.tick < (
        back + CONFIG.node_timeout + MAX_RETRY_DELAY
    ):
        cluster.clock.advance(CONFIG.tick)
    assert redis.count(REAP) == reaps
    cluster.clock.advance(CONFIG.tick)
    assert redis.count(REAP) == reaps + 1
    cluster.clock.advance(CONFIG.tick)
    assert redis.count(REAP) == reaps + 2


def test_the_node_whose_renewal_begins_redis_grace_says_so_and_goes_on(
    moves: list[LogEvent],
) -> None:
    """Redis tells the node whose registration, or renewal, was the first
    after a silence of every node (half a lease): it began the grace
    (node-timeout plus the reconnection delay), in which nobody is reaped.
    The node says so, once each time, and serves on."""
    cluster = Cluster(joined=False)
    redis = cluster.redis
    redis.answers[SYNC] = [b"E1", [], [], [], 0, 1]
    cluster.subscribed()
    assert cluster.node.state is NodeState.SERVING
    sync = redis.last(SYNC)
    assert sync[5:7] == (1500, round((CONFIG.node_timeout + MAX_RETRY_DELAY) * 1000))
    redis.answers[RENEW] = 2
    for _ in range(4):  # past a lease: renewed all along, not CHECKING
        cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.SERVING
    assert redis.last(RENEW)[2:] == (3000, "E1", 1500, 6000)  # lease, epoch...
    redis.answers[RENEW] = 1
    cluster.clock.advance(CONFIG.tick)
    began = [e for e in moves if "grace" in e]
    assert len(began) == 1 + 4
    assert formatEvent(began[0]) == (
        "no node of cluster test renewed its lease for 1.5 s or more (Redis "
        "away, or out of every node's reach): no node is reaped for 6.0 s, "
        "the time for the others to come back"
    )
    assert {(e["act"], e["log_level"]) for e in began} == {("cluster", LogLevel.warn)}


def test_an_impossible_transition_is_refused_and_changes_nothing(
    moves: list[LogEvent],
) -> None:
    cluster = Cluster()
    logged = len(moves)
    with pytest.raises(
        ImpossibleTransition, match="node here: no transition from SERVING to JOINING"
    ):
        cluster.node.membership.become(NodeState.JOINING)
    assert cluster.node.state is NodeState.SERVING
    assert len(moves) == logged
    fresh = idle_node(cluster)
    with pytest.raises(ImpossibleTransition):
        fresh.membership.become(NodeState.SERVING)
    assert fresh.state is NodeState.STOPPED


def test_a_stalled_node_is_checking_until_redis_answers(
    moves: list[LogEvent],
) -> None:
    """A lease's length without a renewal: CHECKING, and back to SERVING
    when Redis says the node was not reaped."""
    cluster = Cluster()
    cluster.user("alice")
    cluster.redis.held.add(RENEW)
    cluster.stall(CONFIG.node_timeout + 4)
    cluster.heard(b"there [1.2.3]-bob: bonjour\n")
    assert cluster.node.state is NodeState.CHECKING
    cluster.redis.answer(RENEW, 1)
    assert cluster.node.state is NodeState.SERVING
    assert said(moves)[-2:] == [
        (
            NodeState.SERVING,
            NodeState.CHECKING,
            "node here renewed no lease for 8.0 s (stalled?): asking Redis "
            "whether the other nodes took it for dead",
        ),
        (
            NodeState.CHECKING,
            NodeState.SERVING,
            "node here was not taken for dead: it goes on",
        ),
    ]


def test_a_reaped_node_says_so_and_joins_again_with_no_users(
    moves: list[LogEvent],
) -> None:
    cluster = Cluster()
    cluster.user("alice")
    cluster.user("ann")
    cluster.redis.answers[RENEW] = 0  # reaped
    cluster.stall(CONFIG.node_timeout + 4)
    cluster.clock.advance(0)
    cluster.clock.advance(0)  # the new node joins a reactor turn later
    assert cluster.node.state is NodeState.SERVING
    assert cluster.factory.sessions == {}
    assert said(moves)[-3:] == [
        (
            NodeState.SERVING,
            NodeState.CHECKING,
            "node here renewed no lease for 8.0 s (stalled?): asking Redis "
            "whether the other nodes took it for dead",
        ),
        (
            NodeState.CHECKING,
            NodeState.REAPED,
            "node here was taken for dead by the other nodes, which announced "
            "its 2 users gone: they are disconnected",
        ),
        (
            NodeState.REAPED,
            NodeState.SERVING,
            "node here is in cluster test again, with no users: new "
            "registrations are accepted",
        ),
    ]


def test_a_node_stops_through_stopping_once(moves: list[LogEvent]) -> None:
    """Stopping gives the lease back once; a second stop does nothing; a
    node never started stops without a word."""
    cluster = Cluster()
    cluster.user("alice")
    stopped = cluster.node.stopService()
    assert stopped.called and cluster.node.state is NodeState.STOPPED
    assert cluster.redis.count(LEAVE) == 1
    assert cluster.node.stopService().called
    assert cluster.redis.count(LEAVE) == 1
    assert [(old, new) for old, new, _ in said(moves)][-2:] == [
        (NodeState.SERVING, NodeState.STOPPING),
        (NodeState.STOPPING, NodeState.STOPPED),
    ]
    node = idle_node(cluster)
    assert node.stopService().called and node.state is NodeState.STOPPED


def test_losing_the_subscription_while_checking_delivers_what_waited_once() -> None:
    """The node is cut off before Redis answered its check: what waited is
    delivered here at once, and the late answer changes nothing."""
    cluster = Cluster()
    alice = cluster.user("alice")
    cluster.redis.held.add(RENEW)
    cluster.stall(CONFIG.node_timeout + 4)
    cluster.heard(b"there [1.2.3]-bob: bonjour\n")
    assert alice.take() == b""
    cluster.subscription.listening = False
    cluster.node.listening(False, "connection lost")
    assert cluster.node.state is NodeState.CUT_OFF
    assert alice.take() == b"[1.2.3]-bob: bonjour\n"
    cluster.redis.answer(RENEW, 1)
    assert cluster.node.state is NodeState.CUT_OFF
    assert alice.take() == b""


def test_a_node_deaf_again_while_it_registers_stays_cut_off_until_it_hears() -> None:
    """The subscription drops while the users are being registered again:
    the registration stands, but the node, which would not hear the other
    nodes, does not serve (its lines stay here) until it hears again."""
    cluster = Cluster()
    alice, ann = cluster.user("alice"), cluster.user("ann")
    redis = cluster.redis
    cluster.subscription.listening = False
    cluster.node.listening(False, "connection lost")
    assert cluster.node.state is NodeState.CUT_OFF
    redis.held.add(SYNC)
    cluster.subscribed()
    cluster.subscription.listening = False
    cluster.node.listening(False, "connection lost")
    redis.answer(SYNC, [b"E1", [], [], [], 0, 0])
    assert cluster.node.state is NodeState.CUT_OFF
    redis.published.clear()
    alice.send(b"entre nous\n")
    cluster.clock.advance(0)
    assert ann.take().endswith(b"-alice: entre nous\n")
    assert redis.published == []
    syncs = redis.count(SYNC)
    cluster.subscribed()
    assert redis.count(SYNC) == syncs + 1
    redis.answer(SYNC, [b"E1", [], [], [], 0, 0])
    assert cluster.node.state is NodeState.SERVING


def test_a_node_stopped_while_it_checks_publishes_nothing_typed_in_the_stall() -> None:
    """It may have been reaped: the lines typed during the stall go nowhere;
    it still gives back whatever it holds."""
    cluster = Cluster()
    alice = cluster.user("alice")
    cluster.user("ann")
    redis = cluster.redis
    redis.published.clear()
    redis.held.add(RENEW)
    cluster.stall(CONFIG.node_timeout + 4)
    alice.send(b"pendant la pause\n")
    cluster.clock.advance(0)  # the turn's end: the line would go to Redis
    assert cluster.node.state is NodeState.CHECKING
    cluster.factory.shutdown()
    cluster.node.stopService()
    assert cluster.node.state is NodeState.STOPPED
    assert redis.published == []
    assert redis.count(LEAVE) == 1


# -- What the node hears -------------------------------------------------------


def test_a_message_that_does_not_parse_is_logged_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kick whose minutes are not a number is no kick (it once kicked its
    target for 0 minutes), and a public message without a head delivers
    nothing: each is one warning in the log, never a traceback."""
    events: list[LogEvent] = []
    logger = Logger("chatproto.cluster", observer=cast(ILogObserver, events.append))
    monkeypatch.setattr(roles_module, "log", logger)
    cluster = Cluster()
    alice = cluster.user("alice")
    alice.take()
    cluster.node.heard(NODE, b"!alice+soon bob - spam")
    cluster.node.heard(PUBLIC, b"there")
    cluster.clock.advance(0)
    assert alice.connected and alice.take() == b""
    warned = [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn]
    assert len(warned) == 2
    assert all("does not parse" in line for line in warned)
