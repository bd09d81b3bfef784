"""The twistd plugin's options: every value checked, every mistake a sentence."""

from __future__ import annotations

import errno
import os
import resource
from typing import Any

import pytest
from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from chatproto.config import ServerConfig
from chatproto.server import ChatFactory
from chatproto.tap import CannotStart, Options, _Shutdown, cannot_listen, makeService


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_match_the_protocol() -> None:
    """With no option: port 7000, pings every 10 s, 3 missed, 4096-byte lines."""
    options = parse()
    assert options["port"] == "tcp:7000"
    assert options["config"] == ServerConfig()
    config = options["config"]
    assert (config.ping_interval, config.max_missed_pings) == (10.0, 3)
    assert (config.max_line, config.registration_timeout) == (4096, 60.0)


def test_every_option_reaches_the_config() -> None:
    options = parse(
        "--port=tcp:7100:interface=127.0.0.1",
        "--ping-interval=2.5",
        "--max-missed-pings=5",
        "--max-line=512",
        "--registration-timeout=30",
        "--list-limit=7",
        "--join-notice-limit=9",
        "--flood-burst=10",
        "--flood-rate=4.5",
        "--flood-queue=50",
        "--flood-queue-bytes=4096",
        "--max-output=65536",
        "--max-per-ip=0",
        "--max-connections=100",
        "--max-per-network=30",
        "--network-prefix=20",
        "--network-prefix6=56",
        "--max-unregistered=40",
        "--shutdown-timeout=1",
        "--batch-delay=0.01",
        "--batch-threshold=1000",
        "--pass-size=64",
        "--nodelay=all",
    )
    assert options["port"] == "tcp:7100:interface=127.0.0.1"
    assert options["config"] == ServerConfig(
        ping_interval=2.5,
        max_missed_pings=5,
        max_line=512,
        registration_timeout=30,
        list_limit=7,
        join_notice_limit=9,
        flood_burst=10,
        flood_rate=4.5,
        flood_queue=50,
        flood_queue_bytes=4096,
        max_output=65536,
        max_per_ip=0,
        max_connections=100,
        max_per_network=30,
        network_prefix=20,
        network_prefix6=56,
        max_unregistered=40,
        shutdown_timeout=1,
        batch_delay=0.01,
        batch_threshold=1000,
        pass_size=64,
        nodelay="all",
    )


def test_the_admission_shares_default_to_parts_of_max_connections() -> None:
    """Not given, --max-per-network is a quarter of --max-connections and
    --max-unregistered half of it; given, they are what was given."""
    config = parse("--max-connections=400")["config"]
    assert (config.max_per_network, config.max_unregistered) == (None, None)
    assert (config.network_limit, config.unregistered_limit) == (100, 200)
    assert (config.network_prefix, config.network_prefix6) == (24, 48)
    config = parse("--max-connections=400", "--max-per-network=0")["config"]
    assert (config.network_limit, config.unregistered_limit) == (0, 200)


def test_the_admission_shares_follow_the_connections_that_fit() -> None:
    """When the open-file limit lowers --max-connections, the default shares
    are parts of what fits, not of what was asked."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-file limit")
    asked = hard + 1000
    top = makeService(parse("--port=tcp:0", f"--max-connections={asked}"))
    assert isinstance(top, MultiService)
    factory = next(s.factory for s in top if isinstance(s, _Shutdown))
    config = factory.config
    assert config.max_connections < asked
    assert config.network_limit == config.max_connections // 4


@pytest.mark.parametrize(
    ("port", "endpoint"),
    [
        ("7001", "tcp:7001"),
        ("tcp6:7002", "tcp6:7002"),
        ("unix:/tmp/chat.sock", "unix:/tmp/chat.sock"),
    ],
)
def test_port_takes_a_number_or_an_endpoint(port: str, endpoint: str) -> None:
    assert parse("--port", port)["port"] == endpoint


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ping-interval=soon"], "--ping-interval takes a number, not 'soon'."),
        (["--ping-interval=-1"], "--ping-interval takes a number of at least 0."),
        (["--ping-interval=nan"], "--ping-interval takes a number of at least 0."),
        (
            ["--max-missed-pings=0"],
            "--max-missed-pings takes a whole number of at least 1.",
        ),
        (
            ["--max-missed-pings=2.5"],
            "--max-missed-pings takes a whole number, not '2.5'.",
        ),
        (["--max-line=8"], "--max-line takes a whole number of at least 16."),
        (["--flood-rate=fast"], "--flood-rate takes a number, not 'fast'."),
        (["--max-output=1k"], "--max-output takes a whole number, not '1k'."),
        (["--nodelay=yes"], "--nodelay takes talkers, all, none, not 'yes'."),
        (
            ["--max-per-network=-1"],
            "--max-per-network takes a whole number of at least 0.",
        ),
        (
            ["--max-unregistered=half"],
            "--max-unregistered takes a whole number, not 'half'.",
        ),
        (["--network-prefix=33"], "--network-prefix takes at most 32."),
        (["--network-prefix6=80"], "--network-prefix6 takes at most 64."),
    ],
)
def test_bad_values_are_explained(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert str(raised.value) == message


def test_bad_endpoint_is_explained() -> None:
    with pytest.raises(UsageError) as raised:
        parse("--port", "carrier-pigeon:7000")
    assert "'carrier-pigeon:7000' is not an endpoint" in str(raised.value)
    assert "tcp:7000" in str(raised.value)


@pytest.mark.parametrize("port", ["70000", "tcp:70000", "tcp6:-1", "tcp:port=99999"])
def test_a_port_beyond_65535_is_refused_before_listening(port: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse("--port", port)
    assert str(raised.value).endswith(" is not a port number (1-65535).")


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (
            CannotListenError("", 7000, OSError(errno.EADDRINUSE, "in use")),
            "port 7000 is already in use.",
        ),
        (
            CannotListenError("::1", 7000, OSError(errno.EADDRINUSE, "in use")),
            "port 7000 on ::1 is already in use.",
        ),
        (
            CannotListenError(
                None, "/run/chat.sock", OSError(errno.EACCES, os.strerror(errno.EACCES))
            ),
            "cannot listen on the socket /run/chat.sock: Permission denied.",
        ),
    ],
)
def test_a_refusal_to_listen_is_one_sentence(
    error: CannotListenError, sentence: str
) -> None:
    assert cannot_listen(error) == sentence


def test_make_service_serves_a_chat_factory_with_the_config() -> None:
    options = parse("--port=tcp:0", "--max-line=100")
    top = makeService(options)
    assert isinstance(top, MultiService)
    factories = [
        s.factory for s in top if isinstance(getattr(s, "factory", None), ChatFactory)
    ]
    assert len(factories) == 2  # the listener's, and the one that says goodbye
    assert factories[0] is factories[1]
    assert factories[0].config.max_line == 100


@pytest.mark.parametrize(
    ("port", "backlog"),
    [
        ("tcp:0:interface=127.0.0.1", 2000),  # sized for --max-connections
        ("tcp:0:interface=127.0.0.1:backlog=7", 7),  # an explicit one wins
    ],
)
def test_the_listen_backlog_is_sized_for_the_connections(
    port: str, backlog: int
) -> None:
    """A herd that connects at once (a restart) fits in the listen queue:
    Twisted's default of 50 leaves the overflow connected on the client's
    side and never welcomed."""
    reactor = MemoryReactorClock()
    options = parse("--port", port, "--max-connections", "2000")
    makeService(options, reactor=reactor).startService()
    assert [listen[2] for listen in reactor.tcpServers] == [backlog]


class RefusingReactor(MemoryReactorClock):
    """A reactor whose every TCP port is taken."""

    def listenTCP(self, port: int, *args: object, **kwargs: object) -> Any:
        raise CannotListenError("127.0.0.1", port, OSError(errno.EADDRINUSE, "used"))


def test_a_refusal_to_listen_ends_twistd_without_a_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The sentence goes to the terminal's stderr; twistd cleans up after an
    Exception out of the start, and Python exits quietly on a SystemExit:
    CannotStart is both, with status 1."""
    options = parse("--port", "tcp:7000:interface=127.0.0.1")
    top = makeService(options, reactor=RefusingReactor())
    with pytest.raises(CannotStart) as raised:
        top.privilegedStartService()
    assert isinstance(raised.value, Exception)
    assert raised.value.code == 1
    assert str(raised.value) == "port 7000 on 127.0.0.1 is already in use."
    assert capfd.readouterr().err == (
        "twistd chat: port 7000 on 127.0.0.1 is already in use.\n"
    )


def test_nick_days_sets_how_long_an_unused_protected_nickname_lasts() -> None:
    assert parse()["config"].nick_days == 90
    config = parse("--nick-days=30.5")["config"]
    assert config.nick_days == 30.5
    assert ChatFactory(config, clock=MemoryReactorClock()).protection.days == 30.5
    with pytest.raises(UsageError) as raised:
        parse("--nick-days=0")
    assert str(raised.value) == "--nick-days takes a number of at least 1."
