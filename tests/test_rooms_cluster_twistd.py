"""A room across two real `twistd chat --redis` processes on one real
redis-server, clients on plain sockets: the room's lines cross to the other
node only while it has members there (the channel's subscribers, PUBSUB
NUMSUB), and the lobby's users see nothing of it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from chatproto import wire
from tests.redis_fixture import RedisServer
from tests.test_cluster_e2e import RULE, Line, Node, departure, settle

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def subscribers(redis: RedisServer, room: str) -> int:
    """How many nodes hear the room's channel."""
    channel = f"chatproto:e2e:0:room:{room}"
    return int(redis.cli("pubsub", "numsub", channel).split()[-1])


def rooms(user: Line) -> bytes:
    user.send(b"/rooms\n")
    user.until(b"--- salons")
    return b"--- salons" + user.until((wire.ROOMS_END + "\n").encode())


def test_a_room_spans_two_processes_and_costs_nothing_where_it_has_no_member(
    tmp_path: Path, redis: RedisServer
) -> None:
    a = Node(tmp_path / "a", redis, "a")
    b = Node(tmp_path / "b", redis, "b")
    try:
        a.wait_listening()
        b.wait_listening()
        alice, ann = a.register("alice"), a.register("ann")  # ann: the lobby
        bob, bea = b.register("bob"), b.register("bea")  # bea: the lobby
        settle(bea, alice, ann, bob)
        assert subscribers(redis, "salle") == 0

        alice.send(b"/join #salle\n")
        alice.until(b"Salon courant : #salle\n")
        alice.until(RULE)
        assert alice.until(RULE).endswith(b"=>alice\n" + RULE)
        assert subscribers(redis, "salle") == 1  # node a only
        bob.send(b"/join #Salle\n")
        bob.until(b"Salon courant : #salle\n")
        bob.until(RULE)
        assert bob.until(RULE).endswith(b"=>alice\n=>bob\n" + RULE)
        assert subscribers(redis, "salle") == 2
        alice.until(b"-#salle Connexion de bob\n")

        # A line of the room reaches the other node's member, not the lobby.
        alice.send(b"dans la salle\n")
        assert bob.until(b"dans la salle\n").endswith(b"-#salle alice: dans la salle\n")
        bob.send(b"reponse\n")
        alice.until(b"-#salle bob: reponse\n")
        block = (
            b"--- salons (2) ---\n#accueil 4 membres\n#salle 2 membres\n"
            + (wire.ROOMS_END + "\n").encode()
        )
        assert rooms(ann) == block
        assert rooms(bea) == block

        # The last member of node b leaves: node b hears the room no more.
        bob.send(b"/part\n")
        bob.until(b"Salon courant : #accueil\n")
        alice.until("-#salle Départ de bob\n".encode())
        assert subscribers(redis, "salle") == 1
        alice.send(b"seule maintenant\n")
        settle(ann, alice, bob, bea)  # what node a sent before has arrived
        for lobby in (ann, bob, bea):
            assert b"seule maintenant" not in lobby.received
        for lobby in (ann, bea):  # no line of the room ever ("[H.M.S]-#salle ")
            assert b"-#salle " not in lobby.received
        assert rooms(bea) == (
            b"--- salons (2) ---\n#accueil 4 membres\n#salle 1 membre\n"
            + (wire.ROOMS_END + "\n").encode()
        )
        for node in (a, b):
            assert "Traceback" not in node.output()
    finally:
        a.stop()
        b.stop()


def test_a_killed_nodes_members_leave_their_rooms(
    tmp_path: Path, redis: RedisServer
) -> None:
    """kill -9 of a node: once the others reap it, its members are out of
    their rooms (the list, the counts; a room only it had is gone), and
    nothing of the rooms stays in Redis for it."""
    a = Node(tmp_path / "a", redis, "a")
    b = Node(tmp_path / "b", redis, "b")
    try:
        a.wait_listening()
        b.wait_listening()
        alice = a.register("alice")
        bob, bea = b.register("bob"), b.register("bea")
        for user, room in ((alice, b"both"), (bob, b"both"), (bea, b"theirs")):
            user.send(b"/join #" + room + b"\n")
            user.until(b"Salon courant : #" + room + b"\n")
            user.until(RULE)
            user.until(RULE)
        assert subscribers(redis, "both") == 2
        b.proc.send_signal(signal.SIGKILL)
        alice.until_all(departure("bob"), departure("bea"))
        alice.send(b"/list\n")
        alice.until(RULE)
        assert alice.until(RULE) == b"Utilisateurs en ligne:\n=>alice\n" + RULE
        assert rooms(alice) == (
            b"--- salons (2) ---\n#accueil 1 membre\n#both 1 membre\n"
            + (wire.ROOMS_END + "\n").encode()
        )
        assert subscribers(redis, "both") == 1
        assert "chatproto:e2e:room:theirs" not in redis.key_names()
        node_rooms = redis.key_names("chatproto:e2e:node:*:rooms")
        assert len(node_rooms) == 1  # node a's alone
        assert "Traceback" not in a.output()
    finally:
        a.stop()
        b.stop()
