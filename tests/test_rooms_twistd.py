"""Rooms as a user runs them: `twistd -n chat`, three raw TCP users, two in
a room, one in the lobby only (it gets nothing of the room)."""

from __future__ import annotations

import re
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.test_store_twistd import running
from tests.test_twistd import register

pytestmark = pytest.mark.slow

STAMP = re.compile(rb"\[\d+\.\d+\.\d+\]")


def bare(data: bytes) -> bytes:
    return STAMP.sub(b"[H.M.S]", data)


def test_two_users_in_a_room_and_one_in_the_lobby(tmp_path: Path) -> None:
    with running(tmp_path, "--flood-burst=50") as (proc, port):
        alice = register(port, "alice")
        bob = register(port, "bob")
        carol = register(port, "carol")  # a Ruby client: never /joins
        alice.until(b"Connexion de carol\n")
        bob.until(b"Connexion de carol\n")
        alice.send(b"/join #Projet\n")
        assert alice.until(b"=>alice\n----------------------\n") == (
            b"Salon courant : #projet\n----------------------\n"
            b"Utilisateurs en ligne:\n=>alice\n----------------------\n"
        )
        bob.send(b"/join projet\n")
        bob.until(b"=>bob\n----------------------\n")
        assert bare(alice.until(b"Connexion de bob\n")) == (
            b"[H.M.S]-#projet Connexion de bob\n"
        )
        alice.send(b"secret du salon\n")
        assert (
            bare(bob.until(b"du salon\n"))
            == b"[H.M.S]-#projet alice: secret du salon\n"
        )
        bob.send(b"/rooms\n")
        assert bob.until(b"--- fin des salons ---\n") == (
            b"--- salons (2) ---\n#accueil 3 membres\n#projet 2 membres\n"
            b"--- fin des salons ---\n"
        )
        bob.send(b"/part\n")
        bob.until(b"Salon courant : #accueil\n")
        alice.until("Départ de bob\n".encode())
        bob.send(b"dans le hall\n")
        alice.send(b"/quit\n")
        alice.until(b"Deconnexion\n")
        # carol: the lobby's lines, exactly as before rooms
        assert bare(carol.until("Déconnection de alice\n".encode())) == (
            "[H.M.S]-bob: dans le hall\n[H.M.S]-Déconnection de alice\n".encode()
        )
        bob.until("Déconnection de alice\n".encode())
        carol.send(b"/history\n")
        got = carol.until(b"--- fin de l'historique ---\n")
        assert b"#projet" not in got and b"secret" not in got
        bob.send(b"/join #projet\n/history\n")
        history = bare(bob.until(b"--- fin de l'historique ---\n"))
        assert history.endswith(
            b"--- historique (5 lignes) ---\n"
            b"[H.M.S]-#projet Connexion de alice\n"
            b"[H.M.S]-#projet Connexion de bob\n"
            b"[H.M.S]-#projet alice: secret du salon\n"
            + "[H.M.S]-#projet Départ de bob\n".encode()
            + b"[H.M.S]-#projet Connexion de bob\n"
            b"--- fin de l'historique ---\n"
        )
        carol.send(b"/quit\n")
        assert carol.rest() == b"Deconnexion\n"
        proc.send_signal(signal.SIGTERM)  # what was said is committed first
        assert proc.wait(10) in (0, -signal.SIGTERM)
    db = sqlite3.connect(tmp_path / "chat.sqlite3")
    try:
        rooms = db.execute("SELECT DISTINCT room FROM lines ORDER BY room").fetchall()
    finally:
        db.close()
    assert rooms == [(None,), ("projet",)]


def test_users_in_two_rooms_and_the_lobby_get_their_lines_in_order(
    tmp_path: Path,
) -> None:
    """bob is in #a, #b and the lobby; alice in #a, dave in #b, carol (as a
    Ruby client) in the lobby only. Lines in the three, interleaved: bob
    gets them all in the order they were said; each other user its rooms'
    and the lobby's; carol nothing of the rooms, as before rooms."""
    with running(tmp_path, "--flood-burst=50") as (proc, port):
        alice, bob, dave, carol = (
            register(port, nick) for nick in ("alice", "bob", "dave", "carol")
        )
        for user in (alice, bob, dave):
            user.until(b"Connexion de carol\n")
        nick_of = {alice: b"alice", bob: b"bob", dave: b"dave"}
        for user, room in ((alice, b"#a"), (dave, b"#b"), (bob, b"#a"), (bob, b"#b")):
            user.send(b"/join " + room + b"\n")
            user.until(b"=>" + nick_of[user] + b"\n----------------------\n")
        alice.until(b"#a Connexion de bob\n")
        dave.until(b"#b Connexion de bob\n")
        bob.send(b"/join #accueil\n")
        bob.until(b"Salon courant : #accueil\n")
        bob.until(b"=>carol\n----------------------\n")
        said = [
            (alice, b"un dans a\n"),
            (carol, b"deux dans le hall\n"),
            (dave, b"trois dans b\n"),
            (carol, b"quatre dans le hall\n"),
            (alice, b"cinq dans a\n"),
        ]
        got = b""
        for user, line in said:
            user.send(line)
            got += bob.until(line)  # heard before the next is said
        assert bare(got) == (
            b"[H.M.S]-#a alice: un dans a\n"
            b"[H.M.S]-carol: deux dans le hall\n"
            b"[H.M.S]-#b dave: trois dans b\n"
            b"[H.M.S]-carol: quatre dans le hall\n"
            b"[H.M.S]-#a alice: cinq dans a\n"
        )
        bob.send(b"/quit\n")
        assert bob.rest().endswith(b"Deconnexion\n")
        left = "[H.M.S]-Déconnection de bob\n".encode()
        hall = b"[H.M.S]-carol: deux dans le hall\n[H.M.S]-carol: quatre dans le hall\n"
        assert bare(alice.until(b"de bob\n")) == hall + left
        assert bare(dave.until(b"de bob\n")) == hall + left
        assert bare(carol.until(b"de bob\n")) == left
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) in (0, -signal.SIGTERM)
