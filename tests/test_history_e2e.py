"""The cluster's history end to end: real `twistd chat --redis` processes on a
real redis-server, clients on plain sockets. A node started later reads the
history; a node killed with SIGKILL and started again loses nothing of it,
and /search finds in it what was said on another node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.redis_fixture import RedisServer
from tests.test_cluster_e2e import Line, Node

pytestmark = [pytest.mark.redis, pytest.mark.slow]

END = b"--- fin de l'historique ---\n"
STAMP = re.compile(rb"\[\d{1,2}\.\d{1,2}\.\d{1,2}\]-")


def history(user: Line) -> list[bytes]:
    """The lines of the answer to /history, their stamps cut off."""
    user.send(b"/history\n")
    user.until(b"--- historique (")
    lines = user.until(END).splitlines(keepends=True)[1:-1]
    assert all(STAMP.match(line) for line in lines), lines
    return [STAMP.sub(b"", line, count=1) for line in lines]


def test_a_node_started_later_and_a_node_restarted_read_the_whole_history(
    tmp_path: Path, redis: RedisServer
) -> None:
    first = Node(tmp_path / "first", redis, "first")
    later: Node | None = None
    again: Node | None = None
    try:
        first.wait_listening()
        alice = first.register("alice")
        alice.send("bonjour l'Éléphant\n".encode())
        alice.send(b"/history\n")  # answered once the line is in Redis
        alice.until(END)

        later = Node(tmp_path / "later", redis, "later")
        later.wait_listening()
        bob = later.register("bob")
        assert history(bob) == [
            b"Connexion de alice\n",
            "alice: bonjour l'Éléphant\n".encode(),
            b"Connexion de bob\n",
        ]

        first.stop()  # kill -9: bob's node reaps alice, and keeps her departure
        bob.until("-Déconnection de alice\n".encode())
        again = Node(tmp_path / "again", redis, "again")
        again.wait_listening()
        carol = again.register("carol")
        assert history(carol) == [
            b"Connexion de alice\n",
            "alice: bonjour l'Éléphant\n".encode(),
            b"Connexion de bob\n",
            "Déconnection de alice\n".encode(),
            b"Connexion de carol\n",
        ]
        carol.send(b"/search ELEPHANT  Bonjour\n")  # any case, no accent
        carol.until("--- recherche « ELEPHANT  Bonjour » (1 ligne) ---\n".encode())
        found = carol.until(b"--- fin de la recherche ---\n")
        assert STAMP.sub(b"", found, count=1) == (
            "alice: bonjour l'Éléphant\n--- fin de la recherche ---\n".encode()
        )
    finally:
        for node in (first, later, again):
            if node is not None:
                node.stop()
