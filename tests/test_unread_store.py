"""The store's line numbers for /unread and /history N avant K, and the
read positions of protected nicknames in it (schema version 2)."""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred

from chatproto.accounts import Account
from chatproto.history import Kept
from chatproto.store import MIGRATIONS, VERSION, _connect
from tests.test_store import line, opened, sleep


def numbers(kept: list[Any]) -> list[int]:
    return [k.number for k in kept]


@pytest_twisted.inlineCallbacks
def test_after_and_before_merge_the_lines_not_yet_committed(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    store = opened(tmp_path / "chat.sqlite3")
    history = store.history
    try:
        assert history.newest == 0
        assert (yield history.after(0, 10)) == (0, [])
        for n in range(1, 6):
            history.record(line(n))
        yield sleep(0.3)  # lines 1 to 5 committed
        assert store.unsaved() == []
        for n in range(6, 9):
            history.record(line(n))  # 6 to 8 not yet
        assert history.newest == 8
        total, kept = yield history.after(3, 4)
        assert (total, numbers(kept)) == (5, [5, 6, 7, 8])
        assert [k.line for k in kept] == [line(n) for n in (5, 6, 7, 8)]
        total, kept = yield history.after(6, 10)
        assert (total, numbers(kept)) == (2, [7, 8])
        assert (yield history.after(8, 10)) == (0, [])
        assert numbers((yield history.before(7, 3))) == [4, 5, 6]
        assert numbers((yield history.before(None, 2))) == [7, 8]
        assert numbers((yield history.before(2, 5))) == [1]
        assert (yield history.before(1, 5)) == []
        yield sleep(0.3)
        total, kept = yield history.after(3, 2)
        assert (total, numbers(kept)) == (5, [7, 8])
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_a_read_position_is_kept_with_its_account_and_across_a_reopen(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "chat.sqlite3"
    store = opened(path, task.Clock())
    try:
        yield store.accounts.protect(Account("Prof", "scrypt$1", 100.0))
        assert (yield store.accounts.find("prof")).seen is None
        yield store.accounts.touch("prof", 200.0, 41)
        yield store.accounts.touch("prof", 300.0)  # an arrival: position kept
    finally:
        yield store.close()
    again = opened(path, task.Clock())
    try:
        found = yield again.accounts.find("PROF")
        assert found == Account("Prof", "scrypt$1", 300.0, 41)
        yield again.accounts.protect(Account("Prof", "scrypt$2", 400.0))
        assert (yield again.accounts.find("prof")).seen is None  # a new owner
    finally:
        yield again.close()


@pytest_twisted.inlineCallbacks
def test_a_version_1_file_is_migrated_to_the_last_version_its_accounts_kept(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "v1.sqlite3"
    db = _connect(str(path))
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO accounts (key, nick, hash, used) VALUES ('prof', 'Prof', 'h', 5)"
    )
    db.execute("INSERT INTO lines (id, at, line) VALUES (7, 1000, ?)", (line(7),))
    db.execute("COMMIT")
    db.close()
    path.chmod(0o600)
    store = opened(path, task.Clock())
    try:
        assert store.history.newest == 7
        total, kept = yield store.history.after(0, 10)  # lines 1 to 6 forgotten
        assert (total, numbers(kept)) == (1, [7])
        assert (yield store.accounts.find("prof")) == Account("Prof", "h", 5.0, None)
        yield store.accounts.touch("prof", 6.0, 7)
        assert (yield store.accounts.find("prof")).seen == 7
    finally:
        yield store.close()
    check = sqlite3.connect(path)
    try:
        assert VERSION == 4
        assert check.execute("PRAGMA user_version").fetchone() == (4,)
        assert check.execute("SELECT seen FROM accounts").fetchall() == [(7,)]
    finally:
        check.close()


@pytest_twisted.inlineCallbacks
def test_a_version_2_file_counts_its_old_lines_and_a_clusters_new_ones(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """Lines 5 to 9 of a single server's version 2 file (no seq), then the
    store of a cluster node, numbered by Redis's stamps: /unread counts
    across both."""
    path = tmp_path / "v2.sqlite3"
    db = _connect(str(path))
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    for n in range(5, 10):
        db.execute("INSERT INTO lines (id, at, line) VALUES (?, ?, ?)", (n, n, line(n)))
    db.execute("COMMIT")
    db.close()
    path.chmod(0o600)
    stamps = [1_800_000_000_000, 1_800_000_000_250]
    store = opened(path, task.Clock())
    try:
        store.history.keep([Kept(s, s / 1000, line(s)) for s in stamps])
        total, kept = yield store.history.after(6, 10)
        assert (total, numbers(kept)) == (5, [7, 8, 9, *stamps])
    finally:
        yield store.close()
    again = opened(path, task.Clock())
    try:
        total, kept = yield again.history.after(6, 2)
        assert (total, numbers(kept)) == (5, stamps)
        total, _ = yield again.history.after(8, 0, until=stamps[0])
        assert total == 2
        total, _ = yield again.history.after(0, 0)  # 1 to 4: never kept
        assert total == 7
    finally:
        yield again.close()
