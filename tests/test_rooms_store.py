"""Rooms in the SQLite store (chatproto/store.py, schema version 4): each
line's room, /history and /search per room, /unread the lobby's, and the
migration of a version 3 file."""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred

from chatproto import store as store_module
from chatproto.store import MIGRATIONS, VERSION, _connect
from chatproto.testing import Chat
from tests.test_store import line, opened, sleep


def numbers(kept: list[Any]) -> list[int]:
    return [k.number for k in kept]


def room_line(n: int, room: str, text: str = "bonjour") -> bytes:
    return f"[10.0.{n % 60}]-#{room} bob: {text} {n}\n".encode()


@pytest_twisted.inlineCallbacks
def test_each_rooms_lines_are_read_apart_before_and_after_they_are_committed(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    store = opened(tmp_path / "chat.sqlite3")
    try:
        history = store.history
        history.record(line(1))
        history.record(room_line(2, "a"), "a")
        history.record(room_line(3, "b"), "b")
        history.record(line(4, "pomme"))
        history.record(room_line(5, "a", "pomme"), "a")
        for committed in (False, True):
            assert numbers((yield history.last(10))) == [1, 4]
            assert numbers((yield history.last(10, "a"))) == [2, 5]
            assert numbers((yield history.last(1, "b"))) == [3]
            assert numbers((yield history.last(10, "c"))) == []
            assert numbers((yield history.before(5, 10, "a"))) == [2]
            assert numbers((yield history.before(None, 10, "a"))) == [2, 5]
            assert numbers((yield history.search(["pomme"], 10))) == [4]
            assert numbers((yield history.search(["pomme"], 10, "a"))) == [5]
            assert numbers((yield history.search(["bonjour"], 10, "b"))) == [3]
            assert numbers((yield history.search(["bonjour"], 10))) == [1]
            # /unread: the lobby's lines, counted without the rooms'
            total, kept = yield history.after(0, 10)
            assert (total, numbers(kept)) == (2, [1, 4])
            total, kept = yield history.after(1, 10)
            assert (total, numbers(kept)) == (1, [4])
            if not committed:
                yield sleep(0.5)
                assert store.unsaved() == [] and store.unsaved("a") == []
    finally:
        yield store.close()
    db = sqlite3.connect(tmp_path / "chat.sqlite3")
    try:
        assert db.execute("SELECT id, room, seq FROM lines ORDER BY id").fetchall() == [
            (1, None, 1),
            (2, "a", None),
            (3, "b", None),
            (4, None, 2),
            (5, "a", None),
        ]
    finally:
        db.close()


@pytest_twisted.inlineCallbacks
def test_no_text_reaches_a_rooms_marks_in_the_words_index(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """A lobby line that says the marks' words is the lobby's all the same."""
    store = opened(tmp_path / "chat.sqlite3")
    try:
        history = store.history
        mark = store_module.ROOM_WORD
        history.record(line(1, f"{mark} {mark}61 SSROOM"))
        history.record(room_line(2, "a", "ssroom"), "a")
        yield sleep(0.5)
        assert numbers((yield history.search(["ssroom"], 10))) == [1]
        assert numbers((yield history.search(["ssroom"], 10, "a"))) == [2]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_a_version_3_file_is_migrated_its_lines_the_lobbys(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "v3.sqlite3"
    db = _connect(str(path))
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1], *MIGRATIONS[2]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    for n in range(1, 4):
        db.execute(
            "INSERT INTO lines (id, at, line, seq) VALUES (?, ?, ?, ?)",
            (n, n, line(n, "ancien"), n),
        )
        db.execute(
            "INSERT INTO words (rowid, folded) VALUES (?, ?)",
            (n, f"alice ancien {n}"),
        )
    db.execute("COMMIT")
    db.close()
    path.chmod(0o600)
    store = opened(path, task.Clock())
    try:
        history = store.history
        history.record(room_line(4, "a", "ancien"), "a")
        history.record(line(5, "ancien"))
        assert numbers((yield history.last(10))) == [1, 2, 3, 5]
        assert numbers((yield history.search(["ancien"], 10))) == [1, 2, 3, 5]
        assert numbers((yield history.search(["ancien"], 10, "a"))) == [4]
        total, kept = yield history.after(1, 10)
        assert (total, numbers(kept)) == (3, [2, 3, 5])
    finally:
        yield store.close()
    again = opened(path, task.Clock())
    try:
        total, _ = yield again.history.after(0, 0)
        assert total == 4
        assert numbers((yield again.history.last(10, "a"))) == [4]
    finally:
        yield again.close()
    check = sqlite3.connect(path)
    try:
        assert VERSION == 4
        assert check.execute("PRAGMA user_version").fetchone() == (4,)
        plan = check.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM lines WHERE room IS ? "
            "ORDER BY id DESC LIMIT 5",
            ("a",),
        ).fetchall()
        assert "lines_room" in str(plan)
    finally:
        check.close()


@pytest_twisted.inlineCallbacks
def test_retention_forgets_a_rooms_lines_and_their_words(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    clock = task.Clock()
    clock.advance(100 * 86400)
    store = opened(tmp_path / "chat.sqlite3", clock, days=1)
    try:
        store.history.record(room_line(1, "a", "vieux"), "a")
        yield sleep(0.4)
        clock.advance(2 * 86400)
        store.history.record(room_line(2, "a", "neuf"), "a")
        yield sleep(0.4)
    finally:
        yield store.close()
    again = opened(tmp_path / "chat.sqlite3", clock, days=1)
    try:
        yield sleep(0.4)  # retention runs at start
        assert numbers((yield again.history.last(10, "a"))) == [2]
        assert numbers((yield again.history.search(["vieux"], 10, "a"))) == []
    finally:
        yield again.close()
    db = sqlite3.connect(tmp_path / "chat.sqlite3")
    try:
        # the contentless index lost the old line's words, marks included
        rows = db.execute(
            "SELECT rowid FROM words WHERE words MATCH ?",
            (f'"{store_module.ROOM_WORD}"',),
        ).fetchall()
        assert rows == [(2,)]
    finally:
        db.close()


@pytest_twisted.inlineCallbacks
def test_a_chat_on_a_store_answers_history_and_search_per_room(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    chat = Chat(flood_rate=0)
    store = opened(tmp_path / "chat.sqlite3", chat.clock)
    chat.factory.room.history = store.history
    try:
        alice, bob = chat.user("alice"), chat.user("bob")
        alice.send(b"/join #a\n")
        bob.send(b"/join #a\n")
        alice.send(b"pomme rouge\n")
        bob.send(b"/join #accueil\npomme verte\n/join #a\n")
        alice.take(), bob.take()
        yield sleep(0.3)
        bob.send(b"/search pomme\n")
        yield sleep(0.3)
        stamp = chat.stamp()
        assert bob.take() == (
            "--- recherche « pomme » (1 ligne) ---\n".encode()
            + stamp
            + b"-#a alice: pomme rouge\n--- fin de la recherche ---\n"
        )
        bob.send(b"/history 2\n")
        yield sleep(0.3)
        assert bob.take() == (
            b"--- historique (2 lignes) ---\n"
            + stamp
            + b"-#a Connexion de bob\n"
            + stamp
            + b"-#a alice: pomme rouge\n--- fin de l'historique ---\n"
        )
        alice.send(b"/join #accueil\n/history 1\n")
        yield sleep(0.3)
        assert alice.lines()[-3:] == [
            b"--- historique (1 ligne) ---\n",
            stamp + b"-bob: pomme verte\n",
            b"--- fin de l'historique ---\n",
        ]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_a_line_number_past_any_id_reads_the_newest_lines(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """/history 2 avant 10**30 answered an internal error and logged a
    traceback (sqlite3 cannot take the number): every line is before it."""
    store = opened(tmp_path / "chat.sqlite3")
    try:
        history = store.history
        for n in (1, 2, 3):
            history.record(line(n))
        history.record(room_line(4, "a"), "a")
        for committed in (False, True):
            assert numbers((yield history.before(10**30, 2))) == [2, 3]
            assert numbers((yield history.before(2**63, 5, "a"))) == [4]
            assert numbers((yield history.before(2**63 - 1, 1))) == [3]
            if not committed:
                yield sleep(0.5)
                assert store.unsaved() == []
    finally:
        yield store.close()
