"""The registry twin (RedisRegistry) against a real redis-server, in the test's
reactor: uniqueness, order, leases, reaping, registering again, time limits."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater

from chatproto._redis import Commands, Subscription
from chatproto.cluster_messages import (
    Channel,
    LateDeparture,
    Public,
    ReapedDeparture,
    decode,
)
from chatproto.cluster_redis import LeaseLost, RedisRegistry, Renewal
from chatproto.config import RedisAddress
from chatproto.registry import ClusterUnreachable, NicknameTaken
from tests.redis_fixture import RedisServer

pytestmark = pytest.mark.redis
r: Any = reactor


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the reactor run until C{predicate} holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await deferLater(r, 0.01)


async def failure_of(d: Deferred[Any]) -> BaseException:
    try:
        await d
    except Exception as e:
        return e
    raise AssertionError("the call succeeded")


Opener = Callable[..., Awaitable[RedisRegistry]]


@pytest.fixture
def open_registry(redis: RedisServer) -> Iterator[Opener]:
    """Open registries of nodes of the cluster "test"; closed at the end."""
    closing: list[Commands | Subscription] = []

    async def open_(
        node: str,
        lease: float = 10.0,
        timeout: float = 1.0,
        sync: bool = True,
        grace: float = 10.0,
    ) -> RedisRegistry:
        commands = Commands(RedisAddress.parse(redis.url), r, timeout)
        closing.append(commands)
        commands.start()
        await until(lambda: commands.connected)
        registry = RedisRegistry(commands, "test", node, lease, grace)
        if sync:
            await registry.sync([])
        return registry

    yield open_
    for connection in closing:
        pytest_twisted.blockon(connection.close())


@pytest.fixture
def listen(redis: RedisServer) -> Iterator[Callable[..., Awaitable[list[Any]]]]:
    """Subscribe to channels; what arrives is appended to the list returned."""
    closing: list[Subscription] = []

    async def listen_(*channels: bytes) -> list[Any]:
        heard: list[Any] = []
        subscription = Subscription(
            RedisAddress.parse(redis.url),
            channels,
            lambda channel, message: heard.append((channel, message)),
            lambda listening, why: None,
            r,
            1.0,
        )
        closing.append(subscription)
        subscription.start()
        await until(lambda: subscription.listening)
        return heard

    yield listen_
    for subscription in closing:
        pytest_twisted.blockon(subscription.close())


@pytest_twisted.ensureDeferred
async def test_a_nickname_is_unique_across_nodes_whatever_its_case(
    open_registry: Opener,
) -> None:
    """Alice on one node blocks ALICE on another, and alice on the same one."""
    a, b = await open_registry("a"), await open_registry("b")
    assert (await a.claim("Alice")) == "Alice"
    assert isinstance(await failure_of(b.claim("ALICE")), NicknameTaken)
    assert isinstance(await failure_of(a.claim("alice")), NicknameTaken)
    assert (await b.names()) == (["Alice"], 1)


@pytest_twisted.ensureDeferred
async def test_simultaneous_claims_on_three_nodes_have_one_winner_each(
    open_registry: Opener,
) -> None:
    """Three nodes ask for the same 30 nicknames at once: one wins each."""
    nodes = [await open_registry(name) for name in "abc"]
    nicks = [f"user{i}" for i in range(30)]
    calls = [
        node.claim(nick.upper() if i % 2 else nick)
        for nick in nicks
        for i, node in enumerate(nodes)
    ]
    results: list[tuple[bool, Any]] = await DeferredList(calls, consumeErrors=True)
    won = [value for ok, value in results if ok]
    lost = [value for ok, value in results if not ok]
    assert sorted(n.lower() for n in won) == sorted(nicks)
    assert len(lost) == 60 and all(f.check(NicknameTaken) for f in lost)
    names, total = await nodes[0].names()
    assert total == 30 and sorted(n.lower() for n in names) == sorted(nicks)


@pytest_twisted.ensureDeferred
async def test_names_are_in_registration_order_across_nodes(
    open_registry: Opener,
) -> None:
    """The list interleaves nodes in the order users registered; a limit
    shows the first ones and still counts everyone."""
    a, b = await open_registry("a"), await open_registry("b")
    for registry, nick in ((a, "zoe"), (b, "Bob"), (a, "alice"), (b, "yann")):
        await registry.claim(nick)
    assert (await a.names()) == (["zoe", "Bob", "alice", "yann"], 4)
    assert (await b.names(2)) == (["zoe", "Bob"], 4)
    await a.release("zoe")
    assert (await b.names(1)) == (["Bob"], 3)


@pytest_twisted.ensureDeferred
async def test_release_frees_a_nickname_only_for_its_holder(
    open_registry: Opener,
) -> None:
    """Another node cannot release a nickname it does not hold; the holder
    can, and then anyone may take it; releasing a free one does nothing."""
    a, b = await open_registry("a"), await open_registry("b")
    await a.claim("alice")
    await b.release("alice")
    assert isinstance(await failure_of(b.claim("alice")), NicknameTaken)
    await a.release("ALICE")
    assert (await b.claim("alice")) == "alice"
    await a.release("nobody")
    assert (await a.names()) == (["alice"], 1)


@pytest_twisted.ensureDeferred
async def test_no_key_is_left_for_users_who_left(
    redis: RedisServer, open_registry: Opener
) -> None:
    """Once every user released its nickname, only the nodes' keys remain
    (and "alive", which the nodes' renewals keep); once the nodes leave,
    only the cluster's epoch."""
    a, b = await open_registry("a"), await open_registry("b")
    for registry, nick in ((a, "alice"), (b, "bob"), (a, "carol")):
        await registry.claim(nick)
    assert "chatproto:test:users" in redis.key_names()
    for registry, nick in ((a, "alice"), (b, "bob"), (a, "carol")):
        await registry.release(nick)
    assert redis.key_names() == [
        "chatproto:test:alive",
        "chatproto:test:epoch",
        "chatproto:test:node:a:lease",
        "chatproto:test:node:b:lease",
        "chatproto:test:nodes",
    ]
    await a.leave("[1.2.3]")
    await b.leave("[1.2.3]")
    assert redis.key_names() == ["chatproto:test:epoch"]


@pytest_twisted.ensureDeferred
async def test_claims_need_the_nodes_lease(open_registry: Opener) -> None:
    """A node that has not taken its lease (or lost it) cannot register."""
    a = await open_registry("a", sync=False)
    failure = await failure_of(a.claim("alice"))
    assert isinstance(failure, LeaseLost)
    assert isinstance(failure, ClusterUnreachable)
    assert (await a.renew("")) is Renewal.DATA_LOST  # no epoch yet, no lease
    synced = await a.sync([])
    assert (await a.renew(synced.epoch)) is Renewal.RENEWED
    assert (await a.claim("alice")) == "alice"


@pytest_twisted.ensureDeferred
async def test_a_dead_node_is_reaped_once_and_its_departures_published_once(
    open_registry: Opener, listen: Callable[..., Awaitable[list[Any]]]
) -> None:
    """When a node's lease expires, the first reaper frees its nicknames and
    publishes one departure line each, naming the dead node; the next reaper
    finds nothing."""
    dying = await open_registry("dying", lease=0.3)
    b, c = await open_registry("b"), await open_registry("c")
    heard = await listen(b.public_channel)
    await dying.claim("alice")
    await dying.claim("Bob")
    await b.claim("carol")
    assert (await b.reap("[1.2.3]")) == []  # still alive
    await deferLater(r, 0.4)
    reaped = await DeferredList([b.reap("[1.2.3]"), c.reap("[1.2.3]")])
    gone = [value for _, value in reaped]
    assert sorted(map(sorted, gone)) == [[], ["Bob", "alice"]]
    await until(lambda: len(heard) >= 2)
    await b.names()  # a round trip: anything published twice has arrived
    reaper = b.origin if gone[0] else c.origin
    assert sorted(message for _, message in heard) == [
        reaper + "@dying [1.2.3]-Déconnection de Bob\n".encode(),
        reaper + "@dying [1.2.3]-Déconnection de alice\n".encode(),
    ]
    assert (await c.names()) == (["carol"], 1)
    assert (await c.claim("ALICE")) == "ALICE"
    epoch = (await b.sync([])).epoch
    assert (await dying.renew(epoch)) is Renewal.REAPED
    assert isinstance(await failure_of(dying.claim("dave")), LeaseLost)


@pytest_twisted.ensureDeferred
async def test_a_lease_that_expired_unreaped_is_taken_again_and_a_reaped_one_not(
    open_registry: Opener,
) -> None:
    """A node that stalled past its lease: if no node reaped it yet, renewing
    takes the lease again (nobody was told a thing) and its users stay; once
    reaped, neither renewing nor registering again in that epoch brings its
    users back (everyone was told they left)."""
    slow = await open_registry("slow", lease=0.2)
    reaper = await open_registry("reaper")
    epoch = (await slow.sync(["alice"])).epoch
    await deferLater(r, 0.3)
    assert (await slow.renew(epoch)) is Renewal.RENEWED
    assert (await reaper.reap("[1.2.3]")) == []
    await deferLater(r, 0.3)
    assert (await reaper.reap("[1.2.3]")) == ["alice"]
    assert (await slow.renew(epoch)) is Renewal.REAPED
    synced = await slow.sync(["alice"], epoch)
    assert synced.reaped
    assert (await reaper.names()) == ([], 0)
    assert isinstance(await failure_of(slow.claim("bob")), LeaseLost)
    rejoined = await slow.sync([])  # as a new node, with no users
    assert (rejoined.epoch, rejoined.reaped) == (epoch, False)
    assert (await slow.claim("alice")) == "alice"


def outage(redis: RedisServer, *nodes: str) -> None:
    """What a persistent Redis comes back with after an outage longer than a
    lease: every lease it held has run out (their expiry is a time of day),
    and "alive" too (it lasts half a lease): nobody renewed anything since."""
    leases = [f"chatproto:test:node:{node}:lease" for node in nodes]
    redis.cli("DEL", "chatproto:test:alive", *leases)


@pytest_twisted.ensureDeferred
async def test_a_node_that_starts_after_an_outage_reaps_nobody_for_the_grace(
    redis: RedisServer, open_registry: Opener
) -> None:
    """Issue 21: a node that starts right after a persistent Redis came back
    from a long outage finds every lease run out. Its first registration is
    the cluster's first renewal after a silence: the grace begins, and
    until it ends nobody is reaped: the nodes alive, reconnecting, take
    their lease again. A node that does not come back is reaped after it."""
    a, b = await open_registry("a"), await open_registry("b")
    await a.claim("alice")
    await b.claim("bob")
    epoch = (await a.sync(["alice"])).epoch
    outage(redis, "a", "b")

    c = await open_registry("c", sync=False)
    synced = await c.sync(["carl"])
    assert (synced.epoch, synced.grace) == (epoch, True)
    assert 0 < int(redis.cli("PTTL", "chatproto:test:grace")) <= 10_000
    assert (await c.reap("[1.2.3]")) == []
    assert (await c.names()) == (["alice", "bob", "carl"], 3)
    assert (await a.renew(epoch)) is Renewal.RENEWED  # a is back: not the first
    assert (await c.reap("[1.2.3]")) == []  # b is not back yet

    redis.cli("DEL", "chatproto:test:grace")  # the grace ran out, b never came
    assert (await c.reap("[1.2.3]")) == ["bob"]
    assert (await a.renew(epoch)) is Renewal.RENEWED
    assert (await c.names()) == (["alice", "carl"], 2)


@pytest_twisted.ensureDeferred
async def test_the_first_renewal_after_a_silence_begins_the_grace_and_says_so(
    redis: RedisServer, open_registry: Opener
) -> None:
    """Every node stalled, or Redis away while no node noticed: the first
    renewal after it says so (FIRST), the next ones do not; a reaper that
    renewed nothing finds the silence and reaps nobody either."""
    a, b = await open_registry("a"), await open_registry("b")
    epoch = (await a.sync([])).epoch
    await b.claim("bob")
    outage(redis, "b")
    assert (await a.reap("[1.2.3]")) == []  # the silence: no renewal yet
    assert redis.key_names("chatproto:test:grace") == []
    assert (await a.renew(epoch)) is Renewal.FIRST
    assert Renewal.FIRST.held and Renewal.RENEWED.held
    assert not (Renewal.REAPED.held or Renewal.DATA_LOST.held)
    assert (await a.renew(epoch)) is Renewal.RENEWED
    assert (await a.reap("[1.2.3]")) == []  # the grace
    assert (await b.renew(epoch)) is Renewal.RENEWED
    redis.cli("DEL", "chatproto:test:grace")
    assert (await a.reap("[1.2.3]")) == []  # b renewed: alive
    assert (await a.names()) == (["bob"], 1)


@pytest_twisted.ensureDeferred
async def test_no_grace_without_a_silence_of_every_node_or_another_node(
    redis: RedisServer, open_registry: Opener
) -> None:
    """The grace is for a silence of the whole cluster, when there is
    another node to spare: not for a new cluster's first node, a node that
    joins or comes back while another renews, a cluster whose Redis lost
    its data, or a short lease (which does not shorten the silence)."""
    first = await open_registry("first", sync=False)
    assert not (await first.sync([])).grace  # nobody else to spare
    dying = await open_registry("dying", lease=0.2, sync=False)
    assert not (await dying.sync(["dan"])).grace
    assert int(redis.cli("PTTL", "chatproto:test:alive")) > 1000  # first's 5 s
    redis.cli("DEL", "chatproto:test:node:dying:lease")  # dead, alone
    assert (await first.reap("[1.2.3]")) == ["dan"]  # at once
    assert not (await dying.sync(["dan"])).grace  # back, while first renews
    redis.cli("FLUSHALL")  # Redis lost its data
    assert not (await first.sync([])).grace
    assert not (await dying.sync([])).grace
    assert redis.key_names("chatproto:test:grace") == []


@pytest_twisted.ensureDeferred
async def test_sync_registers_again_and_reports_what_changed(
    redis: RedisServer, open_registry: Opener
) -> None:
    """After Redis lost its data, a node registers its users again: a new
    epoch says so, a nickname taken meanwhile is a conflict; users it no
    longer has are dropped."""
    a, b = await open_registry("a"), await open_registry("b")
    first = await a.sync([])
    await a.claim("alice")
    await a.claim("bob")
    redis.cli("FLUSHALL")
    await b.sync([])
    await b.claim("Alice")
    synced = await a.sync(["alice", "bob", "carol"])
    assert synced.epoch != first.epoch
    assert synced.conflicts == ["alice"]
    assert synced.dropped == []
    assert (await b.names()) == (["Alice", "bob", "carol"], 3)
    synced = await a.sync(["bob"])
    assert synced.epoch == (await b.sync(["Alice"])).epoch
    assert (synced.conflicts, synced.dropped) == ([], ["carol"])
    assert (await b.names()) == (["Alice", "bob"], 2)


@pytest_twisted.ensureDeferred
async def test_a_private_line_is_published_to_the_holders_node(
    open_registry: Opener, listen: Callable[..., Awaitable[list[Any]]]
) -> None:
    """whisper finds the target's node and publishes there; nobody holds a
    nickname that is free, and a node does not whisper to itself."""
    a, b = await open_registry("a"), await open_registry("b")
    heard = await listen(b.node_channel)
    await b.claim("Bob")
    assert (await a.whisper("BOB", b"hello\n")) is True
    await until(lambda: len(heard) == 1)
    assert heard == [(b.node_channel, b"bob hello\n")]
    assert (await a.whisper("nobody", b"hello\n")) is False
    assert (await b.whisper("bob", b"hello\n")) is False


@pytest_twisted.ensureDeferred
async def test_calls_fail_at_once_when_redis_is_gone(
    redis: RedisServer, open_registry: Opener
) -> None:
    """With Redis stopped, a call fails with ClusterUnreachable at once
    instead of waiting for a connection."""
    a = await open_registry("a", timeout=5.0)
    redis.stop()
    await until(lambda: not a.commands.connected)
    started = time.monotonic()
    assert isinstance(await failure_of(a.claim("alice")), ClusterUnreachable)
    assert isinstance(await failure_of(a.names()), ClusterUnreachable)
    assert time.monotonic() - started < 1.0


@pytest_twisted.ensureDeferred
async def test_calls_fail_within_the_time_limit_when_redis_hangs(
    redis: RedisServer, open_registry: Opener
) -> None:
    """A frozen Redis keeps the connection open and answers nothing: the call
    fails after the time limit, and once Redis is back, calls work again."""
    a = await open_registry("a", timeout=0.3)
    redis.pause()
    try:
        started = time.monotonic()
        assert isinstance(await failure_of(a.claim("alice")), ClusterUnreachable)
        assert 0.25 < time.monotonic() - started < 2.0
    finally:
        redis.resume()

    async def works() -> bool:
        try:
            await a.names()
        except ClusterUnreachable:
            return False
        return True

    deadline = time.monotonic() + 5
    while not await works():
        assert time.monotonic() < deadline, "Redis never answered again"
        await deferLater(r, 0.05)


def test_redis_urls() -> None:
    """Host, port, database and password come from the URL; mistakes are
    sentences."""
    assert RedisAddress.parse("redis://h") == RedisAddress("h", 6379, 0)
    assert RedisAddress.parse("redis://:s%40cret@10.0.0.1:7000/3") == RedisAddress(
        "10.0.0.1", 7000, 3, None, "s@cret"
    )
    assert RedisAddress.parse("redis://u:p@[::1]:6380/") == RedisAddress(
        "::1", 6380, 0, "u", "p"
    )
    assert str(RedisAddress.parse("redis://u:p@[::1]:6380/2")) == "redis://[::1]:6380/2"
    for url, words in [
        ("http://h", "must start with redis://"),
        ("redis://", "names no host"),
        ("redis://h:port", "is not a Redis URL"),
        ("redis://h/zero", "must be a number"),
        ("redis://h/\u00b2", "must be a number"),  # a digit to isdigit(), not int()
        ("redis://h/0?x=1", "no ?query"),
    ]:
        with pytest.raises(ValueError, match=words.replace("?", r"\?")):
            RedisAddress.parse(url)


@pytest_twisted.ensureDeferred
async def test_what_the_lua_scripts_publish_decodes_as_its_kind(
    open_registry: Opener, listen: Callable[..., Awaitable[list[Any]]]
) -> None:
    """Three kinds of message are built by Lua in Redis, not by encode():
    a reaped node's departures (_REAP), a stopping node's (_LEAVE), and
    those announced late (_ANNOUNCE). Each decodes as its kind."""
    dying = await open_registry("dying", lease=0.3)
    b, c = await open_registry("b"), await open_registry("c")
    heard = await listen(b.public_channel)
    await dying.claim("alice")
    await c.claim("carol")
    await deferLater(r, 0.4)
    await b.reap("[1.2.3]")
    await c.leave("[1.2.4]")
    await b.announce([b"[1.2.5]-Deconnection de dave\n"], 60.0)
    await until(lambda: len(heard) >= 3)
    decoded = [decode(Channel.PUBLIC, message) for _, message in heard]
    assert decoded[:2] == [
        ReapedDeparture(b"b", b"dying", "[1.2.3]-Déconnection de alice\n".encode()),
        Public(b"c", "[1.2.4]-Déconnection de carol\n".encode()),
    ]
    late = decoded[2]
    assert isinstance(late, LateDeparture)
    assert (late.origin, late.line) == (b"b", b"[1.2.5]-Deconnection de dave\n")
    assert late.entry  # its ID in the stream "left"
