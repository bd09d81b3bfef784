"""The SQLite store on a million lines: /history and /search latency, size.

    .venv/bin/python bench/store.py [--lines 1000000] [--path FILE] [--keep]
                                    [--cluster]

Builds a store (chatproto/store.py's schema) of realistic public lines: a
vocabulary of French words with accents drawn with Zipf's law, about 40
nicknames, arrivals and departures, stamped over the last 30 days. Then,
through StoreHistory on the real reactor (its reader threads), measures
last(500) and search() of a common word, a rare word, two words and a word
absent, after() and before() (/unread, /history N avant K): 50 of each,
median and p99 (the issue's target: under 50 ms);
PRAGMA quick_check's time (what Store.open runs) and the whole open; and
the file's size per million lines. The file goes in a temporary directory,
removed at the end, unless --path is given (and kept with --keep).
--cluster numbers the lines as a cluster node's store does (Redis's
millisecond stamps, with gaps), so that /unread's count goes row by row.
A single server's store has a fifth of its lines in ten named rooms
(chatproto/rooms.py; --room-share to change it): the lobby's queries pass
over them, and the room cases read one room's lines (a fiftieth of all).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from chatproto.history import Kept
from chatproto.store import Store, _connect, _folded, _migrate

VOCABULARY = (
    "le la les un une des de du et à en est que qui dans pour pas sur au "
    "avec il elle on nous vous ils ce cette mais ou où donc ni car très "
    "bien être avoir faire aller voir venir dire prendre savoir pouvoir "
    "vouloir falloir devoir croire trouver donner parler aimer passer "
    "penser regarder demain hier aujourd'hui maintenant toujours jamais "
    "déjà encore peut-être ça là-bas ici voilà merci bonjour salut "
    "bonsoir oui non d'accord génial super cool désolé problème serveur "
    "réseau école élève professeur cours leçon exercice devoir réponse "
    "question idée café thé déjeuner dîner goûter fenêtre téléphone "
    "ordinateur clavier écran souris fichier dossier répertoire mémoire "
    "système données réseau adresse paquet fenêtre état été hiver "
    "printemps automne forêt rivière château église hôpital théâtre "
    "musée bibliothèque pâtisserie boulangerie crème brûlée éléphant "
    "girafe hérisson écureuil araignée abeille fraîcheur naïveté "
    "cœur œuvre sœur bœuf noël maïs canoë Zoë Hélène Gaël Loïc Agnès "
    "Noémie Bérénice Jérôme François Françoise garçon leçon reçu "
    "déçu aperçu façade français curieux sérieux heureux malheureux "
    "économie écologie électricité énergie équipe étudiant événement "
    "expérience intérêt procédure sécurité société qualité vérité"
)
WORDS = VOCABULARY.split()
RARE = ["zygomatique", "quintessence", "palimpseste", "sérendipité", "ornithorynque"]
NICKS = [
    f"{name}{n}"
    for n in range(4)
    for name in (
        "alice",
        "bob",
        "carol",
        "dave",
        "eve",
        "fanny",
        "gael",
        "hugo",
        "ines",
        "jules",
    )
]
DAY = 86400.0
ROOMS = [f"salle{n}" for n in range(10)]


def build(
    path: str,
    count: int,
    now: float,
    seed: int = 21,
    stamps: bool = False,
    room_share: float = 0.0,
) -> None:
    """A store of C{count} public lines over the 30 days before C{now},
    numbered 1, 2, 3... (a single server's) or by their milliseconds
    (C{stamps}: a cluster node's); C{room_share} of them in the named
    rooms of ROOMS (the lobby's seq counts the lobby's lines only)."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    db = _connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")  # building only
    _migrate(db, 0)
    start = now - 30 * DAY
    step = 30 * DAY / count
    chunk = 50_000
    seq = 0
    for first in range(0, count, chunk):
        rows = []
        for n in range(first, min(count, first + chunk)):
            when = start + n * step
            t = time.localtime(when)
            stamp = f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]"
            nick = rng.choice(NICKS)
            room = rng.choice(ROOMS) if rng.random() < room_share else None
            if room is not None:
                stamp += f"-#{room}"
            kind = rng.random()
            if kind < 0.03:
                text = f"{stamp}-Connexion de {nick}\n"
            elif kind < 0.06:
                text = f"{stamp}-Déconnection de {nick}\n"
            else:
                words = rng.choices(WORDS, weights, k=rng.randint(2, 14))
                if rng.random() < 0.0005:
                    words.append(rng.choice(RARE))
                if rng.random() < 0.3:
                    words[0] = words[0].capitalize()
                text = f"{stamp}-{nick}: {' '.join(words)}\n"
            at = round(when * 1000)
            if room is not None:  # "[H.M.S]-#room-nick: ": "[H.M.S]-#room nick: "
                text = text.replace(f"-#{room}-", f"-#{room} ", 1)
                number = None
            else:
                seq += 1
                number = seq
            rows.append((at if stamps else n + 1, at, text.encode(), number, room))
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO lines (id, at, line, seq, room) VALUES (?, ?, ?, ?, ?)", rows
        )
        db.executemany(
            "INSERT INTO words (rowid, folded) VALUES (?, ?)",
            [(n, _folded(line, room)) for n, _, line, _, room in rows],
        )
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def second(pair: tuple[int, list[Kept]]) -> list[Kept]:
    return pair[1]


@defer.inlineCallbacks
def measure(reactor: Any, store: Store, rounds: int, back: int, middle: int) -> Any:
    """Time each query C{rounds} times; C{back} is the number of the line
    1,000 lines before the newest, C{middle} that of the middle line."""
    history = store.history
    cases: list[tuple[str, Callable[[], defer.Deferred[list[Kept]]]]] = [
        ("last(500)", lambda: history.last(500)),
        ("search common word (est)", lambda: history.search(["est"], 20)),
        ("search rare word (palimpseste)", lambda: history.search(["palimpseste"], 20)),
        (
            "search two words (cafe, demain)",
            lambda: history.search(["cafe", "demain"], 20),
        ),
        (
            "search absent word (introuvable)",
            lambda: history.search(["introuvable"], 20),
        ),
        # /unread: a position at the very start (every line after it
        # counted), and 1,000 lines back; /history 500 avant K.
        ("after(0, 500)", lambda: history.after(0, 500).addCallback(second)),
        (
            "after(1000 lines back, 500)",
            lambda: history.after(back, 500).addCallback(second),
        ),
        ("before(middle, 500)", lambda: history.before(middle, 500)),
        ("before(fin, 500)", lambda: history.before(None, 500)),
        # a named room's: /history 500, /search, /history 500 avant K
        ("room last(500)", lambda: history.last(500, ROOMS[3])),
        (
            "room search common word (est)",
            lambda: history.search(["est"], 20, ROOMS[3]),
        ),
        (
            "room search rare word (palimpseste)",
            lambda: history.search(["palimpseste"], 20, ROOMS[3]),
        ),
        (
            "room search absent word (introuvable)",
            lambda: history.search(["introuvable"], 20, ROOMS[3]),
        ),
        ("room before(middle, 500)", lambda: history.before(middle, 500, ROOMS[3])),
    ]
    print(f"{'query':40} {'found':>6} {'median ms':>10} {'p99 ms':>8}")
    for name, call in cases:
        times = []
        found = 0
        for _ in range(rounds):
            began = time.perf_counter()
            result = yield call()
            times.append((time.perf_counter() - began) * 1000)
            found = len(result)
        median, p99 = statistics.median(times), percentile(times, 0.99)
        print(f"{name:40} {found:6} {median:10.2f} {p99:8.2f}")
    yield store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--path", help="the store's file (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the file")
    parser.add_argument(
        "--cluster", action="store_true", help="number the lines as a cluster does"
    )
    parser.add_argument(
        "--room-share",
        type=float,
        default=None,
        help="the share of lines in named rooms (default 0.2; a cluster's: 0)",
    )
    args = parser.parse_args()
    folder = None
    if args.path is None:
        folder = tempfile.mkdtemp(prefix="chatbench-store-")
        path = os.path.join(folder, "chat.sqlite3")
    else:
        path = args.path
    try:
        now = time.time()
        if not os.path.exists(path):
            began = time.perf_counter()
            share = args.room_share
            if share is None:
                share = 0.0 if args.cluster else 0.2
            build(path, args.lines, now, stamps=args.cluster, room_share=share)
            print(f"built {args.lines} lines in {time.perf_counter() - began:.1f} s")
        size = os.path.getsize(path)
        db = sqlite3.connect(path)
        lines, text = db.execute(
            "SELECT count(*), sum(length(line)) FROM lines"
        ).fetchone()
        (back,) = db.execute(
            "SELECT id FROM lines ORDER BY id DESC LIMIT 1 OFFSET 1000"
        ).fetchone()
        (middle,) = db.execute(
            "SELECT id FROM lines ORDER BY id LIMIT 1 OFFSET ?", (lines // 2,)
        ).fetchone()
        began = time.perf_counter()
        db.execute("PRAGMA quick_check(1)").fetchone()
        check = time.perf_counter() - began
        db.close()
        print(
            f"file: {size / 2**20:.1f} MiB for {lines} lines "
            f"({size / 2**20 * 1e6 / lines:.1f} MiB per million; "
            f"the lines' text {text / 2**20:.1f} MiB)"
        )
        print(f"PRAGMA quick_check: {check * 1000:.0f} ms")

        def run(reactor: Any) -> Any:
            began = time.perf_counter()
            store = Store.open(path, reactor, reactor, days=31)
            print(f"Store.open: {(time.perf_counter() - began) * 1000:.0f} ms")
            store.start()
            print(f"numbered {'with gaps' if args.cluster else 'without gaps'}")
            return measure(reactor, store, args.rounds, back, middle)

        task.react(lambda reactor: run(reactor))
    finally:
        if folder is not None and args.keep:
            print(f"kept {path}")
        elif folder is not None:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
