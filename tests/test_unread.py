"""/unread and /history N avant K over StringTransport with a task.Clock
(docs/protocol.md, "Since your last visit" and "Line numbers: older
lines"), the memory history's numbers, and the read positions kept in
memory (chatproto/positions.py)."""

from __future__ import annotations

import time
from typing import Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from chatproto import wire
from chatproto.accounts import Account, MemoryAccounts, Protection
from chatproto.config import ServerConfig
from chatproto.history import Kept, MemoryHistory
from chatproto.moderation import expel_here
from chatproto.operators import check_here, make_hash
from chatproto.positions import KEEP, SAVE_INTERVAL, Positions
from chatproto.registry import ClusterUnreachable
from chatproto.testing import Chat, Client
from tests.test_accounts import result

CHEAP = {"n": 16, "r": 1, "p": 1}
PASSWORD = "mon secret"
UNKNOWN = wire.notice(wire.UNREAD_UNKNOWN)
NONE = wire.notice(wire.UNREAD_NONE)
END = wire.notice(wire.UNREAD_END)


def chat(**config: Any) -> Chat:
    config.setdefault("ping_interval", 0)
    config.setdefault("flood_rate", 0)
    return Chat(**config)


def said(chat: Chat, client: Client, text: str) -> bytes:
    """C{client} says C{text}: the line everyone else gets."""
    line = chat.stamp() + f"-{client.session.nick}: {text}\n".encode()
    client.send(text.encode() + b"\n")
    return line


def newest(chat: Chat) -> int:
    return chat.factory.history.newest


def header(total: int, first: int, last: int, shown: int | None = None) -> bytes:
    word = "messages" if total > 1 else "message"
    more = "" if shown is None else f", voici les {shown} derniers"
    return (
        f"--- {total} {word} depuis votre dernière visite{more} "
        f"(n° {first} à {last}) ---\n"
    ).encode()


def unread(client: Client) -> bytes:
    client.take()
    client.send(b"/unread\n")
    return client.take()


# /unread: exactly the lines since the user left


def test_unread_gives_exactly_the_lines_said_since_the_user_left() -> None:
    c = chat()
    alice, bob = c.user("alice"), c.user("bob")
    alice.take()
    before = said(c, alice, "avant")
    bob.send(b"/quit\n")
    assert bob.take() == before + wire.BYE
    departure = c.stamp() + b"-D\xc3\xa9connection de bob\n"
    assert alice.take() == departure
    position = newest(c)  # the number of bob's departure line
    first = said(c, alice, "un")
    c.advance(30)
    second = said(c, alice, "deux")
    bob = c.user("bob")
    # Up to its arrival: its own arrival line, and the lines said after it,
    # it was given as they came.
    assert unread(bob) == header(2, position + 1, position + 2) + first + second + END
    # Asked again, the same lines: not the one said since, which came live.
    said(c, alice, "trois")
    assert unread(bob) == header(2, position + 1, position + 2) + first + second + END


def test_unread_with_nothing_said_since_and_with_no_visit_known() -> None:
    c = chat(join_notice_limit=0)  # no arrival lines
    alice = c.user("alice")
    assert unread(alice) == UNKNOWN
    alice.send(b"/quit\n")
    alice = c.user("alice")
    assert unread(alice) == NONE
    alice.send(b"/unread maintenant\n")
    assert alice.take() == wire.notice(wire.UNREAD_USAGE)


def test_unread_of_more_than_500_lines_gives_the_last_500() -> None:
    c = chat(history_lines=1000, history_bytes=1 << 20, join_notice_limit=0)
    alice, bob = c.user("alice"), c.user("bob")
    bob.send(b"/quit\n")
    position = newest(c)
    lines = [said(c, alice, f"ligne {n}") for n in range(503)]
    bob = c.user("bob")
    assert unread(bob) == (
        header(503, position + 4, position + 503, shown=500) + b"".join(lines[3:]) + END
    )


def test_unread_puts_a_day_line_before_the_lines_of_an_earlier_day() -> None:
    c = chat(join_notice_limit=0)
    now = time.localtime(c.clock.seconds())
    to_midnight = 86400 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec)
    c.advance(to_midnight - 60)  # 23:59:00
    alice, bob = c.user("alice"), c.user("bob")
    bob.send(b"/quit\n")
    old = said(c, alice, "hier")
    day = wire.day_line(time.localtime(c.clock.seconds()))
    c.advance(120)  # 00:01:00, the next day
    bob = c.user("bob")
    position = newest(c) - 1
    assert unread(bob) == header(1, position + 1, position + 1) + day + old + END


def test_an_unprotected_position_is_kept_15_minutes_then_forgotten() -> None:
    c = chat(history_age=86400.0, join_notice_limit=0)
    alice, bob = c.user("alice"), c.user("bob")
    bob.send(b"/quit\n")
    position = newest(c)
    line = said(c, alice, "bonjour")
    c.advance(KEEP)
    bob = c.user("bob")
    assert unread(bob) == header(1, position + 1, position + 1) + line + END
    bob.send(b"/quit\n")
    c.advance(KEEP + 1)
    bob = c.user("bob")
    assert unread(bob) == UNKNOWN


def test_a_kicked_user_s_position_follows_its_departure_line() -> None:
    c = chat(join_notice_limit=0)
    alice, bob = c.user("alice"), c.user("bob")
    expel_here(c.factory, bob.session, "alice", "", 0)
    alice.take()
    line = said(c, alice, "parti")
    bob = c.user("bob")
    position = newest(c) - 1
    assert unread(bob) == header(1, position + 1, position + 1) + line + END


def test_a_user_pinged_out_gets_the_lines_since_its_last_answered_ping() -> None:
    """A network cut: the server writes to bob until his pings run out,
    and he got none of it. /unread gives what came after the last ping he
    answered (the line before it he had), his departure among them."""
    c = chat(ping_interval=10, max_missed_pings=2, join_notice_limit=0)
    alice, bob = c.user("alice"), c.user("bob")
    had = said(c, alice, "reçu")
    c.advance(10)  # a ping bob answers: he had "reçu"
    bob.send(b"pong\n")
    position = newest(c)
    # The cut: nothing bob is sent reaches him any more.
    lost = [said(c, alice, "perdu 1")]
    for _ in range(2):
        c.advance(10)
        alice.send(b"pong\n")
        lost.append(said(c, alice, f"perdu {len(lost) + 1}"))
    c.advance(10)
    assert not bob.connected
    departure = c.stamp() + "-Déconnection de bob\n".encode()
    assert alice.take().endswith(departure)
    after = said(c, alice, "après")
    bob = c.user("bob")
    missed = [*lost, departure, after]
    assert unread(bob) == (
        header(len(missed), position + 1, position + len(missed))
        + b"".join(missed)
        + END
    )
    assert had not in b"".join(missed)


def test_a_lost_connection_gets_the_lines_since_its_last_answered_ping() -> None:
    c = chat(ping_interval=10, join_notice_limit=0)
    alice, bob = c.user("alice"), c.user("bob")
    c.advance(10)
    bob.send(b"pong\n")
    alice.send(b"pong\n")
    position = newest(c)
    maybe = said(c, alice, "peut-être reçu")
    bob.proto.connectionLost(Failure(ConnectionLost()))
    departure = c.stamp() + "-Déconnection de bob\n".encode()
    assert alice.take().endswith(departure)
    bob = c.user("bob")
    assert (
        unread(bob) == header(2, position + 1, position + 2) + maybe + departure + END
    )


def test_without_pings_a_lost_connection_s_position_follows_its_departure() -> None:
    c = chat(join_notice_limit=0)
    alice, bob = c.user("alice"), c.user("bob")
    said(c, alice, "reçu")
    bob.proto.connectionLost(Failure(ConnectionLost()))
    alice.take()
    position = newest(c)
    line = said(c, alice, "après")
    bob = c.user("bob")
    assert unread(bob) == header(1, position + 1, position + 1) + line + END


def test_a_user_that_arrived_after_the_last_ping_gets_the_lines_since_then() -> None:
    c = chat(ping_interval=10, join_notice_limit=0)
    alice = c.user("alice")
    c.advance(10)
    alice.send(b"pong\n")
    said(c, alice, "avant bob")
    bob = c.user("bob")
    position = newest(c)
    maybe = said(c, alice, "pour bob")
    bob.proto.connectionLost(Failure(ConnectionLost()))
    departure = c.stamp() + "-Déconnection de bob\n".encode()
    bob = c.user("bob")
    assert (
        unread(bob) == header(2, position + 1, position + 2) + maybe + departure + END
    )


def test_a_protected_position_is_kept_in_its_book_past_15_minutes() -> None:
    c = chat(join_notice_limit=0)
    protection = c.factory.protection
    protection.checker = check_here
    book = cast(MemoryAccounts, protection.accounts)
    book.protect(Account("prof", make_hash(PASSWORD, **CHEAP), c.clock.seconds()))
    alice = c.user("alice")
    prof = c.connect()
    prof.send(f"/pseudo prof {PASSWORD}\n".encode())
    assert b"Bienvenue prof\n" in prof.take()
    prof.send(b"/quit\n")
    position = newest(c)
    assert book.accounts["prof"].seen == position
    line = said(c, alice, "bonjour prof")
    c.advance(2 * KEEP)
    prof = c.connect()
    prof.send(f"/pseudo prof {PASSWORD}\n".encode())
    assert b"Bienvenue prof\n" in prof.take()
    assert unread(prof) == header(1, position + 1, position + 1) + line + END
    # Whoever takes "alice" is no owner: its position is in memory.
    assert result(c.factory.positions.find("alice")) is None


def test_an_owner_s_position_is_saved_as_it_goes_once_it_asked_unread() -> None:
    """A crash loses no more than the last SAVE_INTERVAL of an owner's
    position: what its book says is what a restarted server reads."""
    c = chat(join_notice_limit=0)
    protection = c.factory.protection
    protection.checker = check_here
    book = cast(MemoryAccounts, protection.accounts)
    for nick in ("prof", "dave"):
        hashed = make_hash(PASSWORD, **CHEAP)
        book.protect(Account(nick, hashed, c.clock.seconds(), seen=0))
    alice = c.user("alice")
    missed = said(c, alice, "avant")
    prof, dave = c.connect(), c.connect()
    for client, nick in ((prof, "prof"), (dave, "dave")):
        client.send(f"/pseudo {nick} {PASSWORD}\n".encode())
        assert f"Bienvenue {nick}\n".encode() in client.take()
    since = unread(prof)
    assert since.endswith(missed + END)
    said(c, alice, "en direct")
    c.advance(SAVE_INTERVAL)
    assert book.accounts["prof"].seen == newest(c)
    # Its /unread still answers from before this visit.
    assert unread(prof) == since
    said(c, alice, "encore")
    c.advance(SAVE_INTERVAL)
    assert book.accounts["prof"].seen == newest(c)
    # An owner that never asked keeps its previous position.
    assert book.accounts["dave"].seen == 0
    # Gone, nothing more to save: the clock has nothing left to run.
    prof.send(b"/quit\n")
    dave.send(b"/quit\n")
    alice.send(b"/quit\n")
    c.advance(0)  # the end of the turn: the departures logged
    assert c.clock.getDelayedCalls() == []


def test_unread_when_the_book_cannot_be_read_is_one_clear_line() -> None:
    c = chat()
    prof = c.user("prof")
    c.factory.protection.owners.add("prof")

    def broken(nick: str) -> Deferred[Account | None]:
        return fail(ClusterUnreachable("Redis is away"))

    c.factory.protection.accounts.find = broken  # type: ignore[method-assign]
    assert unread(prof) == wire.notice(wire.UNREAD_UNAVAILABLE)
    assert prof.connected


def test_unread_without_a_history_says_so() -> None:
    c = chat(history_lines=0)
    alice = c.user("alice")
    assert unread(alice) == wire.notice(wire.HISTORY_OFF)


def test_positions_are_bounded_the_oldest_departure_dropped() -> None:
    clock = Clock()
    protection = Protection(MemoryAccounts(), clock, 90)
    positions = Positions(protection, clock, lambda: 0, most=2)
    positions.left("a", 1)
    positions.left("b", 2)
    positions.left("A", 3)  # a again: now the most recent
    positions.left("c", 4)
    assert [result(positions.find(n)) for n in "abc"] == [3, None, 4]


# /history N avant K


def before_header(count: int, first: int, last: int) -> bytes:
    word = "lignes" if count > 1 else "ligne"
    return f"--- historique ({count} {word}, n° {first} à {last}) ---\n".encode()


def test_history_before_pages_back_to_the_start() -> None:
    c = chat(join_notice_limit=0)
    alice = c.user("alice")
    lines = [said(c, alice, f"ligne {n}") for n in range(5)]
    alice.take()
    alice.send(b"/history 2 avant fin\n")
    assert alice.take() == before_header(2, 4, 5) + b"".join(lines[3:]) + (
        wire.HISTORY_END
    )
    alice.send(b"/history 2 avant 4\n")
    assert alice.take() == before_header(2, 2, 3) + b"".join(lines[1:3]) + (
        wire.HISTORY_END
    )
    alice.send(b"/history 2 avant 2\n")
    assert alice.take() == before_header(1, 1, 1) + lines[0] + wire.HISTORY_END
    alice.send(b"/history 2 avant 1\n")
    assert alice.take() == wire.notice(wire.HISTORY_START)
    alice.send(b"/history 999 avant 99\n")  # past the limit: the limit
    assert alice.take() == before_header(5, 1, 5) + b"".join(lines) + wire.HISTORY_END


def test_history_before_usage_errors_and_plain_history_unchanged() -> None:
    c = chat(join_notice_limit=0)
    alice = c.user("alice")
    line = said(c, alice, "bonjour")
    alice.take()
    usage = wire.notice(wire.HISTORY_BEFORE_USAGE.format(100))
    for bad in (
        b"/history avant 3",
        b"/history 0 avant 3",
        b"/history 2 avant",
        b"/history 2 avant -1",
        b"/history deux avant fin",
        b"/history 2 avant debut",
    ):
        alice.send(bad + b"\n")
        assert alice.take() == usage, bad
    alice.send(b"/history\n/history 5\n/history x\n")
    plain = b"--- historique (1 ligne) ---\n" + line + wire.HISTORY_END
    assert alice.take() == plain + plain + wire.notice(wire.HISTORY_USAGE.format(100))


# The memory history's numbers


def test_memory_history_numbers_after_and_before_past_forgotten_lines() -> None:
    clock = Clock()
    history = MemoryHistory(ServerConfig(history_lines=3), clock)
    assert history.newest == 0
    for n in range(1, 6):
        history.record(f"{n}\n".encode())
    assert history.newest == 5  # lines 3, 4, 5 kept

    def numbers(kept: list[Kept]) -> list[int]:
        return [k.number for k in kept]

    assert numbers(result(history.last(10))) == [3, 4, 5]
    total, kept = result(history.after(0, 2))
    assert (total, numbers(kept)) == (3, [4, 5])
    total, kept = result(history.after(3, 10))
    assert (total, numbers(kept)) == (2, [4, 5])
    assert result(history.after(5, 10)) == (0, [])
    assert result(history.after(9, 10)) == (0, [])
    assert numbers(result(history.before(5, 10))) == [3, 4]
    assert numbers(result(history.before(None, 2))) == [4, 5]
    assert numbers(result(history.before(99, 1))) == [5]
    assert result(history.before(3, 10)) == []
    assert result(history.before(1, 10)) == []
