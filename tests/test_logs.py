"""The events about users that come in bursts: one per kind and reactor
turn (chatproto/logs.py, TurnLog; docs/operating.md, "Logs")."""

from __future__ import annotations

import io
import json
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, formatEvent

from chatproto import logs, room, server, session
from chatproto.logs import Burst, TurnLog
from chatproto.testing import Chat, Client


def fields(event: dict[str, Any]) -> dict[str, Any]:
    """An event's own fields, without those twisted.logger adds."""
    return {k: v for k, v in event.items() if not k.startswith("log_")}


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def joined(seen: list[dict[str, Any]]) -> Burst:
    """A kind of event as the room's JOINED, written to C{seen}."""
    return Burst(
        Logger(namespace="chatproto.room", observer=cast(ILogObserver, seen.append)),
        "join",
        "{nick} joined",
        "{count} joined: {names}",
        "{nick} ({address})",
        ("nick", "address", "front_end"),
    )


def test_one_event_in_a_turn_is_written_as_it_always_was(
    seen: list[dict[str, Any]], joined: Burst
) -> None:
    clock = Clock()
    turn_log = TurnLog(clock)
    turn_log.add(joined, nick="alice", address="192.0.2.4", front_end="tcp")
    assert seen == []  # at the end of the turn
    clock.advance(0)
    (event,) = seen
    assert formatEvent(event) == "alice joined"
    assert event["log_format"] == "{nick} joined"
    assert event["log_namespace"] == "chatproto.room"
    assert fields(event) == {
        "act": "join",
        "nick": "alice",
        "address": "192.0.2.4",
        "front_end": "tcp",
    }
    assert clock.getDelayedCalls() == []


def test_500_in_one_turn_are_one_event_that_names_each(
    seen: list[dict[str, Any]], joined: Burst
) -> None:
    clock = Clock()
    turn_log = TurnLog(clock, most=500)
    users = [
        {"nick": f"b{i}", "address": f"127.1.0.{i % 3}", "front_end": "tcp"}
        for i in range(500)
    ]
    for user in users:
        turn_log.add(joined, **user)
    assert len(clock.getDelayedCalls()) == 1  # one call for the turn
    clock.advance(0)
    (event,) = seen
    text = formatEvent(event)
    assert text.startswith("500 joined: b0 (127.1.0.0), b1 (127.1.0.1), ")
    assert text.endswith(", b499 (127.1.0.1)")
    assert text.count(" (127.1.0.") == 500
    assert (event["act"], event["count"], event["users"]) == ("join", 500, users)


def test_an_event_names_at_most_its_bound_of_users(
    seen: list[dict[str, Any]], joined: Burst
) -> None:
    """Past MOST_USERS, the turn's users go in the next events: each named
    once, in their order; a lone last one is written as one always is."""
    clock = Clock()
    turn_log = TurnLog(clock)
    nicks = [f"b{i}" for i in range(2 * logs.MOST_USERS + 1)]
    for nick in nicks:
        turn_log.add(joined, nick=nick, address="192.0.2.1", front_end="tcp")
    clock.advance(0)
    assert [e.get("count") for e in seen] == [logs.MOST_USERS, logs.MOST_USERS, None]
    named = [u["nick"] for e in seen[:2] for u in e["users"]] + [seen[2]["nick"]]
    assert named == nicks
    assert formatEvent(seen[2]) == f"{nicks[-1]} joined"


def test_the_json_line_of_a_full_event_fits_a_journal_line() -> None:
    """journald cuts a line past its LineMax (48 KiB): the JSON line of the
    largest event, the longest nicknames and IPv6 networks, stays below."""
    out = io.StringIO()
    left = Burst(
        Logger(namespace="chatproto.room", observer=logs.json(out)),
        room.LEFT.act,
        room.LEFT.one,
        room.LEFT.many,
        room.LEFT.item,
        room.LEFT.fields,
    )
    clock = Clock()
    turn_log = TurnLog(clock)
    for i in range(logs.MOST_USERS):
        turn_log.add(
            left,
            nick=f"abcdefghij{i % 100:02d}",
            address=f"2001:db8:abcd:{i:x}::/64",
            front_end="tcp",
            reason="slow_reader",
        )
    turn_log.flush()
    (line,) = out.getvalue().splitlines()
    assert len(json.loads(line)["users"]) == logs.MOST_USERS
    assert len(line.encode()) < 40 * 1024


def test_each_turn_has_its_own_event(seen: list[dict[str, Any]], joined: Burst) -> None:
    clock = Clock()
    turn_log = TurnLog(clock)
    turn_log.add(joined, nick="a1", address="192.0.2.1", front_end="tcp")
    turn_log.add(joined, nick="a2", address="192.0.2.2", front_end="web")
    clock.advance(0)
    turn_log.add(joined, nick="b1", address="192.0.2.3", front_end="tcp")
    clock.advance(0)
    assert [formatEvent(e) for e in seen] == [
        "2 joined: a1 (192.0.2.1), a2 (192.0.2.2)",
        "b1 joined",
    ]
    assert [u["front_end"] for u in seen[0]["users"]] == ["tcp", "web"]


def test_flush_writes_what_is_pending_at_once(
    seen: list[dict[str, Any]], joined: Burst
) -> None:
    clock = Clock()
    turn_log = TurnLog(clock)
    turn_log.add(joined, nick="a1", address="192.0.2.1", front_end="tcp")
    turn_log.flush()
    assert [formatEvent(e) for e in seen] == ["a1 joined"]
    assert clock.getDelayedCalls() == []  # its call is cancelled
    turn_log.flush()  # nothing more
    clock.advance(0)
    assert len(seen) == 1


def test_within_a_turn_kinds_are_written_by_their_order(
    seen: list[dict[str, Any]], joined: Burst
) -> None:
    """A user's departure is written after its arrival, and after what cut
    it, whatever kind came first in the turn."""
    logger = Logger(observer=cast(ILogObserver, seen.append))
    left = Burst(logger, "departure", "{nick} left", "", "", ("nick",), order=2)
    cut = Burst(logger, "ping", "{nick} cut", "", "", ("nick",), order=1)
    clock = Clock()
    turn_log = TurnLog(clock)
    turn_log.add(left, nick="old")
    turn_log.add(joined, nick="new", address="192.0.2.1", front_end="tcp")
    turn_log.add(cut, nick="new")
    clock.advance(0)
    assert [formatEvent(e) for e in seen] == ["new joined", "new cut", "old left"]


# Through the server


def herd(chat: Chat, nicks: list[str], hosts: list[str]) -> list[Client]:
    """Users that connect and register in one reactor turn (Chat.user ends
    the turn, as it takes what the server wrote)."""
    clients = [chat.connect(host) for host in hosts]
    for client, nick in zip(clients, nicks, strict=True):
        client.send(f"/pseudo {nick}\n".encode())
    assert all(c.session.nick == n for c, n in zip(clients, nicks, strict=True))
    return clients


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The events of the room, the server and the sessions."""
    seen: list[dict[str, Any]] = []
    for module in (room, server, session):
        monkeypatch.setattr(module.log, "observer", seen.append)
    return seen


def acts(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The events about users so far, (act, text), forgotten once read."""
    found = [
        (e["act"], formatEvent(e))
        for e in events
        if e.get("act") in ("join", "departure", "ping", "flood", "slow_reader")
    ]
    events.clear()
    return found


def test_an_arrival_and_a_departure_alone_are_logged_as_before(
    events: list[dict[str, Any]],
) -> None:
    chat = Chat(ping_interval=0)
    alice = chat.user("alice", "192.0.2.4")
    chat.advance(0)
    alice.send(b"/quit\n")
    chat.advance(0)
    joined, left = events
    assert fields(joined) == {
        "act": "join",
        "nick": "alice",
        "address": "192.0.2.4",
        "front_end": "tcp",
    }
    assert fields(left) == {**fields(joined), "act": "departure", "reason": "quit"}
    assert [formatEvent(e) for e in events] == ["alice joined", "alice left: quit"]
    assert [e["log_format"] for e in events] == [
        "{nick} joined",
        "{nick} left: {reason}",
    ]
    assert {e["log_namespace"] for e in events} == {"chatproto.room"}


def test_a_herd_registering_in_one_turn_is_a_few_events(
    events: list[dict[str, Any]],
) -> None:
    chat = Chat(ping_interval=0, join_notice_limit=0)
    nicks = [f"b{i}" for i in range(500)]
    herd(chat, nicks, [f"127.1.0.{i % 200}" for i in range(500)])
    chat.advance(0)
    assert [e["count"] for e in events] == [128, 128, 128, 116]
    assert {e["act"] for e in events} == {"join"}
    text = " ".join(formatEvent(e) for e in events)
    assert text.startswith("128 joined: b0 (127.1.0.0), b1 (127.1.0.1), ")
    assert [u["nick"] for e in events for u in e["users"]] == nicks


def test_users_cut_in_one_ping_pass_are_one_event_then_their_departures(
    events: list[dict[str, Any]],
) -> None:
    chat = Chat(ping_interval=10, max_missed_pings=1, join_notice_limit=0)
    for nick in ("a1", "a2", "a3"):
        chat.user(nick, "192.0.2.9")
    chat.advance(10)  # pinged
    acts(events)
    chat.advance(10)  # unanswered: cut
    assert acts(events) == [
        (
            "ping",
            "3 stopped answering pings: a1 (192.0.2.9), a2 (192.0.2.9), a3 (192.0.2.9)",
        ),
        (
            "departure",
            "3 left: a1 (192.0.2.9, ping), a2 (192.0.2.9, ping), a3 (192.0.2.9, ping)",
        ),
    ]


def test_one_user_cut_for_pings_is_logged_as_before(
    events: list[dict[str, Any]],
) -> None:
    chat = Chat(ping_interval=10, max_missed_pings=1)
    chat.user("alice", "192.0.2.9")
    chat.advance(10)
    acts(events)
    chat.advance(10)
    ping, left = events
    assert fields(ping) == {"act": "ping", "nick": "alice"}
    assert formatEvent(ping) == "alice stopped answering pings"
    assert formatEvent(left) == "alice left: ping"


def test_shutdown_writes_the_departures_at_once(
    events: list[dict[str, Any]],
) -> None:
    chat = Chat(ping_interval=0, join_notice_limit=0)
    herd(chat, ["u0", "u1", "u2"], ["192.0.2.7"] * 3)
    chat.factory.shutdown()  # the reactor may stop right after
    (_, arrivals), (act, departures) = acts(events)
    assert arrivals == "3 joined: u0 (192.0.2.7), u1 (192.0.2.7), u2 (192.0.2.7)"
    assert act == "departure" and departures.startswith("3 left: ")
    for nick in ("u0", "u1", "u2"):  # in the order of the connections
        assert f"{nick} (192.0.2.7, shutdown)" in departures
    assert not [c for c in chat.clock.getDelayedCalls() if "_turn_ended" in repr(c)]


def test_a_burst_is_one_json_line_listing_the_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(room.log, "observer", logs.json(out))
    chat = Chat(ping_interval=0)
    herd(chat, ["alice", "bob"], ["192.0.2.4", "2001:db8::1"])
    chat.advance(0)
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (record["act"], record["count"]) == ("join", 2)
    assert record["users"] == [
        {"nick": "alice", "address": "192.0.2.4", "front_end": "tcp"},
        {"nick": "bob", "address": "2001:db8::/64", "front_end": "tcp"},
    ]
