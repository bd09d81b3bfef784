"""The metrics (chatproto/metrics.py): the room's counters, each counted
where its event happens, and /metrics, read by Prometheus's own parser."""

from __future__ import annotations

import io
import json
from typing import Any, cast

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger
from twisted.python.usage import UsageError
from twisted.web.client import Agent, readBody
from twisted.web.server import Site

from chatproto import logs, metrics, room, tap
from chatproto.metrics import LATENCY_BUCKETS
from chatproto.metrics_page import MetricsPage, metrics_site
from chatproto.moderation import Moderation
from chatproto.operators import make_hash
from chatproto.registry import nick_key
from chatproto.server import ChatFactory
from chatproto.tap import Options, makeService
from chatproto.testing import Chat, RecordingConnection
from chatproto.web import WebSession

r: Any = reactor


def quiet_chat(**config: Any) -> Chat:
    """No pings, no arrival notices, no flood limit unless asked."""
    config.setdefault("ping_interval", 0)
    config.setdefault("join_notice_limit", 0)
    config.setdefault("flood_rate", 0)
    return Chat(**config)


def scrape(chat: Chat) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What /metrics says, parsed by prometheus-client: sample name and
    labels -> value."""
    text = MetricsPage(chat.factory).render_GET(cast(Any, FakeRequest())).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class FakeRequest:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value


def departures(chat: Chat) -> dict[str, int]:
    return {k: v for k, v in chat.factory.metrics.departures.items() if v}


def refusals(chat: Chat) -> dict[str, int]:
    return {k: v for k, v in chat.factory.metrics.refusals.items() if v}


# Lines and deliveries


def test_public_and_private_lines_are_counted_once_each() -> None:
    chat = quiet_chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"bonjour\nca va\n")
    bob.send(b"msg alice un secret\n")
    bob.send(b"msg nobody rien\n")  # no such user: delivered to no one
    chat.advance(0)
    m = chat.factory.metrics
    assert (m.public_lines, m.private_lines) == (2, 1)


def test_deliveries_count_each_line_given_to_each_user_not_the_writes() -> None:
    """Two lines by alice in one turn reach bob and carol in one write
    each: four deliveries; alice's own lines are not given back to her.
    Each line is counted as it is queued, for every member but its sender:
    what the fan-out then writes, once each."""
    chat = quiet_chat()
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    for user in (alice, bob, carol):
        user.take()
    alice.send(b"un\ndeux\n")
    assert bob.take().count(b"\n") == carol.take().count(b"\n") == 2
    assert chat.factory.metrics.deliveries == 4
    # bob speaks while alice's next line waits: the pass gives bob only
    # alice's line, alice only bob's, carol both.
    alice.send(b"trois\n")
    bob.send(b"quatre\n")
    chat.advance(0)
    assert chat.factory.metrics.deliveries == 4 + 1 + 1 + 2


def test_a_flush_counts_its_deliveries_too() -> None:
    chat = quiet_chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"un\n")
    chat.factory.room.flush()
    assert chat.factory.metrics.deliveries == 1
    assert bob.take().endswith(b"-alice: un\n")


# Departures, by the reason their caller gives


def test_each_way_of_leaving_is_counted_under_its_reason() -> None:
    chat = quiet_chat(ping_interval=10, max_missed_pings=1, max_output=10_000)
    quitter, lost, pinged, slow = (
        chat.user(n) for n in ("quitter", "lost", "pinged", "slow")
    )
    quitter.send(b"/quit\n")
    lost.transport.loseConnection()
    lost.proto.connectionLost()
    slow.buffer_full()
    talker = chat.user("talker")
    for _ in range(200):
        talker.send(b"x" * 100 + b"\n")
        chat.advance(0)
    for user in (pinged, talker):
        user.take()
    chat.advance(10)  # everyone is pinged; pinged never answers
    talker.send(b"pong\n")
    chat.advance(10)
    assert departures(chat) == {"quit": 1, "lost": 1, "slow_reader": 1, "ping": 1}
    chat.factory.shutdown()
    assert departures(chat)["shutdown"] == 1


def test_a_flooder_and_a_half_closed_connection_are_counted() -> None:
    chat = quiet_chat(flood_rate=1, flood_burst=1, flood_queue=2)
    flooder, ended = chat.user("flooder"), chat.user("ended")
    chat.advance(5)
    flooder.send(b"a\nb\nc\nd\ne\n")
    ended.proto.readConnectionLost()
    assert departures(chat) == {"flood": 1, "quit": 1}


def test_kicked_and_banned_users_are_counted_apart() -> None:
    chat = quiet_chat()
    table = {"root": make_hash("pw", n=16, r=1, p=1)}
    chat.factory.moderation = Moderation(chat.factory, table)
    root = chat.user("root", "192.0.2.9")
    root.send(b"/op pw\n")
    chat.user("troll", "192.0.2.7")
    chat.user("pest", "192.0.2.8")
    root.send(b"/kick troll spam\n")
    root.send(b"/ban pest 10\n")
    assert departures(chat) == {"kicked": 1, "banned": 1}
    chat.connect("192.0.2.8")
    assert refusals(chat) == {"banned": 1}


# Refusals


def test_each_refused_connection_or_nickname_is_counted_under_its_reason() -> None:
    chat = quiet_chat(
        max_per_ip=1, max_connections=3, max_per_network=2, max_unregistered=3
    )
    chat.user("alice", "192.0.2.1")
    chat.connect("192.0.2.1")  # a second from that address
    chat.connect("192.0.2.2")
    chat.connect("192.0.2.3")  # a third from 192.0.2.0/24
    other = chat.connect("198.51.100.1")
    other.send(b"/pseudo alice\n")
    other.send(b"/pseudo a b\n")
    chat.connect("203.0.113.1")  # a fourth connection: full
    assert refusals(chat) == {
        "per_address": 1,
        "per_network": 1,
        "full": 1,
        "nickname_taken": 1,
        "nickname_invalid": 1,
    }
    chat.factory.shutdown()
    chat.connect("203.0.113.2")
    assert refusals(chat)["stopping"] == 1


# Gauges, by front end


def test_users_and_connections_are_read_by_front_end_at_scrape_time() -> None:
    chat = quiet_chat()
    chat.user("alice")
    chat.connect()  # connected, no nickname yet
    web = WebSession(chat.factory, RecordingConnection(), "192.0.2.5")
    web.start()
    web.line_received(b"/pseudo bob")
    sample = scrape(chat)
    assert sample[("chatproto_users", (("front_end", "tcp"),))] == 1
    assert sample[("chatproto_users", (("front_end", "web"),))] == 1
    assert sample[("chatproto_connections", (("front_end", "tcp"),))] == 2
    assert sample[("chatproto_connections", (("front_end", "web"),))] == 1


# The fan-out latency


def test_a_pass_observes_the_wait_of_its_oldest_line() -> None:
    """With batching, a line waits for the pass: the histogram sees that wait
    once per pass, whatever the number of lines in it."""
    chat = quiet_chat(batch_delay=0.2, batch_threshold=0)
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"un\n")
    chat.advance(0)  # a pass now: the rate is not measured yet
    alice.send(b"deux\n")
    chat.advance(0.05)
    alice.send(b"trois\n")
    chat.advance(0.15)  # the pass is due 0.2 s after the first one
    assert bob.take().count(b"\n") == 3
    m = chat.factory.metrics
    assert sum(m.latency_buckets) == 2
    assert m.latency_sum == pytest.approx(0.2)
    assert m.latency_buckets[LATENCY_BUCKETS.index(0.25)] == 1


# /metrics


def test_metrics_names_and_labels_are_those_of_the_issue() -> None:
    chat = quiet_chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"bonjour\n")
    bob.send(b"msg alice psst\n")
    chat.advance(0)
    bob.send(b"/quit\n")
    sample = scrape(chat)
    assert sample[("chatproto_lines_total", (("kind", "public"),))] == 1
    assert sample[("chatproto_lines_total", (("kind", "private"),))] == 1
    # bonjour to bob, and bob's departure to alice: counted when queued
    assert sample[("chatproto_deliveries_total", ())] == 2
    assert sample[("chatproto_departures_total", (("reason", "quit"),))] == 1
    assert sample[("chatproto_departures_total", (("reason", "kicked"),))] == 0
    assert sample[("chatproto_refused_total", (("reason", "full"),))] == 0
    name = "chatproto_fanout_latency_seconds"
    assert sample[(name + "_count", ())] == 1
    assert sample[(name + "_bucket", (("le", "+Inf"),))] == 1
    assert sample[(name + "_bucket", (("le", "0.0005"),))] == 1  # a fake clock
    assert (name + "_sum", ()) in sample


@pytest_twisted.ensureDeferred
async def test_metrics_are_served_over_http_to_a_real_scrape() -> None:
    chat = quiet_chat()
    chat.user("alice").send(b"bonjour\n")
    chat.user("bob")
    endpoint = TCP4ServerEndpoint(r, 0, interface="127.0.0.1")
    port = await endpoint.listen(metrics_site(chat.factory, r))
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()
        response = await Agent(r).request(b"GET", url)
        body = (await readBody(response)).decode()
        missing = await Agent(r).request(b"GET", url[: -len(b"metrics")] + b"x")
        await readBody(missing)
    finally:
        await port.stopListening()
    assert response.code == 200
    kind = response.headers.getRawHeaders(b"content-type")[0]
    assert kind.startswith(b"text/plain; version=")
    assert missing.code == 404
    families = {f.name: f for f in text_string_to_metric_families(body)}
    users = families["chatproto_users"].samples
    assert {s.labels["front_end"]: s.value for s in users} == {"tcp": 2, "web": 0}
    assert families["chatproto_lines"].type == "counter"
    assert families["chatproto_fanout_latency_seconds"].type == "histogram"


# Logs


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The log events of the room, and of the metrics' refusals."""
    seen: list[dict[str, Any]] = []
    logger = Logger(observer=cast(ILogObserver, seen.append))
    # The room's Logger itself: its arrivals and departures (room.JOINED,
    # room.LEFT) are written through it.
    monkeypatch.setattr(room.log, "observer", seen.append)
    monkeypatch.setattr(metrics, "log", logger)
    return seen


def test_a_departure_is_one_log_event_with_its_reason(
    events: list[dict[str, Any]],
) -> None:
    chat = quiet_chat()
    chat.user("alice", "192.0.2.4").send(b"/quit\n")
    chat.advance(0)  # the end of the reactor turn: its events are written
    joined, left = (e for e in events if e.get("act") in ("join", "departure"))
    assert (joined["nick"], joined["address"], joined["front_end"]) == (
        "alice",
        "192.0.2.4",
        "tcp",
    )
    assert (left["act"], left["nick"], left["reason"]) == ("departure", "alice", "quit")


def test_a_refused_connection_is_logged_with_its_reason_and_address(
    events: list[dict[str, Any]],
) -> None:
    chat = quiet_chat(max_per_ip=1)
    chat.connect("192.0.2.4")
    chat.connect("192.0.2.4")
    (refused,) = (e for e in events if e.get("act") == "refused")
    assert (refused["reason"], refused["address"]) == ("per_address", "192.0.2.4")


def refused_events(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The refusal events since the last call: (reason, address, count)."""
    found = [
        (e["reason"], e["address"], e["count"])
        for e in events
        if e.get("act") == "refused"
    ]
    events.clear()
    return found


def test_a_herd_of_refusals_is_one_event_then_one_summary_per_interval(
    events: list[dict[str, Any]],
) -> None:
    chat = quiet_chat(max_per_ip=1)
    chat.connect("192.0.2.4")
    for _ in range(1000):  # a thousand reconnections in the same second
        chat.connect("192.0.2.4")
    assert refused_events(events) == [("per_address", "192.0.2.4", 1)]
    assert chat.factory.metrics.refusals["per_address"] == 1000  # every one
    chat.advance(metrics.REFUSAL_INTERVAL)
    assert refused_events(events) == [("per_address", "192.0.2.4", 999)]
    for _ in range(5):  # it goes on: still one event per interval
        chat.advance(1)
        chat.connect("192.0.2.4")
    assert refused_events(events) == []
    chat.advance(metrics.REFUSAL_INTERVAL - 5)
    [summary] = [e for e in events if e.get("act") == "refused"]
    assert (summary["count"], summary["seconds"]) == (5, metrics.REFUSAL_INTERVAL)
    events.clear()
    chat.advance(metrics.REFUSAL_INTERVAL)  # a quiet interval: forgotten
    assert refused_events(events) == []
    refusal_log = chat.factory.metrics.refusal_log
    assert refusal_log is not None and refusal_log.pending == {}
    chat.connect("192.0.2.4")  # and logged at once again
    assert refused_events(events) == [("per_address", "192.0.2.4", 1)]


def test_each_reason_and_address_has_its_own_first_event(
    events: list[dict[str, Any]],
) -> None:
    chat = quiet_chat(max_per_ip=1)
    chat.connect("192.0.2.4")
    chat.connect("192.0.2.5")
    chat.connect("192.0.2.4")
    chat.connect("192.0.2.5")
    chat.factory.stopping = True
    chat.connect("192.0.2.4")
    assert refused_events(events) == [
        ("per_address", "192.0.2.4", 1),
        ("per_address", "192.0.2.5", 1),
        ("stopping", "192.0.2.4", 1),
    ]


def test_past_the_cap_refusals_of_new_addresses_are_summed_by_reason(
    events: list[dict[str, Any]],
) -> None:
    clock = Clock()
    refusal_log = metrics.RefusalLog(clock, interval=10, cap=2)
    for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.3"):
        refusal_log.refused("full", host)
    refusal_log.refused("banned", "192.0.2.1")
    assert refused_events(events) == [
        ("full", "192.0.2.1", 1),
        ("full", "192.0.2.2", 1),
    ]
    assert len(refusal_log.pending) == 2  # bounded
    clock.advance(10)
    assert refused_events(events) == [("full", None, 3), ("banned", None, 1)]
    clock.advance(10)  # the tracked pairs were quiet: room again
    refusal_log.refused("full", "192.0.2.3")
    assert refused_events(events) == [("full", "192.0.2.3", 1)]


def test_a_json_log_line_of_a_departure_has_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What twistd --logger=chatproto.logs.json writes (see docs/operating.md, "Logs"):
    one JSON object a line, the event's fields named."""
    out = io.StringIO()
    monkeypatch.setattr(room.log, "observer", logs.json(out))
    chat = quiet_chat(max_output=10_000)
    slow = chat.user("slow")
    slow.buffer_full()
    talker = chat.user("talker")
    for _ in range(500):  # past 4 x max_output: cut at once
        talker.send(b"x" * 100 + b"\n")
        chat.advance(0)
    assert not slow.connected
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # one object a line
    (left,) = (e for e in records if e.get("act") == "departure")
    assert (left["nick"], left["reason"]) == ("slow", "slow_reader")
    assert left["log_level"]["name"] == "info"
    assert nick_key("slow") not in chat.factory.sessions


# --metrics ENDPOINT (chatproto/tap.py)


def test_the_metrics_option_listens_on_its_endpoint_beside_the_chat() -> None:
    options = Options()
    options.parseOptions(["--port=tcp:0", "--metrics=tcp:0:interface=127.0.0.1"])
    reactor = MemoryReactorClock()
    makeService(options, reactor=reactor).startService()
    (chat, *_), (site, *_) = (listen[1:] for listen in reactor.tcpServers)
    assert isinstance(chat, ChatFactory)
    assert isinstance(site, Site)
    assert reactor.tcpServers[1][3] == "127.0.0.1"


def test_without_the_metrics_option_nothing_more_listens() -> None:
    options = Options()
    options.parseOptions(["--port=tcp:0"])
    reactor = MemoryReactorClock()
    makeService(options, reactor=reactor).startService()
    assert len(reactor.tcpServers) == 1


def test_a_metrics_endpoint_twisted_does_not_know_is_one_sentence() -> None:
    with pytest.raises(UsageError, match=r"^--metrics: 'nonsense:1' is not an"):
        Options().parseOptions(["--metrics=nonsense:1"])


def test_the_metrics_option_without_prometheus_client_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = tap.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "prometheus_client" else real(name, *args)

    monkeypatch.setattr(tap.importlib.util, "find_spec", find_spec)
    with pytest.raises(UsageError, match=r"pip install 'chatproto\[metrics\]'"):
        Options().parseOptions(["--metrics=tcp:9100:interface=127.0.0.1"])
