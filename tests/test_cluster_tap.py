"""The cluster mode's twistd options: --redis, --cluster, --node-timeout,
--redis-timeout; without --redis nothing changes."""

from __future__ import annotations

import dataclasses

import pytest
from twisted.application.service import MultiService
from twisted.python.usage import UsageError

from chatproto.cluster import ClusterNode, NodeState
from chatproto.config import ClusterConfig, RedisAddress
from chatproto.server import ChatFactory
from chatproto.tap import Options, makeService


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_without_redis_there_is_no_cluster() -> None:
    """The defaults: a single process, whatever --cluster says."""
    assert parse()["cluster_config"] is None
    assert parse("--cluster", "other")["cluster_config"] is None


def test_redis_and_the_cluster_options_reach_the_cluster_config() -> None:
    options = parse(
        "--redis",
        "redis://:pw@10.1.2.3:6380/4",
        "--cluster",
        "salon-2",
        "--node-timeout",
        "12",
        "--redis-timeout",
        "0.5",
    )
    assert options["cluster_config"] == ClusterConfig(
        redis=RedisAddress("10.1.2.3", 6380, 4, None, "pw"),
        name="salon-2",
        node_timeout=12.0,
        redis_timeout=0.5,
    )


def test_cluster_defaults() -> None:
    """Dead nodes are gone within 30 s; Redis has 2 s to answer a call; the
    lease is renewed every second."""
    config = parse("--redis", "redis://localhost")["cluster_config"]
    assert config == ClusterConfig(RedisAddress("localhost"), "chat", 30.0, 2.0)
    assert (config.tick, config.lease) == (1.0, 29.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--redis", "localhost:6379"], "--redis: 'localhost:6379' is not a Redis URL"),
        (["--redis", "redis://h/x"], "the database after the / must be a number"),
        (
            ["--redis", "redis://h", "--cluster", "a b"],
            "--cluster: 'a b' is not a cluster name",
        ),
        (
            ["--redis", "redis://h", "--node-timeout", "0.1"],
            "--node-timeout takes a number of at least 0.5.",
        ),
        (
            ["--redis", "redis://h", "--node-timeout", "2", "--redis-timeout", "1.5"],
            "--redis-timeout must be at most half of --node-timeout",
        ),
        (["--redis-timeout", "soon"], "--redis-timeout takes a number, not 'soon'."),
    ],
)
def test_mistakes_are_sentences(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert message in str(raised.value)


def test_help_documents_the_cluster_options() -> None:
    text = str(Options())
    for option in ("--redis=", "--cluster=", "--node-timeout=", "--redis-timeout="):
        assert option in text


def test_make_service_with_redis_builds_a_node_that_is_registry_and_relay() -> None:
    """The node is the factory's registry and relay, and the first service
    (stopped last, after the users were told); nothing connects before the
    service starts."""
    top = makeService(parse("--port=tcp:0", "--redis", "redis://127.0.0.1:1/0"))
    assert isinstance(top, MultiService)
    services = list(top)
    node = services[0]
    assert isinstance(node, ClusterNode)
    assert node.state is NodeState.STOPPED and not node.running
    for connection in (node.commands, node.subscription):
        assert not connection.started
    factory = node.chat
    assert isinstance(factory, ChatFactory)
    assert factory.registry is node.nicknames and factory.room.relay is node.relay
    assert node.config.name == "chat"


def test_the_cluster_options_are_the_fields_of_cluster_config() -> None:
    """Their names, defaults and help are written once, on the fields of
    ClusterConfig: the options given nothing make ClusterConfig's defaults,
    and --help shows them."""
    config = parse("--redis", "redis://h")["cluster_config"]
    assert config == ClusterConfig(RedisAddress("h"))
    documented = {row[0]: row for row in Options.optParameters}
    for field in dataclasses.fields(ClusterConfig):
        _, _, default, help = documented[field.metadata["option"]]
        assert help == field.metadata["help"]
        if field.default is not dataclasses.MISSING:
            assert default == str(field.default) == str(getattr(config, field.name))
