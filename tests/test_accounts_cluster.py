"""Protected nicknames in a cluster: the book in Redis (RedisAccounts), so
that a nickname protected on one node is protected on every node. Real
ChatFactory and ClusterNode objects on a real redis-server (the nodes of
tests/test_cluster.py, given their book as tap.py does)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, globalLogPublisher

from chatproto import wire
from chatproto._redis import Commands
from chatproto.accounts import _FIND, _TAKE, Account, RedisAccounts, RedisTries
from chatproto.cluster_membership import NodeState
from chatproto.operators import (
    CLUSTER_TRIES_PER_SECOND,
    FORGET_AFTER,
    Busy,
    Throttled,
    check_here,
    make_hash,
)
from chatproto.registry import ClusterUnreachable
from chatproto.session import State
from tests.redis_fixture import RedisServer
from tests.test_cluster import Node, received, until
from tests.test_cluster_stall import CONFIG, RENEW, Cluster

pytestmark = pytest.mark.redis
r: Any = reactor
CHEAP = {"n": 16, "r": 1, "p": 1}


@pytest_twisted.ensureDeferred
async def test_the_redis_book_finds_protects_touches_and_frees_by_key(
    commands: Commands, redis: RedisServer
) -> None:
    book = RedisAccounts(commands, "t")
    assert await book.find("Prof") is None
    stored = make_hash("secret", **CHEAP)
    await book.protect(Account("Prof", stored, 1_795_633_048.25))
    assert await book.find("PROF") == Account("Prof", stored, 1_795_633_048.25)
    assert redis.cli("TYPE", "chatproto:t:accounts").strip() == "hash"
    await book.touch("prof", 1_795_700_000.5)
    assert await book.find("prof") == Account("Prof", stored, 1_795_700_000.5)
    await book.unprotect("pRoF")
    assert await book.find("prof") is None
    await book.touch("prof", 1.0)  # nothing to touch: nothing made
    assert redis.cli("EXISTS", "chatproto:t:accounts").strip() == "0"


@pytest_twisted.ensureDeferred
async def test_the_redis_book_fails_as_unreachable_when_redis_is_gone(
    commands: Commands, redis: RedisServer
) -> None:
    book = RedisAccounts(commands, "t")
    redis.stop()
    await until(lambda: not commands.connected)
    with pytest.raises(ClusterUnreachable):
        await book.find("prof")
    await deferLater(r, 0)


class AccountsNode(Node):
    """A node whose protected nicknames are in Redis, as tap.py makes it."""

    def __init__(self, redis: RedisServer) -> None:
        super().__init__(redis)
        self.factory.protection.accounts = self.cluster.accounts
        self.factory.protection.tries.shared = self.cluster.tries


@pytest.fixture
def nodes(redis: RedisServer) -> Iterator[Callable[[], AccountsNode]]:
    started: list[AccountsNode] = []

    def start() -> AccountsNode:
        node = AccountsNode(redis)
        started.append(node)
        return node

    yield start
    pytest_twisted.blockon(
        gatherResults([n.stop() for n in started if n.cluster.running])
    )


@pytest_twisted.ensureDeferred
async def test_a_nickname_protected_on_one_node_is_protected_on_every_node(
    nodes: Callable[[], AccountsNode], redis: RedisServer
) -> None:
    one, two = nodes(), nodes()
    await one.ready()
    await two.ready()
    prof = await one.user("prof")
    prof.send(b"/register mot de passe\n")
    await received(prof, wire.notice(wire.REGISTER_DONE.format("prof")))
    prof.send(b"/quit\n")
    users = "chatproto:test:users"
    await until(lambda: redis.cli("HEXISTS", users, "prof").strip() == "0")
    other = two.connect()
    other.send(b"/pseudo prof\n")
    prompt = wire.notice(wire.PASSWORD_PROMPT)
    await until(lambda: other.transport.value() != b"")
    assert other.take() == prompt
    other.send(b"pas le bon\n")
    assert await received(other, wire.TAKEN) == wire.TAKEN
    other.take()
    other.send(b"/pseudo prof mot de passe\n")
    got = await received(other, b"=>prof\n")
    assert got.startswith(b"Bienvenue prof\n")


def test_a_node_of_a_cluster_keeps_its_protected_nicknames_in_redis() -> None:
    from chatproto.cluster import ClusterNode
    from chatproto.tap import Options, makeService

    options = Options()
    options.parseOptions(["--port=tcp:0", "--redis", "redis://127.0.0.1:1/0"])
    node = next(iter(makeService(options)))  # type: ignore[call-overload]
    assert isinstance(node, ClusterNode)
    assert isinstance(node.accounts.book, RedisAccounts)
    assert node.accounts.book.key == "chatproto:chat:accounts"
    assert node.chat.protection.accounts is node.accounts  # type: ignore[attr-defined]
    assert node.chat.protection.tries.shared is node.tries  # type: ignore[attr-defined]
    assert node.tries.prefix == "chatproto:chat:tries:nick:"


PROMPT = wire.notice(wire.PASSWORD_PROMPT)


@pytest_twisted.ensureDeferred
async def test_a_node_that_is_joining_looks_nicknames_up_once_it_has_joined(
    nodes: Callable[[], AccountsNode], redis: RedisServer
) -> None:
    """A registration looks its nickname up before it claims it: on a node
    that has not joined yet, the lookup waits for the join as the claim
    does (it went to a connection not up yet: "inscription impossible")."""
    one = nodes()
    await one.ready()
    prof = await one.user("prof")
    prof.send(b"/register mot de passe\n")
    await received(prof, wire.notice(wire.REGISTER_DONE.format("prof")))
    prof.send(b"/quit\n")
    users = "chatproto:test:users"
    await until(lambda: redis.cli("HEXISTS", users, "prof").strip() == "0")
    two = nodes()  # started: joining
    assert two.cluster.state is NodeState.JOINING
    asker, owner, bob = two.connect(), two.connect(), two.connect()
    asker.send(b"/pseudo prof\n")
    owner.send(b"/pseudo prof mot de passe\n")
    bob.send(b"/pseudo bob\n")
    assert await received(asker, PROMPT) == PROMPT
    assert (await received(owner, b"=>prof\n")).startswith(b"Bienvenue prof\n")
    assert (await received(bob, b"=>bob\n")).startswith(b"Bienvenue bob\n")


PROTECTED = [b"1795633048.25\tprof\t" + make_hash("secret", **CHEAP).encode(), None]


def joining_cluster() -> Cluster:
    """A node not joined yet (its Redis a double), its book as tap.py wires
    it, "prof" protected there."""
    cluster = Cluster(joined=False)
    cluster.factory.protection.accounts = cluster.node.accounts
    cluster.redis.answers[_FIND] = lambda args: (
        PROTECTED if args[1] == "prof" else [None, None]
    )
    return cluster


def test_a_lookup_made_while_the_node_joins_goes_to_redis_once_it_joined() -> None:
    cluster = joining_cluster()
    asker = cluster.connect()
    asker.send(b"/pseudo prof\n")
    cluster.clock.advance(CONFIG.redis_timeout / 2)
    assert asker.take() == b"" and cluster.redis.count(_FIND) == 0
    cluster.subscribed()
    assert asker.take() == PROMPT
    assert cluster.redis.count(_FIND) == 1


def test_a_lookup_waits_for_the_join_no_longer_than_the_redis_timeout(
    events: list[dict[str, Any]],
) -> None:
    """Refused as the claim was, without a warning per user."""
    cluster = joining_cluster()
    asker = cluster.connect()
    asker.send(b"/pseudo prof secret\n")
    cluster.clock.advance(CONFIG.redis_timeout)
    assert asker.take() == wire.notice(wire.UNAVAILABLE)
    assert cluster.redis.count(_FIND) == 0
    assert [e for e in events if e.get("act") == "accounts-failed"] == []
    asker.send(b"/pseudo bob\n")
    cluster.subscribed()
    assert b"Bienvenue bob\n" in asker.take()
    assert cluster.clock.getDelayedCalls() == [cluster.node.heartbeat.call]


def test_a_node_stopping_refuses_the_lookups_that_wait(
    events: list[dict[str, Any]],
) -> None:
    cluster = joining_cluster()
    asker = cluster.connect()
    asker.send(b"/pseudo prof\n")
    cluster.node.stopService()
    assert asker.take() == wire.notice(wire.UNAVAILABLE)
    assert cluster.redis.count(_FIND) == 0
    assert [e for e in events if e.get("act") == "accounts-failed"] == []


# Password tries, counted in Redis (issue 21: with N nodes an address got N
# times the tries, and the cluster N times the checks in total)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


@pytest_twisted.ensureDeferred
async def test_the_redis_count_throttles_an_address_and_forgets_it_when_right(
    commands: Commands, redis: RedisServer
) -> None:
    tries = RedisTries(commands, "t", "nick")
    assert [await tries.take("192.0.2.1") for _ in range(3)] == [1, 2, 3]
    with pytest.raises(Throttled) as throttled:
        await tries.take("192.0.2.1")
    assert not isinstance(throttled.value, Busy)
    assert throttled.value.wait == 5
    assert await tries.take("192.0.2.2") == 1  # another address
    failures = "chatproto:t:tries:nick:failures:192.0.2.1"
    assert redis.cli("GET", failures) == "3"  # a refused try: not counted
    ttl = int(redis.cli("PTTL", failures))
    assert FORGET_AFTER * 1000 - 5000 < ttl <= FORGET_AFTER * 1000
    await tries.right("192.0.2.1")
    assert await tries.take("192.0.2.1") == 1
    assert [await tries.take("192.0.2.2") for _ in range(2)] == [2, 3]
    with pytest.raises(Throttled):
        await tries.take("192.0.2.2")
    redis.cli("PEXPIRE", "chatproto:t:tries:nick:wait:192.0.2.2", "1")  # waited
    await until(
        lambda: redis.cli("EXISTS", "chatproto:t:tries:nick:wait:192.0.2.2") == "0"
    )
    assert await tries.take("192.0.2.2") == 4  # one try, then wait again
    with pytest.raises(Throttled):
        await tries.take("192.0.2.2")


@pytest_twisted.ensureDeferred
async def test_the_cluster_takes_so_many_tries_a_second_in_all(
    commands: Commands, redis: RedisServer
) -> None:
    tries = RedisTries(commands, "t", "nick")
    total = "chatproto:t:tries:nick:total"
    for i in range(5):
        assert await tries.take(f"198.51.100.{i}") == 1
    assert redis.cli("GET", total).strip() == "5"
    assert 0 < int(redis.cli("PTTL", total)) <= 1000
    redis.cli("SET", total, str(CLUSTER_TRIES_PER_SECOND), "PX", "800")
    with pytest.raises(Busy) as busy:
        await tries.take("203.0.113.1")
    assert busy.value.wait == 1
    failures = "chatproto:t:tries:nick:failures:203.0.113.1"
    assert redis.cli("EXISTS", failures).strip() == "0"  # refused: not counted


@pytest_twisted.ensureDeferred
async def test_wrong_passwords_on_one_node_count_on_the_others(
    nodes: Callable[[], AccountsNode], redis: RedisServer
) -> None:
    """An address spreading its guesses over the nodes is throttled as on
    one server: three wrong passwords on one node, and the next try on
    another is refused, even the right one; a right one on either then
    forgets them."""
    one, two = nodes(), nodes()
    await one.ready()
    await two.ready()
    stored = make_hash("mot de passe", **CHEAP)
    await one.cluster.accounts.protect(Account("prof", stored, r.seconds()))
    guesser = one.connect()  # every client of these nodes has one address
    address = guesser.proto.session.host
    failures = f"chatproto:test:tries:nick:failures:{address}"
    for guess in (b"un", b"deux", b"trois"):
        guesser.send(b"/pseudo prof " + guess + b"\n")
        await received(guesser, wire.TAKEN)
        guesser.take()
    elsewhere = two.connect()
    elsewhere.send(b"/pseudo prof\n" + b"mot de passe\n")
    throttled = wire.OP_THROTTLED.split("{}")[0].encode()
    got = await received(elsewhere, throttled)
    assert got.startswith(PROMPT + throttled)
    assert elsewhere.proto.session.state is State.PASSWORD
    assert redis.cli("GET", failures) == "3"  # the refused try: not counted
    redis.cli("DEL", f"chatproto:test:tries:nick:wait:{address}")  # waited
    elsewhere.take()
    elsewhere.send(b"mot de passe\n")
    assert (await received(elsewhere, b"=>prof\n")).startswith(b"Bienvenue prof\n")
    await until(lambda: redis.cli("EXISTS", failures) == "0")  # forgotten


def serving_cluster() -> Cluster:
    cluster = joining_cluster()
    cluster.factory.protection.tries.shared = cluster.node.tries
    cluster.subscribed()
    return cluster


def test_tries_that_redis_cannot_count_are_refused_and_never_checked(
    events: list[dict[str, Any]],
) -> None:
    """Redis away when a password is tried: "try again later", the prompt
    kept, no scrypt run, one warning and no traceback."""
    cluster = serving_cluster()
    checked: list[str] = []

    def checker(password: str, stored: str) -> Deferred[bool]:
        checked.append(password)
        return check_here(password, stored)

    cluster.factory.protection.checker = checker
    cluster.redis.answers[_TAKE] = ClusterUnreachable("Redis did not answer in time")
    asker = cluster.connect()
    asker.send(b"/pseudo prof\nsecret\n")
    assert asker.take() == PROMPT + wire.notice(wire.UNAVAILABLE)
    asker.send(b"/pseudo prof secret\n")  # the prompt kept: a password
    assert asker.take() == wire.notice(wire.UNAVAILABLE)
    assert checked == []
    assert not [e for e in events if e.get("log_failure") is not None]
    warned = [e for e in events if e.get("act") == "accounts-failed"]
    assert len(warned) == 2 and "secret" not in repr(warned)
    cluster.redis.answers[_TAKE] = [1, 1]
    asker.send(b"secret\n")
    assert asker.take().startswith(b"Bienvenue prof\n")
    assert checked == ["secret"]


def test_a_node_counts_each_try_in_redis_under_its_address() -> None:
    cluster = serving_cluster()
    cluster.redis.answers[_TAKE] = [0, 4200]  # the address must wait
    asker = cluster.connect()
    asker.send(b"/pseudo prof secret\n")
    assert asker.take() == wire.notice(wire.OP_THROTTLED.format(5))
    (args,) = cluster.redis.arguments(_TAKE)
    assert args[:3] == (
        "chatproto:test:tries:nick:failures:192.0.2.1",
        "chatproto:test:tries:nick:wait:192.0.2.1",
        "chatproto:test:tries:nick:total",
    )


def test_a_node_cut_off_refuses_a_lookup_at_once_without_a_warning_each(
    events: list[dict[str, Any]],
) -> None:
    """Out of the cluster, a claim fails at once: so does the lookup before
    it, without a call to Redis and without a log line per user (the node
    said once that it is cut off)."""
    cluster = serving_cluster()
    cluster.redis.answers[RENEW] = ClusterUnreachable("Redis did not answer in time")
    cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.CUT_OFF
    finds = cluster.redis.count(_FIND)
    asker = cluster.connect()
    asker.send(b"/pseudo prof\n")
    asker.send(b"/pseudo bob\n")
    assert asker.take() == wire.notice(wire.UNAVAILABLE) * 2
    assert cluster.redis.count(_FIND) == finds
    assert [e for e in events if e.get("act") == "accounts-failed"] == []
