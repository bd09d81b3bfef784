"""The book of protected nicknames and the logic the sessions call
(chatproto/accounts.py): MemoryAccounts, Protection, and the throttle of
password tries they share with /op (chatproto/operators.py, Tries)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from chatproto import accounts, metrics, operators
from chatproto.accounts import (
    DAY,
    Account,
    AlreadyProtected,
    MemoryAccounts,
    NotProtected,
    Protection,
    Unavailable,
)
from chatproto.operators import (
    FORGET_AFTER,
    Busy,
    Throttled,
    Tries,
    check_here,
    check_password,
    make_hash,
)

# A cheap scrypt for the tests (the default costs some 84 ms a check).
CHEAP = {"n": 16, "r": 1, "p": 1}


def result(d: Deferred[Any]) -> Any:
    """What an already fired Deferred holds (its failure raised)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure_of(d: Deferred[Any]) -> Failure:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and isinstance(out[0], Failure), out
    return cast(Failure, out[0])


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    observer = cast(ILogObserver, seen.append)
    monkeypatch.setattr(accounts, "log", Logger(observer=observer))
    monkeypatch.setattr(metrics, "log", Logger(observer=observer))
    monkeypatch.setattr(operators, "log", Logger(observer=observer))
    return seen


def cheap_hasher(password: str) -> Deferred[str]:
    return succeed(make_hash(password, **CHEAP))


def protection(days: float = 90) -> tuple[Protection, MemoryAccounts, Clock]:
    clock = Clock()
    clock.advance(1_795_633_048)
    book = MemoryAccounts()
    return Protection(book, clock, days, hasher=cheap_hasher), book, clock


# The book in memory


def test_the_memory_book_finds_protects_touches_and_frees_by_key() -> None:
    book = MemoryAccounts()
    assert result(book.find("Prof")) is None
    result(book.protect(Account("Prof", "scrypt$h", 10.0)))
    assert result(book.find("PROF")) == Account("Prof", "scrypt$h", 10.0)
    result(book.touch("prof", 20.0))
    assert result(book.find("prof")) == Account("Prof", "scrypt$h", 20.0)
    result(book.protect(Account("prof", "scrypt$new", 30.0)))  # replaces
    assert list(book.accounts.values()) == [Account("prof", "scrypt$new", 30.0)]
    result(book.unprotect("PrOf"))
    assert result(book.find("prof")) is None
    result(book.touch("prof", 40.0))  # nothing to touch: nothing made
    result(book.unprotect("prof"))  # nothing to free: nothing happens
    assert book.accounts == {}


# Protection: find, expiry, check, protect, unprotect


def test_an_account_unused_past_nick_days_counts_as_none_and_is_removed(
    events: list[dict[str, Any]],
) -> None:
    guard, book, clock = protection(days=90)
    result(book.protect(Account("prof", "scrypt$h", clock.seconds())))
    clock.advance(90 * DAY)
    assert result(guard.find("prof")) == Account(
        "prof", "scrypt$h", clock.seconds() - 90 * DAY
    )
    clock.advance(1)
    assert result(guard.find("prof")) is None
    assert book.accounts == {}
    [expired] = [e for e in events if e.get("act") == "nick-expired"]
    assert expired["nick"] == "prof"


def test_an_owner_s_arrival_and_departure_keep_its_account_alive() -> None:
    guard, book, clock = protection(days=90)
    result(book.protect(Account("prof", "scrypt$h", clock.seconds())))
    clock.advance(80 * DAY)
    guard.arrived("Prof")
    clock.advance(5 * DAY)
    assert guard.left("PROF", 7)
    assert result(book.find("prof")) == Account("prof", "scrypt$h", clock.seconds(), 7)
    clock.advance(89 * DAY)  # 174 days after it was made, 89 after its use
    assert result(guard.find("prof")) is not None
    assert not guard.left("prof", 9)  # not an owner here any more: nothing touched
    assert result(book.find("prof")).used == clock.seconds() - 89 * DAY
    assert result(book.find("prof")).seen == 7


def test_a_password_is_checked_against_the_account_s_hash() -> None:
    guard, book, clock = protection()
    assert result(guard.check("192.0.2.1", "prof", "whatever")) is None  # free
    stored = make_hash("secret pw", **CHEAP)
    result(book.protect(Account("prof", stored, clock.seconds())))
    assert result(guard.check("192.0.2.1", "prof", "secret pw")) is True
    assert result(guard.check("192.0.2.1", "PROF", "secret")) is False


def test_protect_hashes_keeps_no_password_and_refuses_a_second_time() -> None:
    guard, book, clock = protection()
    result(guard.protect("192.0.2.1", "Prof", "secret pw"))
    account = book.accounts["prof"]
    assert (account.nick, account.used) == ("Prof", clock.seconds())
    assert "secret pw" not in repr(account)
    assert check_password("secret pw", account.hash)
    assert guard.owners == {"prof"}
    with pytest.raises(AlreadyProtected):
        result(guard.protect("192.0.2.1", "prof", "another one"))
    assert book.accounts["prof"] == account


def test_unprotect_needs_the_password() -> None:
    guard, book, _clock = protection()
    with pytest.raises(NotProtected):
        result(guard.unprotect("192.0.2.1", "prof", "secret pw"))
    result(guard.protect("192.0.2.1", "prof", "secret pw"))
    assert result(guard.unprotect("192.0.2.1", "prof", "wrong one")) is False
    assert "prof" in book.accounts
    assert result(guard.unprotect("192.0.2.1", "prof", "secret pw")) is True
    assert book.accounts == {} and guard.owners == set()


class BrokenBook(MemoryAccounts):
    """A book that cannot be read or written (a store whose disk failed)."""

    def find(self, nick: str) -> Deferred[Account | None]:
        return fail(OSError("disk I/O error"))

    def protect(self, account: Account) -> Deferred[None]:
        return fail(OSError("disk I/O error"))


def test_a_book_that_fails_is_logged_and_reported_unavailable(
    events: list[dict[str, Any]],
) -> None:
    guard, _book, _clock = protection()
    guard.accounts = BrokenBook()
    for d in (
        guard.find("prof"),
        guard.check("192.0.2.1", "prof", "secret pw"),
        guard.protect("192.0.2.1", "prof", "secret pw"),
        guard.unprotect("192.0.2.1", "prof", "secret pw"),
    ):
        assert failure_of(d).check(Unavailable)
    failures = [e for e in events if e.get("act") == "accounts-failed"]
    assert len(failures) == 4
    assert all(e["log_failure"].check(OSError) for e in failures)


# The throttle (shared with /op)


def held() -> tuple[list[Deferred[bool]], Any]:
    pending: list[Deferred[bool]] = []

    def checker(password: str, stored: str) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        pending.append(d)
        return d

    return pending, checker


def test_tries_are_throttled_per_address_after_three_failures() -> None:
    clock = Clock()
    tries = Tries(clock, act="nick-failed")
    stored = make_hash("right", **CHEAP)
    for _ in range(3):
        assert result(tries.check("192.0.2.1", check_here, "wrong", stored)) is False
    throttled = failure_of(tries.check("192.0.2.1", check_here, "right", stored))
    assert isinstance(throttled.value, Throttled) and throttled.value.wait == 5
    assert "right" not in str(throttled.value)
    # another address is not throttled by the first
    assert result(tries.check("192.0.2.2", check_here, "right", stored)) is True
    clock.advance(5)
    assert result(tries.check("192.0.2.1", check_here, "right", stored)) is True
    assert tries.failures("192.0.2.1") == 0  # a right one forgets the wrong ones
    for _ in range(3):
        tries.check("192.0.2.1", check_here, "wrong", stored)
    clock.advance(FORGET_AFTER)
    assert tries.failures("192.0.2.1") == 0


def test_at_most_two_run_eight_wait_and_the_rest_are_refused(
    events: list[dict[str, Any]],
) -> None:
    clock = Clock()
    tries = Tries(clock, act="nick-failed")
    pending, checker = held()
    waiting = [tries.check(f"198.51.100.{i}", checker, "pw", "h") for i in range(10)]
    assert len(pending) == 2
    refused = failure_of(tries.check("203.0.113.1", checker, "pw", "h"))
    assert isinstance(refused.value, Throttled) and refused.value.wait == 5
    # making a hash is no try, but waits in the same line, and is refused too
    assert failure_of(tries.run("203.0.113.2", cheap_hasher, "pw")).check(Throttled)
    busy = [e for e in events if e.get("reason") == "busy"]
    assert [(e["act"], e["address"]) for e in busy] == [
        ("nick-failed", "203.0.113.1"),
        ("nick-failed", "203.0.113.2"),
    ]
    pending.pop(0).callback(False)
    assert len(pending) == 2  # the next one started
    assert result(waiting[0]) is False


# The throttle of a cluster: failures counted in Redis (a double here; the
# real one in tests/test_accounts_cluster.py)


class Counts:
    """A cluster's shared counts whose answers the test gives."""

    def __init__(self) -> None:
        self.takes: list[tuple[str | None, Deferred[int]]] = []
        self.rights: list[str | None] = []
        self.right_fails = False

    def take(self, host: str | None) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        self.takes.append((host, d))
        return d

    def right(self, host: str | None) -> Deferred[None]:
        self.rights.append(host)
        if self.right_fails:
            from chatproto.registry import ClusterUnreachable

            return fail(ClusterUnreachable("Redis did not answer in time"))
        return succeed(None)

    def answer(self, value: int | Exception) -> None:
        _, d = self.takes.pop(0)
        if isinstance(value, Exception):
            d.errback(value)
        else:
            d.callback(value)


def shared_tries() -> tuple[Tries, Counts, Clock]:
    clock = Clock()
    tries = Tries(clock, act="nick-failed")
    counts = Counts()
    tries.shared = counts
    return tries, counts, clock


def test_shared_tries_are_checked_once_counted_and_a_right_one_forgets() -> None:
    tries, counts, _clock = shared_tries()
    stored = make_hash("right", **CHEAP)
    wrong = tries.check("192.0.2.1", check_here, "wrong", stored)
    assert [host for host, _ in counts.takes] == ["192.0.2.1"]
    assert not wrong.called  # not checked before it is counted
    counts.answer(4)
    assert result(wrong) is False
    assert tries.failures("192.0.2.1") == 4  # as the cluster counted them
    assert counts.rights == []
    right = tries.check("192.0.2.1", check_here, "right", stored)
    counts.answer(5)
    assert result(right) is True
    assert counts.rights == ["192.0.2.1"]
    assert tries.failures("192.0.2.1") == 0


def test_shared_tries_refused_there_are_never_checked(
    events: list[dict[str, Any]],
) -> None:
    tries, counts, _clock = shared_tries()
    pending, checker = held()
    throttled = tries.check("192.0.2.1", checker, "pw", "h")
    counts.answer(Throttled(3))
    busy = tries.check("192.0.2.2", checker, "pw", "h")
    counts.answer(Busy(1))
    from chatproto.registry import ClusterUnreachable

    unreachable = tries.check("192.0.2.3", checker, "pw", "h")
    counts.answer(ClusterUnreachable("Redis did not answer in time"))
    wait = failure_of(throttled).value
    assert isinstance(wait, Throttled) and wait.wait == 3
    assert failure_of(busy).check(Busy)
    assert failure_of(unreachable).check(ClusterUnreachable)
    assert pending == []  # no scrypt ran
    assert [(e["reason"], e["address"]) for e in events if "reason" in e] == [
        ("busy", "192.0.2.2")
    ]


def test_shared_tries_being_counted_take_their_place_in_the_line() -> None:
    """At most 2 run and 8 wait here, those being counted in Redis among
    them: a burst sent before Redis answers is bounded as one that waits
    for scrypt."""
    tries, counts, _clock = shared_tries()
    pending, checker = held()
    tried = [tries.check(f"198.51.100.{i}", checker, "pw", "h") for i in range(10)]
    refused = failure_of(tries.check("203.0.113.1", checker, "pw", "h"))
    assert isinstance(refused.value, Busy) and len(counts.takes) == 10
    for _ in range(10):
        counts.answer(1)
    assert len(pending) == 2
    pending.pop(0).callback(False)
    assert result(tried[0]) is False
    again = tries.check("203.0.113.1", checker, "pw", "h")  # room for one
    assert not again.called and len(counts.takes) == 1


def test_a_right_try_that_cannot_be_forgotten_is_logged_and_still_right(
    events: list[dict[str, Any]],
) -> None:
    tries, counts, _clock = shared_tries()
    counts.right_fails = True
    stored = make_hash("right", **CHEAP)
    right = tries.check("192.0.2.1", check_here, "right", stored)
    counts.answer(1)
    assert result(right) is True
    said = [e for e in events if e.get("act") == "accounts-failed"]
    assert len(said) == 1 and said[0]["address"] == "192.0.2.1"
    assert "right" not in repr(said[0])
