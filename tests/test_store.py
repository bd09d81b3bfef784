"""The SQLite store (chatproto/store.py) with its real threads, on the real
reactor: each test bounded in time (pytest-twisted), its file in tmp_path."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import MultiService
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.usage import UsageError

from chatproto import history as history_module
from chatproto import store as store_module
from chatproto import wire
from chatproto.accounts import Account
from chatproto.history import search_words, searchable
from chatproto.metrics import Metrics
from chatproto.registry import ClusterUnreachable
from chatproto.store import READS_WAITING, VERSION, Store, StoreError, StoreService
from chatproto.tap import Options, makeService
from chatproto.testing import Chat
from tests.test_metrics import scrape

DAY = 86400.0


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


def opened(path: Path, clock: Any = reactor, **kwargs: Any) -> Store:
    store = Store.open(str(path), clock, cast(IReactorFromThreads, reactor), **kwargs)
    store.start()
    return store


def line(n: int, text: str = "bonjour") -> bytes:
    return f"[10.0.{n % 60}]-alice: {text} {n}\n".encode()


@pytest_twisted.inlineCallbacks
def test_lines_recorded_are_read_back_before_and_after_they_are_committed(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    store = opened(tmp_path / "chat.sqlite3")
    try:
        for n in range(5):
            store.history.record(line(n))
        # Not committed yet (the writer has not run): read all the same.
        kept = yield store.history.last(3)
        assert [k.line for k in kept] == [line(2), line(3), line(4)]
        assert [k.number for k in kept] == [3, 4, 5]
        yield sleep(0.3)
        assert store.unsaved() == []
        kept = yield store.history.last(10)
        assert [k.line for k in kept] == [line(n) for n in range(5)]
    finally:
        yield store.close()
    # A new store on the file numbers on from the last line.
    again = opened(tmp_path / "chat.sqlite3")
    try:
        again.history.record(line(5))
        kept = yield again.history.last(2)
        assert [(k.number, k.line) for k in kept] == [(5, line(4)), (6, line(5))]
    finally:
        yield again.close()


@pytest_twisted.inlineCallbacks
def test_close_commits_the_lines_waiting(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "chat.sqlite3"
    store = opened(path)
    for n in range(1000):
        store.history.record(line(n))
    yield store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM lines").fetchone() == (1000,)
    db.close()


@pytest_twisted.inlineCallbacks
def test_the_file_is_private_in_wal_mode_and_at_our_version(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "chat.sqlite3"
    store = opened(path)
    yield store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA user_version").fetchone() == (VERSION,)
    db.close()


@pytest_twisted.inlineCallbacks
def test_search_finds_every_word_folded_most_recent_first_then_oldest_first(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    store = opened(tmp_path / "chat.sqlite3")
    try:
        said = [
            "[9.0.0]-alice: L'Éléphant est là\n",
            "[9.0.1]-bob: un elephant rose\n",
            "[9.0.2]-carol: ELEPHANTS\n",
            "[9.0.3]-bob: l'éléphant ROSE, encore\n",
            "[9.0.4]-Connexion de elephant\n",
        ]
        for text in said:
            store.history.record(text.encode())
        yield sleep(0.3)
        store.history.record(b"[9.0.5]-dave: elephant rose aussi\n")  # unsaved
        found = yield store.history.search(["elephant"], 3)
        assert [k.line.decode() for k in found] == [
            said[3],
            said[4],
            "[9.0.5]-dave: elephant rose aussi\n",
        ]
        found = yield store.history.search(["rose", "elephant"], 20)
        assert [k.number for k in found] == [2, 4, 6]
        found = yield store.history.search(["absent"], 20)
        assert found == []
        # The stamp is not searched.
        found = yield store.history.search(["9"], 20)
        assert found == []
    finally:
        yield store.close()


# The search agrees with a scan by search_words(searchable(line)).
WORDS = ["éléphant", "Elephant", "rose", "ROSE", "çà", "là", "œuvre", "straße"]
TEXTS = st.lists(
    st.lists(
        st.sampled_from(WORDS) | st.text(min_size=1, max_size=6), min_size=1, max_size=5
    ).map(" ".join),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None)
@given(texts=TEXTS, query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=2))
def test_search_equals_a_scan_of_the_words(texts: list[str], query: list[str]) -> None:
    lines = [
        f"[1.2.3]-nick{n}: {t}\n".encode("utf-8", "replace").replace(b"\n", b" ")
        + b"\n"
        for n, t in enumerate(texts)
    ]
    words = [w for q in query for w in search_words(q)]
    expected = [
        line for line in lines if set(words).issubset(search_words(searchable(line)))
    ][-5:]
    db = sqlite3.connect(":memory:", isolation_level=None)
    store_module._migrate(db, 0)
    db.executemany(
        "INSERT INTO words (rowid, folded) VALUES (?, ?)",
        [(n + 1, store_module._words(line)) for n, line in enumerate(lines)],
    )
    found = db.execute(
        "SELECT rowid FROM words WHERE words MATCH ? ORDER BY rowid DESC LIMIT 5",
        (store_module._match(words),),
    ).fetchall()
    assert [lines[n - 1] for (n,) in sorted(found)] == expected


@pytest_twisted.inlineCallbacks
def test_a_failing_write_is_counted_retried_and_the_chat_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    """A disk full (the error SQLite raises, injected in the writer): the
    lines wait, are read all the same, and are kept once the disk lets
    them; the users get their lines meanwhile."""
    failing = [True]
    words = store_module._words

    def full(line: bytes) -> str:
        if failing[0]:
            raise sqlite3.OperationalError("database or disk is full")
        return words(line)

    monkeypatch.setattr(store_module, "_words", full)
    monkeypatch.setattr(store_module, "RETRY_DELAY", 0.05)
    chat = Chat()
    path = tmp_path / "chat.sqlite3"
    store = Store.open(
        str(path),
        chat.clock,
        cast(IReactorFromThreads, reactor),
        metrics=chat.factory.metrics,
    )
    store.start()
    chat.factory.room.history = store.history
    try:
        alice, bob = chat.user("alice"), chat.user("bob")
        alice.send(b"bonjour\n")
        chat.turn()
        assert bob.take().endswith(b"-alice: bonjour\n")
        yield sleep(0.3)
        sample = scrape(chat)  # /metrics
        assert sample[("chatproto_store_write_failures_total", ())] >= 2
        assert sample[("chatproto_store_lines_dropped_total", ())] == 0
        kept = yield store.history.last(10)
        assert [k.line.partition(b"]-")[2] for k in kept] == [
            b"Connexion de alice\n",
            b"Connexion de bob\n",
            b"alice: bonjour\n",
        ]
        failing[0] = False
        yield sleep(0.3)
        assert store.unsaved() == []
    finally:
        yield store.close()
    assert kept_in(path) == [k.line for k in kept]


@pytest_twisted.inlineCallbacks
def test_a_search_folds_only_the_unsaved_lines_that_may_hold_its_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    """A failing disk leaves up to UNSAVED_LINES lines unsaved, and every
    /search looks through them in a reader thread: folding each one
    (search_words) took 4 s for 20,000 lines of 800 bytes, twice at once,
    for every user's /search. The cheap first look of newest_holding
    passes over the lines without the words, and the search stops at the
    newest lines that hold them."""
    folded: list[str] = []

    def counting(text: str) -> list[str]:
        folded.append(text)
        return search_words(text)

    monkeypatch.setattr(store_module, "search_words", counting)
    monkeypatch.setattr(history_module, "search_words", counting)
    monkeypatch.setattr(store_module, "_words", _disk_full)
    store = opened(tmp_path / "chat.sqlite3")
    try:
        for n in range(2000):
            store.history.record(line(n))
        kept = yield store.history.search(["absent"], 20)
        assert kept == [] and folded == []
        kept = yield store.history.search(["bonjour"], 20)
        assert [k.line for k in kept] == [line(n) for n in range(1980, 2000)]
        assert len(folded) == 20
        assert len(store.unsaved()) == 2000  # none was written meanwhile
    finally:
        yield store.close()


def _disk_full(line: bytes) -> str:
    raise sqlite3.OperationalError("database or disk is full")


@pytest_twisted.inlineCallbacks
def test_history_reads_past_the_bound_fail_at_once_as_unreadable(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """Flood control bounds each user's /search, not all users' together:
    past READS_WAITING reads not answered yet, a read fails at once as
    one that cannot be done now (the user is told so), rather than wait
    in a queue without end."""
    store = Store.open(
        str(tmp_path / "chat.sqlite3"), reactor, cast(IReactorFromThreads, reactor)
    )  # not started: no read is answered
    waiting = [store.history.search(["mot"], 20) for _ in range(READS_WAITING)]
    with pytest.raises(ClusterUnreachable):
        yield store.history.last(20)
    store.start()
    for d in waiting:
        assert (yield d) == []
    assert (yield store.history.last(20)) == []  # answered: room again
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_a_store_file_deleted_under_the_server_is_logged_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    """Deleted (or replaced) under a running server, the store's file is
    still the writer's: its commits succeed, into a file nobody will open
    again. Seen with the real server: /history and /search went on from
    the deleted file, nothing was logged, and every line was gone at the
    next start. Each commit now says so (counted as a failing write,
    logged once a minute)."""
    logged: list[dict[str, Any]] = []
    monkeypatch.setattr(store_module.log, "observer", logged.append)
    metrics = Metrics()
    path = tmp_path / "chat.sqlite3"
    store = opened(path, metrics=metrics)
    try:
        store.history.record(line(1))
        yield sleep(0.3)
        assert metrics.store_write_failures == 0 and logged == []
        for name in ("chat.sqlite3", "chat.sqlite3-wal", "chat.sqlite3-shm"):
            (tmp_path / name).unlink()
        store.history.record(line(2))
        yield sleep(0.3)
        store.history.record(line(3))
        yield sleep(0.3)
        assert metrics.store_write_failures == 2
        assert [e["log_level"].name for e in logged] == ["error"]
        assert "deleted or replaced" in logged[0]["log_format"]
    finally:
        yield store.close()


def kept_in(path: Path) -> list[bytes]:
    db = sqlite3.connect(path)
    rows = db.execute("SELECT line FROM lines ORDER BY id").fetchall()
    db.close()
    return [bytes(line) for (line,) in rows]


@pytest_twisted.inlineCallbacks
def test_past_the_unsaved_bound_lines_are_dropped_counted_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    monkeypatch.setattr(store_module, "UNSAVED_LINES", 3)
    logged: list[dict[str, Any]] = []
    monkeypatch.setattr(store_module.log, "observer", logged.append)
    clock = task.Clock()
    metrics = Metrics()
    store = Store.open(
        str(tmp_path / "s"), clock, cast(IReactorFromThreads, reactor), metrics=metrics
    )  # not started: nothing is written
    for n in range(6):
        store.record(line(n))
    clock.advance(61)
    store.record(line(6))
    assert [k.number for k in store.unsaved()] == [1, 2, 3]
    assert metrics.store_lines_dropped == 4
    assert [e["count"] for e in logged] == [1, 3]  # the first, then a minute on
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_old_lines_and_lines_past_the_bytes_go_in_chunks_with_their_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    monkeypatch.setattr(store_module, "RETENTION_CHUNK", 2)
    clock = task.Clock()
    clock.advance(1_000 * DAY)
    path = tmp_path / "chat.sqlite3"
    store = opened(path, clock)
    for n in range(5):
        store.record(line(n, "vieux"))
    store.accounts.protect(Account("Alice", "hash", clock.seconds()))
    clock.advance(20 * DAY)
    for n in range(5, 10):
        store.record(line(n, "recent"))
    store.accounts.protect(Account("Bob", "hash", clock.seconds()))
    yield store.close()
    clock.advance(15 * DAY)  # the first five lines and alice: 35 days old
    store = opened(path, clock, days=30, nick_days=30)
    yield sleep(0.3)
    kept = yield store.history.last(20)
    assert [k.line for k in kept] == [line(n, "recent") for n in range(5, 10)]
    assert (yield store.history.search(["vieux"], 20)) == []
    assert (yield store.accounts.find("alice")) is None
    assert (yield store.accounts.find("BOB")) == Account("Bob", "hash", 1020 * DAY)
    yield store.close()
    # Past the bytes allowed: the oldest go until the rest fits.
    store = opened(path, clock, max_bytes=2 * len(line(9, "recent")))
    yield sleep(0.3)
    kept = yield store.history.last(20)
    assert [k.line for k in kept] == [line(8, "recent"), line(9, "recent")]
    yield store.close()
    db = sqlite3.connect(path)
    # The index holds the words of those two lines only (contentless: its
    # rows are counted by the tokens it keeps per line).
    assert db.execute(
        "SELECT count(*) FROM words WHERE words MATCH 'recent'"
    ).fetchone() == (2,)
    db.close()


@pytest_twisted.inlineCallbacks
def test_accounts_are_kept_found_by_key_touched_and_lifted(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "chat.sqlite3"
    store = opened(path, task.Clock())
    accounts = store.accounts
    try:
        yield accounts.protect(Account("Prof", "scrypt$1", 100.0))
        assert (yield accounts.find("prof")) == Account("Prof", "scrypt$1", 100.0)
        yield accounts.touch("PROF", 200.0)
        yield accounts.protect(Account("prof", "scrypt$2", 300.0))
        assert (yield accounts.find("Prof")) == Account("prof", "scrypt$2", 300.0)
        assert accounts.look_alike("PR0F") == "prof"  # a zero for the O
        assert accounts.look_alike("prof") is None  # itself
        # prof and its look-alikes must be read; bob is nobody's
        assert not accounts.surely_free("prof") and not accounts.surely_free("PR0F")
        assert accounts.surely_free("bob")
        yield accounts.unprotect("Prof")
        assert (yield accounts.find("prof")) is None
        assert accounts.look_alike("PR0F") is None
        assert accounts.surely_free("PR0F") and accounts.surely_free("prof")
        yield accounts.protect(Account("eve", "scrypt$3", 5.0))
        yield accounts.protect(Account("milo", "scrypt$4", 5.0))
    finally:
        yield store.close()
    again = opened(path, task.Clock())
    try:
        assert (yield again.accounts.find("Eve")) == Account("eve", "scrypt$3", 5.0)
        # the looks are read at open too: m1lo (a one for the l) is milo's
        assert again.accounts.look_alike("M1L0") == "milo"
        assert again.accounts.look_alike("Eve") is None
        assert not again.accounts.surely_free("m1lo")
        # A nickname nobody protects is answered at once, with no read in a
        # thread: a herd of registrations costs the readers nothing.
        nobody = again.accounts.find("bob")
        assert nobody.called and nobody.result is None
    finally:
        yield again.close()


@pytest_twisted.inlineCallbacks
def test_a_version_0_file_is_brought_to_our_schema(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).execute("PRAGMA user_version = 0").close()
    path.write_bytes(b"")  # an empty file, as SQLite leaves one
    store = opened(path)
    store.record(line(1))
    yield store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (VERSION,)
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_schema")}
    assert {"lines", "words", "accounts"} <= tables
    db.close()


def test_a_store_path_that_is_no_file_is_refused_in_one_sentence(
    tmp_path: Path,
) -> None:
    """/dev/null was "cannot write the store: disk I/O error", a FIFO hung
    the start for ever, a link to a missing file said "no permission"."""
    fifo = tmp_path / "fifo.sqlite3"
    os.mkfifo(fifo)
    link = tmp_path / "link.sqlite3"
    link.symlink_to(tmp_path / "gone" / "chat.sqlite3")
    for path, told in [
        ("/dev/null", "the store /dev/null is not a regular file."),
        (str(fifo), f"the store {fifo} is not a regular file."),
        (
            str(link),
            f"the store {link} is a symbolic link to "
            f"{tmp_path / 'gone' / 'chat.sqlite3'}, which does not exist.",
        ),
    ]:
        with pytest.raises(StoreError) as e:
            Store.open(path, reactor, cast(IReactorFromThreads, reactor))
        assert str(e.value) == told


def test_a_database_of_another_program_or_a_store_in_use_is_refused(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(StoreError) as e:
        Store.open(str(other), reactor, cast(IReactorFromThreads, reactor))
    assert str(e.value) == (
        f"{other} is not a chat store: a SQLite database of another program."
    )
    assert other.read_bytes() == before
    path = tmp_path / "chat.sqlite3"
    first = Store.open(str(path), reactor, cast(IReactorFromThreads, reactor))
    with pytest.raises(StoreError) as e:
        Store.open(str(path), reactor, cast(IReactorFromThreads, reactor))
    assert str(e.value) == f"the store {path} is in use by another chat server."
    first.close()


def test_store_options_default_and_none_with_or_without_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("chatproto.tap.STORE", "chat.sqlite3")  # conftest's
    options = Options()
    options.parseOptions([])
    assert options["store"] == "chat.sqlite3"
    assert options["config"].history_days == 30
    assert options["config"].history_max_bytes == 1 << 30
    options = Options()
    options.parseOptions(["--store", "none", "--history-days", "7"])
    assert options["store"] is None
    assert options["config"].history_days == 7
    options = Options()
    options.parseOptions(["--redis", "redis://127.0.0.1:1/0"])
    assert options["store"] == "chat.sqlite3"  # each node its own
    options = Options()
    options.parseOptions(["--store", "none", "--redis", "redis://127.0.0.1:1/0"])
    assert options["store"] is None
    for empty in ("", " "):
        with pytest.raises(UsageError, match="--store takes a file name, or none"):
            Options().parseOptions(["--store", empty])


@pytest_twisted.inlineCallbacks
def test_a_single_server_keeps_its_history_in_the_store_stopped_last(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    options = Options()
    path = tmp_path / "chat.sqlite3"
    options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "--store", str(path)])
    top = cast(MultiService, makeService(options))
    [store_service] = [s for s in top if isinstance(s, StoreService)]
    assert next(iter(top)) is store_service  # stopped after the goodbyes
    [factory] = {s.factory for s in top if hasattr(s, "factory")}
    assert factory.room.history is store_service.store.history
    top.startService()
    factory.room.broadcast(b"[1.2.3]-alice: bonjour\n")
    yield top.stopService()
    assert kept_in(path) == [b"[1.2.3]-alice: bonjour\n"]


@pytest_twisted.inlineCallbacks
def test_a_read_sqlite_refuses_fails_as_a_history_that_cannot_be_read_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    def malformed(rows: Any) -> list[Any]:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(store_module, "_kept", malformed)
    chat = Chat()
    store = Store.open(
        str(tmp_path / "chat.sqlite3"), chat.clock, cast(IReactorFromThreads, reactor)
    )
    store.start()
    chat.factory.room.history = store.history
    try:
        with pytest.raises(ClusterUnreachable):
            yield store.history.last(5)
        alice = chat.user("alice")
        alice.send(b"/history\n")
        yield sleep(0.2)
        assert alice.take().decode().endswith(wire.HISTORY_UNAVAILABLE + "\n")
    finally:
        yield store.close()
