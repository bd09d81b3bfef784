"""The chat's SQLite store: the public lines, their words, the accounts.

One file (C{--store}, by default C{chat.sqlite3} in the working
directory), mode 0600 as it holds password hashes, in WAL mode with
C{synchronous=FULL}: a transaction committed is on the disk.

    lines      id (its number: a single server's, each line one more; a
               cluster node's, Redis's stamp), at (ms since the epoch), the
               line's bytes exactly as sent: every public line, arrivals
               and departures included; never a private line; seq (each
               line one more, in this file, whatever its id: a count of
               lines is a difference of two seqs; NULL: the id, for the
               lines written before version 3; a named room's lines have
               none: /unread counts the lobby's), room (the named room's
               name, lower case without its #; NULL: the lobby, and every
               line written before version 4), indexed with the id
               (lines_room): each room's lines read as fast as the lobby's
    words      FTS5, contentless: rowid = lines.id, folded: the text
               search_words(searchable(line)) joined by spaces (already
               folded, so unicode61 without diacritics removal cuts it
               into exactly those words); no column sizes, as nothing is
               ranked (results go by rowid). A named room's line starts
               with two words no text folds to (search_words casefolds, and
               "ß" becomes "ss"): ROOM_WORD, and ROOM_WORD followed by the
               room's name in hex; /search in a room requires the second,
               in the lobby excludes lines with the first. On a million lines of
               bench/store.py: 23.5 MiB, beside 67.6 MiB of lines (with
               column sizes 9.6 MiB more; a plain table would keep the
               folded text too, 38 MiB more)
    accounts   key (nick_key), nick, hash, used (seconds since the epoch),
               seen (its read position: lines.id of the newest line when
               its owner last left; NULL: never left since version 2)

The schema's version is C{PRAGMA user_version}: L{MIGRATIONS}[n] takes a
file from version n to n + 1. A file that is not a store, is damaged, or
was written by a newer version stops the start with one L{StoreError}
sentence, and is left as it is.

Threads: the reactor never waits on the disk. L{Store.record} numbers a
line (the largest id at open, plus one each time) and puts it, with its
seq (likewise), in the unsaved lines, bounded
in lines and bytes (past them a line is dropped, unnumbered, and
counted); one writer thread commits them in batches (the first line
after a quiet spell at once, then at most one commit per
L{BATCH_INTERVAL}: a line is on the disk a fraction of a second after it
is said), and acknowledges each batch, taking it out of the unsaved
lines. Reads run in a small pool with connections of their own (WAL lets
them read while the writer writes); each read takes the unsaved lines as
they are when it is asked, and merges them, by id, with the rows it
finds. A cluster node's store is numbered by the cluster instead
(L{Store.keep}: Redis's stamps, increasing, with gaps; the lines of every
node, copied from Redis by chatproto/cluster_roles.py's StoreFeed). The
seqs in the file run without a gap whatever the ids, as a batch is
committed whole and in order, the oldest lines forgotten first, and a
batch the disk refused at the stop goes with every line after it: the
lines between two lines number the difference of their seqs. A failing
write (a full disk, a read-only file) is logged, counted and retried; the
chat goes on. The writer also forgets, at start
and every L{RETENTION_INTERVAL}, lines past their age or past the bytes
allowed (oldest first), and accounts unused too long, in chunks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

from twisted.application import service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chatproto.accounts import Account, Looks
from chatproto.history import (
    Kept,
    newest_holding,
    room_of,
    search_words,
    searchable,
)
from chatproto.metrics import Metrics
from chatproto.registry import ClusterUnreachable, nick_key

log = Logger()

T = TypeVar("T")

# Each migration: the statements that take the schema from its index to the
# next version, in one transaction.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE lines (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, "
        "line BLOB NOT NULL)",
        "CREATE VIRTUAL TABLE words USING fts5(folded, content='', "
        "columnsize=0, tokenize='unicode61 remove_diacritics 0')",
        "CREATE TABLE accounts (key TEXT PRIMARY KEY, nick TEXT NOT NULL, "
        "hash TEXT NOT NULL, used REAL NOT NULL)",
    ),
    # 2: the read position of a protected nickname (/unread).
    ("ALTER TABLE accounts ADD COLUMN seen INTEGER",),
    # 3: lines counted without reading them, whatever their numbers (a
    # cluster node's are Redis's stamps): /unread's count on a million lines.
    ("ALTER TABLE lines ADD COLUMN seq INTEGER",),
    # 4: rooms (chatproto/rooms.py): each line's room, NULL the lobby's (so
    # every line of before), and the index that reads one room's lines.
    (
        "ALTER TABLE lines ADD COLUMN room TEXT",
        "CREATE INDEX lines_room ON lines (room, id)",
    ),
]
VERSION = len(MIGRATIONS)

HEADER = b"SQLite format 3\x00"

# Lines recorded but not committed yet, at most (past either, dropped).
UNSAVED_LINES = 20_000
UNSAVED_BYTES = 16 << 20
RETRY_DELAY = 1.0  # seconds before a failed write is tried again
BATCH_INTERVAL = 0.2  # seconds between two commits, at least
RETENTION_INTERVAL = 600.0
RETENTION_CHUNK = 2_000  # lines forgotten per transaction
LOG_INTERVAL = 60.0  # lines dropped, write failures: logged this often at most
LARGEST_ID = 2**63 - 1  # of a row: a line's number is its id
READERS = 2  # threads (and connections) reading
# History reads (/history, /search) asked and not answered yet, at most:
# past them, a read fails as one that cannot be done now. Flood control
# bounds each user's reads, not all users' together: many users' /search
# would otherwise queue without end, each holding its copy of the unsaved
# lines, and every answer would come ever later.
READS_WAITING = 64


# The word that marks a named room's line in the words index: no text's
# search_words has it (they are casefolded, and casefold makes "ß" "ss"),
# and unicode61 keeps it whole (ß is a letter, in lower case).
ROOM_WORD = "ßroom"


class StoreError(Exception):
    """The store cannot be opened: one sentence that names the file."""


def _room_word(room: str) -> str:
    """The word of the named room C{room} in the words index."""
    return ROOM_WORD + room.encode().hex()


def _words(line: bytes) -> str:
    return " ".join(search_words(searchable(line)))


def _folded(line: bytes, room: str | None) -> str:
    """The words index's text of a line of C{room} (None: the lobby)."""
    words = _words(line)
    if room is None:
        return words
    return f"{ROOM_WORD} {_room_word(room)} {words}"


def _match(words: Sequence[str], room: str | None = None) -> str:
    """An FTS5 query: every word, each quoted (a word of search_words holds
    no quote, but a caller's word might); in a named room's lines, or in
    the lobby's (none marked as a room's)."""
    every = " ".join('"' + word.replace('"', '""') + '"' for word in words)
    if room is None:
        return f'({every}) NOT "{ROOM_WORD}"'
    return f'"{_room_word(room)}" {every}'


def _kept(rows: Iterable[tuple[int, int, bytes]]) -> list[Kept]:
    return [Kept(number, at / 1000, bytes(line)) for number, at, line in rows]


def _merge(rows: list[Kept], unsaved: Iterable[Kept], count: int) -> list[Kept]:
    """The last C{count} of the rows read and the lines not yet committed
    (a line may be in both), oldest first."""
    merged = {kept.number: kept for kept in rows}
    for kept in unsaved:
        merged[kept.number] = kept
    return [merged[n] for n in sorted(merged)[-count:]] if count > 0 else []


def _check(path: str) -> tuple[int, bool]:
    """Whether the store at C{path} can be opened, read-only: its schema
    version, and whether the file exists; raise L{StoreError} otherwise."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StoreError(
            f"cannot open the store {path}: the directory {folder} does not exist."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot open the store {path}: no permission to write in {folder}."
        )
    if not os.path.lexists(path):
        return 0, False
    if not os.path.exists(path):  # a symbolic link to nothing: not created
        raise StoreError(
            f"the store {path} is a symbolic link to {os.path.realpath(path)}, "
            "which does not exist."
        )
    if os.path.isdir(path):
        raise StoreError(f"the store {path} is a directory, not a file.")
    if not os.path.isfile(path):  # a FIFO's open() below would wait forever
        raise StoreError(f"the store {path} is not a regular file.")
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"cannot open the store {path}: no permission to read and write it."
        )
    with open(path, "rb") as f:
        header = f.read(len(HEADER))
    if not header:
        return 0, True  # an empty file: SQLite makes it a database
    if header != HEADER:
        raise StoreError(f"{path} is not a chat store: it is not a SQLite database.")
    damaged = f"the store {path} is damaged"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > VERSION:
                raise StoreError(
                    f"the store {path} was written by a newer chatproto (schema "
                    f"{version}; this one knows up to {VERSION}): upgrade chatproto."
                )
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if version == 0 and tables:
                raise StoreError(
                    f"{path} is not a chat store: a SQLite database of another program."
                )
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise StoreError(f"{damaged} ({problem}); restore it from a backup.")
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{damaged} ({e}); restore it from a backup.") from None
    return version, True


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Take the schema from C{version} to ours, each step in a transaction."""
    for target in range(version + 1, VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        for statement in MIGRATIONS[target - 1]:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {target}")
        db.execute("COMMIT")


def _connect(path: str, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA busy_timeout = 5000")
    return db


class Store:
    """The SQLite store of one server; built by L{open}, its threads run
    between L{start} and L{close} (its L{service} does both)."""

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        reactor: IReactorFromThreads,
        lock: int,
        last_number: int,
        size: int,
        days: float,
        max_bytes: int,
        nick_days: float,
        metrics: Metrics,
        protected: set[str] | None = None,
        last_seq: int = 0,
    ) -> None:
        self.path = path
        self.clock = clock
        self.reactor = reactor
        self.days = days
        self.max_bytes = max_bytes
        self.nick_days = nick_days
        self.metrics = metrics
        self._lock_fd = lock
        held = os.fstat(lock)
        self._file = (held.st_dev, held.st_ino)  # the file written
        self._last_number = last_number
        self._last_seq = last_seq
        # The reactor's: lines recorded and not yet known committed, and
        # their rooms (None: the lobby).
        self._unsaved: deque[tuple[Kept, str | None]] = deque()
        self._unsaved_bytes = 0
        self._dropped = 0  # since the last log of them
        self._dropped_logged = -LOG_INTERVAL
        self._failures_logged = -LOG_INTERVAL
        # Shared with the writer, under _mutex: what it has to write.
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        # each line, its seq (None: a named room's line), its room
        self._to_write: list[tuple[Kept, int | None, str | None]] = []
        self._jobs: list[tuple[Callable[[sqlite3.Connection], Any], Deferred[Any]]] = []
        self._halt = threading.Event()  # set (under _mutex) by close()
        # The writer's own.
        self._size = size  # the bytes of the lines committed
        self._writer: threading.Thread | None = None
        self._closed: Deferred[None] | None = None
        self._readers = ThreadPool(1, READERS, name="store-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self.history = StoreHistory(self)
        self.accounts = StoreAccounts(self, protected or set())
        self.service = StoreService(self)

    @classmethod
    def open(
        cls,
        path: str,
        clock: IReactorTime,
        reactor: IReactorFromThreads,
        *,
        days: float = 30,
        max_bytes: int = 1 << 30,
        nick_days: float = 90,
        metrics: Metrics | None = None,
    ) -> Store:
        """Open or create the store at C{path}, checked and brought to our
        schema; raise L{StoreError} (the file left untouched) if it cannot
        be. C{clock} says when a line is kept; C{reactor} runs what the
        threads answer."""
        version, exists = _check(path)
        try:
            if not exists:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            lock = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise StoreError(f"cannot create the store {path}: {e.strerror}.") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            raise StoreError(
                f"the store {path} is in use by another chat server."
            ) from None
        try:
            db = _connect(path)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                _migrate(db, version)
                last, size = db.execute(
                    "SELECT coalesce(max(id), 0), coalesce(sum(length(line)), 0) "
                    "FROM lines"
                ).fetchone()
                (seq,) = db.execute(
                    "SELECT coalesce((SELECT coalesce(seq, id) FROM lines WHERE "
                    "room IS NULL ORDER BY id DESC LIMIT 1), 0)"
                ).fetchone()
                protected = {key for (key,) in db.execute("SELECT key FROM accounts")}
            finally:
                db.close()
        except sqlite3.Error as e:
            os.close(lock)
            raise StoreError(f"cannot write the store {path}: {e}.") from None
        return cls(
            path,
            clock,
            reactor,
            lock,
            last,
            size,
            days,
            max_bytes,
            nick_days,
            metrics or Metrics(),
            protected,
            seq,
        )

    # The threads

    def start(self) -> None:
        """Start the writer and the readers (after twistd's fork: a
        connection must not cross one)."""
        self._readers.start()
        self._writer = threading.Thread(target=self._write, name="store-write")
        self._writer.daemon = True
        self._writer.start()

    def close(self) -> Deferred[None]:
        """Commit the lines recorded, stop the threads; fires when done."""
        if self._closed is None:
            self._closed = Deferred()
            with self._mutex:
                self._halt.set()
            self._wake.set()
            if self._writer is None:
                self._stopped()
        return self._closed

    def _stopped(self) -> None:
        """The writer is done: the readers go too."""
        self._readers.stop()
        for db in self._connections:
            db.close()
        os.close(self._lock_fd)
        assert self._closed is not None
        self._closed.callback(None)

    # The reactor's side

    def record(self, line: bytes, room: str | None = None) -> None:
        """Number a public line of C{room} (None: the lobby) and queue it
        for the writer; never waits."""
        if self._full(line):
            self._drop()
            return
        self._last_number += 1
        self._enqueue(Kept(self._last_number, self.clock.seconds(), line), room)

    def keep(self, lines: Iterable[Kept]) -> None:
        """Queue lines numbered elsewhere (a cluster's stamps, increasing),
        as L{record} does, each of the room its text says (L{room_of});
        those numbered at most L{newest}, already here, are passed over."""
        for kept in lines:
            if kept.number <= self._last_number:
                continue
            if self._full(kept.line):
                self._drop()
                continue
            self._last_number = kept.number
            self._enqueue(kept, room_of(kept.line))

    def _full(self, line: bytes) -> bool:
        return (
            len(self._unsaved) >= UNSAVED_LINES
            or self._unsaved_bytes + len(line) > UNSAVED_BYTES
        )

    def _enqueue(self, kept: Kept, room: str | None = None) -> None:
        """A numbered line for the writer, with the next seq (the lobby's
        lines only: /unread counts them)."""
        self._unsaved.append((kept, room))
        self._unsaved_bytes += len(kept.line)
        seq = None
        if room is None:
            self._last_seq += 1
            seq = self._last_seq
        with self._mutex:
            self._to_write.append((kept, seq, room))
            first = len(self._to_write) == 1
        if first:
            self._wake.set()

    def _drop(self) -> None:
        self.metrics.store_lines_dropped += 1
        self._dropped += 1
        now = self.clock.seconds()
        if now - self._dropped_logged >= LOG_INTERVAL:
            log.error(
                "store {path}: {count} public lines not kept: too many wait "
                "to be written (its writes fail or lag)",
                path=self.path,
                count=self._dropped,
            )
            self._dropped, self._dropped_logged = 0, now

    def _saved(self, number: int) -> None:
        """The lines up to C{number} are committed."""
        unsaved = self._unsaved
        while unsaved and unsaved[0][0].number <= number:
            self._unsaved_bytes -= len(unsaved.popleft()[0].line)

    def _failed(self, error: str) -> None:
        self.metrics.store_write_failures += 1
        now = self.clock.seconds()
        if now - self._failures_logged >= LOG_INTERVAL:
            log.error(
                "store {path}: cannot write ({error}); the lines wait and the "
                "writes are tried again every {delay:g} s",
                path=self.path,
                error=error,
                delay=RETRY_DELAY,
            )
            self._failures_logged = now

    def _lost(self) -> None:
        """The writer committed to a file no longer at C{path}."""
        self.metrics.store_write_failures += 1
        now = self.clock.seconds()
        if now - self._failures_logged >= LOG_INTERVAL:
            log.error(
                "store {path}: the file was deleted or replaced while the server "
                "runs: the lines are written to the old file, lost when the "
                "server stops",
                path=self.path,
            )
            self._failures_logged = now

    def read(self, query: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """Run C{query} with a reading connection, in a reader thread;
        fail with ClusterUnreachable (what a History's reads fail with when
        it cannot be read now) if SQLite fails."""
        d = deferToThreadPool(
            self.reactor,
            self._readers,
            lambda: query(self._reading()),
        )
        return d.addErrback(self._unreadable)

    def _unreadable(self, failure: Failure) -> NoReturn:
        failure.trap(sqlite3.Error)
        log.error(
            "store {path}: cannot read ({error})", path=self.path, error=failure.value
        )
        raise ClusterUnreachable(f"the store {self.path} cannot be read now")

    def write(self, change: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """Run C{change} in the writer's next transaction; fires once it is
        committed (or fails with the write's error)."""
        d: Deferred[T] = Deferred()
        with self._mutex:
            self._jobs.append((change, d))
        self._wake.set()
        return d

    @property
    def newest(self) -> int:
        """The number of the newest line recorded (0: none yet)."""
        return self._last_number

    def unsaved(self, room: str | None = None) -> list[Kept]:
        """The lines of C{room} (None: the lobby) recorded and not yet
        known committed, oldest first."""
        return [kept for kept, of in self._unsaved if of == room]

    # The threads' side

    def _reading(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = _connect(self.path, read_only=True)
            with self._mutex:
                self._connections.append(db)
        return db

    def _write(self) -> None:
        """The writer thread: commit what is queued, forget what is old."""
        db = _connect(self.path)
        batch: list[tuple[Kept, int | None, str | None]] = []
        retain_at = 0.0  # time.monotonic() of the next retention pass
        retaining = False
        while True:
            if batch:  # a failed write, tried again
                timeout = RETRY_DELAY
            elif retaining:
                timeout = 0.0
            else:
                timeout = max(0.0, retain_at - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            with self._mutex:
                batch += self._to_write
                self._to_write = []
                jobs, self._jobs = self._jobs, []
                stopping = self._halt.is_set()
            if (batch or jobs) and self._commit(db, batch, jobs):
                batch = []
                # The lines said meanwhile wait for the next batch: under
                # load, a commit (and its fsync) per BATCH_INTERVAL.
                self._halt.wait(BATCH_INTERVAL)
            if stopping:
                break  # what the disk refused is lost, as logged
            if time.monotonic() >= retain_at:
                retaining = True
                retain_at = time.monotonic() + RETENTION_INTERVAL
            if retaining:
                try:
                    retaining = self._retain(db)
                except sqlite3.Error as e:
                    self._rollback(db)
                    self.reactor.callFromThread(self._failed, str(e))
                    retaining = False
        db.close()
        self.reactor.callFromThread(self._stopped)

    def _commit(
        self,
        db: sqlite3.Connection,
        batch: list[tuple[Kept, int | None, str | None]],
        jobs: list[tuple[Callable[[sqlite3.Connection], Any], Deferred[Any]]],
    ) -> bool:
        """Commit the lines and the jobs in one transaction: whether done."""
        results = []
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO lines (id, at, line, seq, room) VALUES (?, ?, ?, ?, ?)",
                [(k.number, round(k.when * 1000), k.line, q, r) for k, q, r in batch],
            )
            db.executemany(
                "INSERT INTO words (rowid, folded) VALUES (?, ?)",
                [(k.number, _folded(k.line, r)) for k, _, r in batch],
            )
            results = [change(db) for change, _ in jobs]
            db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback(db)
            self.reactor.callFromThread(self._failed, str(e))
            for _, d in jobs:
                self.reactor.callFromThread(d.errback, e)
            return False
        self._size += sum(len(k.line) for k, _, _ in batch)
        if batch:
            self.reactor.callFromThread(self._saved, batch[-1][0].number)
        if self._replaced():
            self.reactor.callFromThread(self._lost)
        for (_, d), result in zip(jobs, results, strict=True):
            self.reactor.callFromThread(d.callback, result)
        return True

    def _replaced(self) -> bool:
        """Whether the file at C{path} is no longer the one written: deleted,
        or another put in its place (a backup restored by hand)."""
        try:
            now = os.stat(self.path)
        except OSError:
            return True
        return (now.st_dev, now.st_ino) != self._file

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite rolled back itself
                db.execute("ROLLBACK")

    def _retain(self, db: sqlite3.Connection) -> bool:
        """Forget one chunk of the oldest lines, if older than C{days} or
        past C{max_bytes}, and the accounts unused for C{nick_days}:
        whether more lines may go."""
        now = self.clock.seconds()
        horizon = round((now - self.days * 86400) * 1000)
        rows = db.execute(
            "SELECT id, at, line, room FROM lines ORDER BY id LIMIT ?",
            (RETENTION_CHUNK,),
        ).fetchall()
        doomed = []
        size = self._size
        for number, at, line, room in rows:
            if at >= horizon and size <= self.max_bytes:
                break
            doomed.append((number, line, room))
            size -= len(line)
        db.execute("BEGIN IMMEDIATE")
        if doomed:
            db.execute("DELETE FROM lines WHERE id <= ?", (doomed[-1][0],))
            db.executemany(
                "INSERT INTO words (words, rowid, folded) VALUES ('delete', ?, ?)",
                [(number, _folded(line, room)) for number, line, room in doomed],
            )
        db.execute(
            "DELETE FROM accounts WHERE used < ?", (now - self.nick_days * 86400,)
        )
        db.execute("COMMIT")
        self._size = size
        return len(doomed) == RETENTION_CHUNK


class StoreHistory:
    """The room's history (chatproto.history.History) in the store."""

    limit = 500  # the most lines /history may ask for

    def __init__(self, store: Store) -> None:
        self.store = store
        self._reading = 0  # reads asked, not answered yet

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """The store's read, unless READS_WAITING wait already."""
        if self._reading >= READS_WAITING:
            return fail(
                ClusterUnreachable(f"{READS_WAITING} reads of {self.store.path} wait")
            )
        self._reading += 1
        return self.store.read(query).addBoth(self._answered)

    def _answered(self, result: T) -> T:
        self._reading -= 1
        return result

    def record(self, line: bytes, room: str | None = None) -> None:
        self.store.record(line, room)

    def keep(self, lines: Iterable[Kept]) -> None:
        """Lines numbered by a cluster (L{Store.keep})."""
        self.store.keep(lines)

    def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
        if count <= 0:
            return succeed([])
        unsaved = self.store.unsaved(room)

        def query(db: sqlite3.Connection) -> list[Kept]:
            rows = db.execute(
                "SELECT id, at, line FROM lines WHERE room IS ? "
                "ORDER BY id DESC LIMIT ?",
                (room, count),
            ).fetchall()
            return _merge(_kept(rows), unsaved[-count:], count)

        return self._read(query)

    @property
    def newest(self) -> int:
        return self.store.newest

    def after(
        self, number: int, count: int, until: int | None = None
    ) -> Deferred[tuple[int, list[Kept]]]:
        """The lobby's lines after C{number} (/unread reads the lobby)."""
        last = self.store.newest if until is None else until
        unsaved = [
            kept for kept in self.store.unsaved() if number < kept.number <= last
        ]

        def query(db: sqlite3.Connection) -> tuple[int, list[Kept]]:
            # Counted as a difference of seqs (see the module's text), not
            # row by row: the seq of the newest line up to `last`, less that
            # of the newest up to `number` (or of the line before the first).
            newest = (
                "FROM lines WHERE room IS NULL AND id <= ? ORDER BY id DESC LIMIT 1"
            )
            seq = f"SELECT coalesce(seq, id) {newest}"
            top, top_seq, seen_seq, first_seq = db.execute(
                f"SELECT (SELECT id {newest}), ({seq}), ({seq}), (SELECT "
                "coalesce(seq, id) FROM lines WHERE room IS NULL ORDER BY id LIMIT 1)",
                (last, last, number),
            ).fetchone()
            found = 0
            if top is not None and top > number:
                base = first_seq - 1 if seen_seq is None else seen_seq
                found = top_seq - base
            rows = db.execute(
                "SELECT id, at, line FROM lines WHERE room IS NULL AND id > ? "
                "AND id <= ? ORDER BY id DESC LIMIT ?",
                (number, last, max(0, count)),
            ).fetchall()
            # The lines past the newest row read are not in the file yet.
            top = max(number, top or 0)
            found += sum(1 for kept in unsaved if kept.number > top)
            return found, _merge(_kept(rows), unsaved[-count:], count)

        return self._read(query)

    def before(
        self, number: int | None, count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        # Past SQLite's largest id (a user's /history 1 avant 10**30) every
        # line is before it: sqlite3 raises OverflowError on such a number.
        if number is None or number > LARGEST_ID:
            return self.last(count, room)
        if count <= 0:
            return succeed([])
        unsaved = [kept for kept in self.store.unsaved(room) if kept.number < number]

        def query(db: sqlite3.Connection) -> list[Kept]:
            rows = db.execute(
                "SELECT id, at, line FROM lines WHERE room IS ? AND id < ? "
                "ORDER BY id DESC LIMIT ?",
                (room, number, count),
            ).fetchall()
            return _merge(_kept(rows), unsaved[-count:], count)

        return self._read(query)

    def search(
        self, words: Sequence[str], count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        if count <= 0 or not words:
            return succeed([])
        unsaved = self.store.unsaved(room)

        def query(db: sqlite3.Connection) -> list[Kept]:
            rows = db.execute(
                "SELECT id, at, line FROM lines WHERE id IN (SELECT rowid FROM "
                "words WHERE words MATCH ? ORDER BY rowid DESC LIMIT ?)",
                (_match(words, room), count),
            ).fetchall()
            # the newest first, each given a cheap first look: a failing
            # disk leaves up to UNSAVED_LINES here, 4 s to fold them all
            matching = newest_holding(reversed(unsaved), words, count)
            return _merge(_kept(rows), matching, count)

        return self._read(query)


class StoreAccounts:
    """The protected nicknames (chatproto.accounts.Accounts) in the store.

    It knows their keys (C{protected}, read at open): this server is the
    store's only writer (its lock), so a nickname not among them is
    protected by nobody, and finding it costs no read in a thread (a herd
    of 10,000 registrations would cost 10,000). A key is added before its
    account is written and removed once its removal is committed, so that a
    failing write never makes a protected nickname look free."""

    def __init__(self, store: Store, protected: set[str]) -> None:
        self.store = store
        self.protected = protected
        # By look; an account the retention deleted stays until a restart:
        # find() says it is gone
        self.looks = Looks(protected)

    def look_alike(self, nick: str) -> str | None:
        return self.looks.alike(nick)

    def surely_free(self, nick: str) -> bool:
        return not self.looks.holds(nick)

    def find(self, nick: str) -> Deferred[Account | None]:
        key = nick_key(nick)
        if key not in self.protected:
            return succeed(None)

        def query(db: sqlite3.Connection) -> Account | None:
            row = db.execute(
                "SELECT nick, hash, used, seen FROM accounts WHERE key = ?", (key,)
            ).fetchone()
            return None if row is None else Account(*row)

        return self.store.read(query)

    def protect(self, account: Account) -> Deferred[None]:
        row = (nick_key(account.nick), account.nick, account.hash, account.used)
        self.protected.add(row[0])
        self.looks.add(row[0])
        return self.store.write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO accounts (key, nick, hash, used) "
                "VALUES (?, ?, ?, ?)",
                row,
            )
        ).addCallback(lambda _: None)

    def unprotect(self, nick: str) -> Deferred[None]:
        key = nick_key(nick)
        return self.store.write(
            lambda db: db.execute("DELETE FROM accounts WHERE key = ?", (key,))
        ).addCallback(lambda _: self._unprotected(key))

    def _unprotected(self, key: str) -> None:
        self.protected.discard(key)
        self.looks.discard(key)

    def touch(self, nick: str, when: float, seen: int | None = None) -> Deferred[None]:
        key = nick_key(nick)
        return self.store.write(
            lambda db: db.execute(
                "UPDATE accounts SET used = ?, seen = coalesce(?, seen) WHERE key = ?",
                (when, seen, key),
            )
        ).addCallback(lambda _: None)


class StoreService(service.Service):
    """Runs the store's threads with the server; twistd's shutdown waits
    for the lines recorded to be committed."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def startService(self) -> None:
        super().startService()
        self.store.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.close()
