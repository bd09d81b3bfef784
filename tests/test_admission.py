"""Admission: connection slots that squatters cannot hoard.

Regressions for the reported defect: 10,000 connections from 625 loopback
addresses (127.1.0.1-127.1.2.125, 16 each) that never register kept honest
users out, again after every registration timeout, and 10,000 registered
ones kept them out for good. Unregistered connections now have a share of
the slots, the oldest of them makes room for a newcomer, and one network
holds at most a quarter of the server. The unit tests keep the proportions
with max_connections=200; they drive the real factory over in-memory
transports and a fake clock, as chatproto.testing does.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto import admission as admission_module
from chatproto import wire
from chatproto.registry import MemoryRegistry
from chatproto.server import (
    EVICTION_GRACE,
    ChatFactory,
    ChatServerProtocol,
    ServerConfig,
    network,
    source,
)
from chatproto.testing import Chat, Client, RecordingTransport, nick_registered
from tests.peer import Peer

r: Any = reactor

FULL = b"Le serveur est plein, r\xc3\xa9essayez plus tard\n"
FROM_NETWORK = (
    b"Trop de connexions depuis votre r\xc3\xa9seau, r\xc3\xa9essayez plus tard\n"
)
MADE_ROOM = (
    "Place faite à un nouveau venu : vous ne vous êtes pas enregistré, au revoir\n"
).encode()


def squatter_host(n: int) -> str:
    """The address of the n-th connection of the reported attack, scaled to
    max_connections=200: groups of 16 per address, as the load generator
    made them, and five addresses per /24 (two networks of 80 connections,
    one of 40: the attack's 4,000, 4,000 and 2,000 out of 10,000)."""
    k = n // 16
    return f"127.1.{k // 5}.{k % 5 + 1}"


def refused_with(client: Client, line: bytes) -> bool:
    """The client got this one line, and was closed."""
    return client.take() == line and not client.connected


def made_room(client: Client) -> bool:
    """The client was told it made room for a newcomer, last, and closed."""
    output = client.take()
    return (
        output.endswith(MADE_ROOM)
        and output.count(MADE_ROOM) == 1
        and (not client.connected)
    )


# The network of an address


@pytest.mark.parametrize(
    ("host", "prefix", "prefix6", "expected"),
    [
        ("192.0.2.77", 24, 48, "192.0.2.0/24"),
        ("192.0.2.77", 16, 48, "192.0.0.0/16"),
        ("192.0.2.77", 32, 48, "192.0.2.77/32"),
        ("2001:db8:1:2::/64", 24, 48, "2001:db8:1::/48"),
        ("2001:db8:1:2ff::/64", 24, 56, "2001:db8:1:200::/56"),
        ("2001:db8:1:2::/64", 24, 64, "2001:db8:1:2::/64"),
        ("not-an-address", 24, 48, "not-an-address"),
        (None, 24, 48, None),
    ],
)
def test_a_network_is_an_ipv4_or_ipv6_prefix_of_the_source(
    host: str | None, prefix: int, prefix6: int, expected: str | None
) -> None:
    """What source() gives (an IPv4 address, an IPv6 /64) is narrowed to its
    network; an IPv6 network is never narrower than the /64 source() keeps."""
    assert network(host, prefix, prefix6) == expected


def test_the_default_shares_follow_the_connections_allowed() -> None:
    """A quarter of the server per network, half of it for the unregistered;
    explicit values win, and 0 turns the per-network limit off."""
    assert ServerConfig().network_limit == 2_500
    assert ServerConfig().unregistered_limit == 5_000
    assert ServerConfig(max_connections=200).network_limit == 50
    assert ServerConfig(max_connections=200).unregistered_limit == 100
    config = ServerConfig(max_per_network=7, max_unregistered=3)
    assert (config.network_limit, config.unregistered_limit) == (7, 3)
    assert ServerConfig(max_per_network=0).network_limit == 0


# Unregistered squatters


def test_an_honest_user_gets_in_while_the_reported_herd_squats() -> None:
    """The reported attack, scaled: 200 connections from 13 loopback
    addresses that never register. Their three /24s hold at most 50 each,
    so an honest user from elsewhere gets in at once, and registers."""
    chat = Chat(max_connections=200)
    squatters = [chat.connect(squatter_host(n)) for n in range(200)]
    assert sum(s.connected for s in squatters) == 50 + 50 + 40
    assert refused_with(squatters[50], FROM_NETWORK)  # the 51st from 127.1.0
    assert squatters[-1].connected  # 127.1.2 has 40
    honest = chat.connect("127.0.0.1")
    assert honest.connected
    honest.send(b"/pseudo honest\n")
    assert nick_registered(honest.take(), "honest")


def test_an_honest_user_gets_in_while_squatters_from_many_networks_fill_it() -> None:
    """200 squatters from 13 addresses in 13 networks fill the server. Once
    they are older than the grace, a newcomer is let in: the oldest squatter
    makes room. So again after the registration timeout, when the squatters
    come back: they are young for EVICTION_GRACE seconds, then make room."""
    chat = Chat(max_connections=200, registration_timeout=60, ping_interval=0)
    squatters = [chat.connect(f"198.18.{n // 16}.1") for n in range(200)]
    assert all(s.connected for s in squatters)
    chat.advance(EVICTION_GRACE)
    for attempt in range(3):
        honest = chat.connect("127.0.0.1")
        assert honest.connected
        honest.send(b"/pseudo honest%d\n" % attempt)
        assert nick_registered(honest.take(), f"honest{attempt}")
    assert [s.connected for s in squatters[:4]] == [False, False, False, True]
    assert len(chat.factory.admission.connections) == 200

    chat.advance(60)  # the squatters time out, and come back at once
    again = [chat.connect(f"198.18.{n // 16}.1") for n in range(200)]
    assert sum(s.connected for s in again) == 197  # 3 slots are registered users
    chat.advance(EVICTION_GRACE)
    late = chat.connect("127.0.0.2")
    assert late.connected
    assert made_room(again[0])


def test_the_oldest_unregistered_connection_makes_room_and_is_told_why() -> None:
    """When the server is full, registered users stay; of the unregistered
    ones, the one connected first goes, with one French line, then the next
    oldest for the next newcomer."""
    chat = Chat(max_connections=4, max_per_ip=0, max_per_network=0, ping_interval=0)
    user = chat.user("alice")
    chat.advance(EVICTION_GRACE)
    first = chat.connect()
    chat.advance(1)
    second = chat.connect()
    chat.advance(1)
    third = chat.connect()
    for c in (first, second, third):
        c.take()
    chat.advance(EVICTION_GRACE)
    newcomer = chat.connect()
    assert newcomer.connected
    assert made_room(first)
    assert second.connected and third.connected and user.connected
    assert user.take() == b""
    assert chat.connect().connected
    assert made_room(second)
    assert third.connected


def test_the_share_of_the_unregistered_evicts_old_ones_before_the_server_is_full() -> (
    None
):
    """At --max-unregistered, a newcomer takes the slot of the oldest
    unregistered connection even though the server has room."""
    chat = Chat(max_connections=100, max_unregistered=3, max_per_network=0)
    old = [chat.connect() for _ in range(3)]
    chat.advance(EVICTION_GRACE)
    newcomer = chat.connect()
    assert newcomer.connected
    assert made_room(old[0])
    assert old[1].connected and old[2].connected
    assert len(chat.factory.admission.unregistered) == 3


def test_a_young_herd_does_not_evict_itself() -> None:
    """A burst of connections all younger than the grace (a restart: honest
    clients reconnect at once) gets in, past the unregistered share, or gets
    "full"; nobody of the burst is evicted by another."""
    chat = Chat(max_connections=50, max_unregistered=20, max_per_network=0)
    burst = []
    for n in range(80):
        burst.append(chat.connect(f"198.51.100.{n // 16 + 1}"))
        chat.advance(EVICTION_GRACE * 0.95 / 80)  # all of it within the grace
    assert all(c.connected for c in burst[:50])
    assert all(refused_with(c, FULL) for c in burst[50:])
    assert not any(MADE_ROOM in c.take() for c in burst[:50])


# Registered squatters and the per-network limit


def test_registered_squatters_from_one_network_leave_room_for_others() -> None:
    """Squatters that register, from 16 addresses of one /24, hold at most a
    quarter of the server (the default share of one network): the others
    are told why; an honest user from elsewhere gets in, and they stay."""
    chat = Chat(max_connections=200, ping_interval=0)
    squatters = []
    for n in range(256):
        s = chat.connect(f"127.1.0.{n // 16 + 1}")
        s.send(b"/pseudo s%d\n" % n)
        squatters.append(s)
    assert sum(s.connected for s in squatters) == 50
    assert refused_with(squatters[50], FROM_NETWORK)
    chat.advance(EVICTION_GRACE * 10)
    honest = chat.user("honest", host="127.0.0.1")
    assert honest.connected
    assert sum(s.connected for s in squatters) == 50  # registered: not evicted
    assert len(chat.factory.admission.connections) == 51


def test_an_ipv6_48_counts_as_one_network() -> None:
    """Two /64s of one /48 share one network's limit; another /48 does not.
    An IPv4-mapped address counts in its IPv4 /24."""
    chat = Chat(max_per_network=3, max_per_ip=0)
    inside = [chat.connect(f"2001:db8:1:{n}::1") for n in ("1", "2", "ffff")]
    assert all(c.connected for c in inside)
    assert refused_with(chat.connect("2001:db8:1:3::9"), FROM_NETWORK)
    assert chat.connect("2001:db8:2::1").connected
    assert chat.connect("198.51.100.7").connected
    assert chat.connect("::ffff:198.51.100.8").connected
    assert chat.connect("198.51.100.250").connected
    assert refused_with(chat.connect("::ffff:198.51.100.9"), FROM_NETWORK)
    inside[0].transport.loseConnection()
    assert chat.connect("2001:db8:1:4::1").connected


def test_the_network_prefixes_are_configurable() -> None:
    chat = Chat(max_per_network=2, max_per_ip=0, network_prefix=16)
    assert chat.connect("10.1.1.1").connected
    assert chat.connect("10.1.2.1").connected
    assert refused_with(chat.connect("10.1.3.1"), FROM_NETWORK)
    assert chat.connect("10.2.1.1").connected


def test_a_refused_newcomer_evicts_nobody() -> None:
    """A newcomer over its address's or its network's limit is refused
    before any squatter is evicted: it takes nobody's slot."""
    chat = Chat(max_connections=4, max_per_ip=2, max_per_network=3)
    old = [chat.connect(host) for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2")]
    chat.advance(EVICTION_GRACE)
    assert refused_with(chat.connect("10.0.0.1"), wire.notice(wire.TOO_MANY_FROM_HOST))
    assert refused_with(chat.connect("10.0.0.3"), FROM_NETWORK)
    assert all(c.connected for c in old)


# Counters stay exact whatever the order of events


class PendingRegistry(MemoryRegistry):
    """A registry that answers claims only when the test says (a cluster's
    Redis answers later): connections can go while JOINING."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[str, Deferred[str]]] = []

    def claim(self, nick: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.pending.append((nick, d))
        return d

    def answer(self, index: int) -> None:
        nick, d = self.pending.pop(index % len(self.pending))
        super().claim(nick).chainDeferred(d)


class SlowClose(RecordingTransport):
    """A transport whose close ends when the test says, as a real TCP close
    ends once the peer took what was written: connectionLost comes later."""

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.finish()

    def finish(self) -> None:
        StringTransportWithDisconnection.loseConnection(self)


HOSTS = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.1",
    "::ffff:10.0.0.1",
    "2001:db8:0:1::1",
    "2001:db8:0:2::1",
    "2001:db8:1::1",
]

ACTIONS = st.one_of(
    st.tuples(st.just("connect"), st.integers(0, len(HOSTS) - 1), st.booleans()),
    st.tuples(st.sampled_from(["name", "quit", "hang_up", "finish"]), st.integers()),
    st.tuples(st.just("answer"), st.integers()),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 1.0, EVICTION_GRACE, 31.0])),
)


def check_counters(chat: Chat) -> None:
    factory, config = chat.factory, chat.factory.config
    live = factory.admission.connections
    hosts = collections.Counter(p.host for p in live if p.host is not None)
    networks = collections.Counter(
        network(p.host, config.network_prefix, config.network_prefix6) for p in live
    )
    assert factory.admission.per_host == hosts
    assert factory.admission.per_network == networks
    assert set(factory.admission.unregistered) == {p for p in live if p.nick is None}
    times = list(factory.admission.unregistered.values())
    assert times == sorted(times)
    assert len(live) <= config.max_connections
    assert max(hosts.values(), default=0) <= config.max_per_ip
    assert max(networks.values(), default=0) <= config.network_limit


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(ACTIONS, max_size=60))
def test_counters_stay_exact_after_every_kind_of_departure(
    actions: list[tuple[Any, ...]],
) -> None:
    """Connections refused, evicted, timed out, that quit, hang up, register
    then go, or go while the registry decides, and closes that end late:
    after every step each counter is exactly what the live connections
    make, and every limit holds; when all are gone, every counter is 0."""
    chat = Chat(
        max_connections=6,
        max_per_ip=2,
        max_per_network=3,
        max_unregistered=2,
        registration_timeout=30,
        ping_interval=0,
    )
    registry = PendingRegistry()
    chat.factory.room.registry = registry
    clients: list[tuple[ChatServerProtocol, RecordingTransport]] = []
    made = 0
    for action in actions:
        kind = action[0]
        if kind == "connect":
            host, slow = HOSTS[action[1]], action[2]
            family = IPv6Address if ":" in host else IPv4Address
            peer = family("TCP", host, 40000 + len(clients))
            proto = chat.factory.buildProtocol(peer)
            assert isinstance(proto, ChatServerProtocol)
            transport = (SlowClose if slow else RecordingTransport)(peerAddress=peer)
            transport.protocol = proto
            proto.makeConnection(transport)
            clients.append((proto, transport))
        elif kind == "answer":
            if registry.pending:
                registry.answer(action[1])
        elif kind == "advance":
            chat.advance(action[1])
        elif clients:
            proto, transport = clients[action[1] % len(clients)]
            if kind == "name":
                made += 1
                proto.dataReceived(b"/pseudo u%d\n" % made)
            elif kind == "quit":
                proto.dataReceived(b"/quit\n")
            elif kind == "hang_up":  # the peer closed: lost at once
                StringTransportWithDisconnection.loseConnection(transport)
            elif isinstance(transport, SlowClose):
                transport.finish()
        check_counters(chat)
    while registry.pending:
        registry.answer(0)
    for _, transport in clients:
        StringTransportWithDisconnection.loseConnection(transport)
    check_counters(chat)
    factory = chat.factory
    assert not factory.admission.connections and not factory.admission.unregistered
    assert not factory.admission.per_host and not factory.admission.per_network
    assert len(registry) == 0


def test_an_evicted_connection_whose_close_ends_late_is_counted_once() -> None:
    """The evicted connection's slot is the newcomer's at once, even though
    its close ends later; when it ends, nothing is counted twice."""
    chat = Chat(max_connections=2, max_per_network=2)
    peer = IPv4Address("TCP", "192.0.2.9", 40000)
    proto = chat.factory.buildProtocol(peer)
    assert isinstance(proto, ChatServerProtocol)
    transport = SlowClose(peerAddress=peer)
    transport.protocol = proto
    proto.makeConnection(transport)
    other = chat.connect()
    chat.advance(EVICTION_GRACE)
    newcomer = chat.connect("198.51.100.10")
    assert newcomer.connected and other.connected
    assert transport.value().endswith(MADE_ROOM) and transport.disconnecting
    assert chat.factory.admission.connections == {other.session, newcomer.session}
    counts = {"192.0.2.0/24": 1, "198.51.100.0/24": 1}
    assert chat.factory.admission.per_network == counts
    transport.finish()
    assert chat.factory.admission.connections == {other.session, newcomer.session}
    assert chat.factory.admission.per_network == counts
    assert chat.factory.admission.per_host == {"192.0.2.1": 1, "198.51.100.10": 1}


def test_source_then_network_keeps_a_mapped_address_in_its_ipv4_network() -> None:
    host = source("::ffff:203.0.113.5")
    assert network(host, 24, 48) == "203.0.113.0/24"


# Over real loopback sockets


@pytest_twisted.ensureDeferred
async def test_over_tcp_a_squatter_makes_room_and_its_late_close_counts_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real sockets, where the evicted connection's close ends after the
    newcomer is in: 8 squatters from 127.1.0.x fill the server; once they
    are older than the grace (shortened here), an honest user from
    127.0.0.1 gets in and registers, the oldest squatter is told and
    closed, and the counters stay exact once its close has ended."""
    monkeypatch.setattr(admission_module, "EVICTION_GRACE", 0.05)
    config = ServerConfig(max_connections=8, max_per_network=8, ping_interval=0)
    factory = ChatFactory(config, clock=r)
    port = await TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    number = port.getHost().port
    peers: list[Peer] = []
    try:
        for n in range(8):
            endpoint = TCP4ClientEndpoint(
                r, "127.0.0.1", number, bindAddress=(f"127.1.0.{n % 4 + 1}", 0)
            )
            peer = await endpoint.connect(Factory.forProtocol(Peer))
            assert isinstance(peer, Peer)
            await peer.until(wire.WELCOME)
            peers.append(peer)
        assert len(factory.admission.connections) == 8
        await deferLater(r, 0.1)
        honest = await TCP4ClientEndpoint(r, "127.0.0.1", number).connect(
            Factory.forProtocol(Peer)
        )
        assert isinstance(honest, Peer)
        peers.append(honest)
        await honest.until(wire.WELCOME)
        honest.send(b"/pseudo honest\n")
        await honest.until(b"Bienvenue honest\n")
        assert (await peers[0].until(MADE_ROOM)).endswith(MADE_ROOM)
        await peers[0].closed
        assert len(factory.admission.connections) == 8
        assert len(factory.admission.unregistered) == 7
        assert factory.admission.per_network == {"127.1.0.0/24": 7, "127.0.0.0/24": 1}
    finally:
        for peer in peers:
            if peer.transport is not None:
                peer.transport.loseConnection()
        await port.stopListening()


# The registration deadline: one timer for every unregistered connection

EXPIRED = wire.notice(wire.REGISTRATION_EXPIRED)


def test_each_connection_gets_its_own_deadline_from_one_timer() -> None:
    """Connections that came at different times are each told at their own
    deadline, oldest first; a hundred that came at once wait on one timer,
    and no timer is left once none waits."""
    chat = Chat(registration_timeout=60, ping_interval=0, max_per_ip=0)
    herd = [chat.connect() for _ in range(100)]
    assert len(chat.clock.getDelayedCalls()) == 1
    chat.advance(10)
    late = chat.connect()
    for client in [*herd, late]:
        client.take()
    chat.advance(49.9)
    assert all(client.connected for client in [*herd, late])
    chat.advance(0.1)
    assert [client.take() for client in herd] == [EXPIRED] * 100
    assert not any(client.connected for client in herd)
    assert late.connected and late.take() == b""
    chat.advance(9.9)
    assert late.connected
    chat.advance(0.1)
    assert late.take() == EXPIRED and not late.connected
    assert chat.clock.getDelayedCalls() == []


def test_registering_before_the_deadline_leaves_the_others_theirs() -> None:
    """The oldest registers: the one after it is still told at its own
    deadline, not at the oldest's, and nobody registered is told."""
    chat = Chat(registration_timeout=60, ping_interval=0)
    first = chat.connect()
    chat.advance(30)
    second = chat.connect()
    first.send(b"/pseudo first\n")
    assert nick_registered(first.take(), "first")
    second.take()
    chat.advance(30)
    assert second.connected and first.connected
    chat.advance(30)
    assert second.take() == EXPIRED and not second.connected
    assert first.connected and first.take() == b""


def test_a_told_connection_that_closes_late_still_makes_room_first() -> None:
    """A connection told its time is up but slow to close (it does not
    read) still counts as unregistered, and is the first to make room for
    a newcomer to a full server, not a younger one still registering."""
    chat = Chat(
        registration_timeout=60,
        ping_interval=0,
        close_timeout=60,
        max_connections=2,
        max_unregistered=2,
        max_per_ip=0,
    )
    stuck = chat.connect()
    stuck.transport.loseConnection = lambda: None  # type: ignore[method-assign]
    chat.advance(59)
    young = chat.connect()
    chat.advance(1)
    assert stuck.take().endswith(EXPIRED)
    assert stuck.session in chat.factory.admission.unregistered
    chat.advance(EVICTION_GRACE)
    newcomer = chat.connect()
    assert newcomer.connected and young.connected
    assert stuck.session not in chat.factory.admission.connections
