"""Cluster mode end to end: three `twistd chat --redis` processes on one real
redis-server, clients on plain sockets. One node is killed with SIGKILL, Redis
is killed and started again under the running nodes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.redis_fixture import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
WELCOME = b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
UNAVAILABLE = (
    b"Erreur : inscription impossible pour le moment, r\xc3\xa9essayez plus tard\n"
)
RULE = b"----------------------\n"
NODE_TIMEOUT = 2.0
DEADLINE = 15.0  # seconds any one expected line may take


class Line:
    """A client on a blocking socket; it keeps everything it received.
    C{source}: the loopback address it comes from (127.0.0.1 otherwise)."""

    def __init__(self, port: int, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port),
            timeout=DEADLINE,
            source_address=None if source is None else (source, 0),
        )
        self.received = b""
        self._seen = 0  # until() looks from here on

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, needle: bytes, timeout: float = DEADLINE) -> bytes:
        """Wait for C{needle} after what was already waited for; return what
        came up to it."""
        deadline = time.monotonic() + timeout
        while (at := self.received.find(needle, self._seen)) < 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r}; received {self.received!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"closed; received {self.received!r}")
            self.received += chunk
        start, self._seen = self._seen, at + len(needle)
        return self.received[start : self._seen]

    def until_all(self, *needles: bytes) -> None:
        """Wait for all these, in any order."""
        start = self._seen
        ends = []
        for needle in needles:
            self._seen = start
            self.until(needle)
            ends.append(self._seen)
        self._seen = max(ends)

    def count(self, needle: bytes) -> int:
        return self.received.count(needle)

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        self.sock.settimeout(DEADLINE)
        while chunk := self.sock.recv(65536):
            self.received += chunk
        return self.received[self._seen :]

    def close(self) -> None:
        self.sock.close()


class Node:
    """One `twistd -n chat --redis` process, its log in a file."""

    def __init__(
        self,
        directory: Path,
        redis: RedisServer,
        name: str,
        node_timeout: float = NODE_TIMEOUT,
        redis_timeout: float = 0.5,
        extra: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.port = free_port()
        directory.mkdir(exist_ok=True)  # a node started again: its store there
        self.log = directory / "twistd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "twistd"),
                    "-n",
                    "--pidfile=",
                    "chat",
                    "--port",
                    f"tcp:{self.port}:interface=127.0.0.1",
                    "--redis",
                    redis.url,
                    "--cluster",
                    "e2e",
                    "--node-timeout",
                    str(node_timeout),
                    "--redis-timeout",
                    str(redis_timeout),
                    "--ping-interval",
                    "0",
                    "--flood-rate",
                    "0",
                    *extra,
                ],
                cwd=directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"node {self.name} did not start: {self.output()}"
                    ) from None
                time.sleep(0.05)  # a real process: wait for it to listen

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def register(self, nick: str) -> Line:
        """A client registered here, waiting while the node says it cannot
        register anyone yet; the registration block is consumed."""
        user = Line(self.port)
        user.until(WELCOME)
        user.send(b"/pseudo\n")
        user.until(b"Entrez votre pseudo: \n")
        deadline = time.monotonic() + DEADLINE
        while True:
            user.send(nick.encode() + b"\n")
            answer = user.until(b"\n")
            if answer == f"Bienvenue {nick}\n".encode():
                break
            assert answer == UNAVAILABLE, answer
            assert time.monotonic() < deadline, f"{nick} never registered"
            time.sleep(0.1)
        user.until(RULE)
        user.until(RULE)
        return user

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


def departure(nick: str) -> bytes:
    return f"-Déconnection de {nick}\n".encode()


def names(block: bytes) -> list[bytes]:
    return [line[2:] for line in block.split(b"\n") if line.startswith(b"=>")]


def listed(user: Line) -> list[bytes]:
    user.send(b"/list\n")
    user.until(RULE + b"Utilisateurs en ligne:\n")
    return names(user.until(RULE))


def settle(via: Line, *users: Line) -> None:
    """A public line from C{via} reached these users: whatever was on its way
    to them from any node before it has arrived too (Redis keeps the order)."""
    marker = f"marker{time.monotonic_ns()}".encode()
    via.send(marker + b"\n")
    for user in users:
        user.until(marker)


def test_three_nodes_serve_one_chat_through_failures(
    tmp_path: Path, redis: RedisServer
) -> None:
    """Register, list, talk publicly and privately, quit and come back on
    another node, lose a node to SIGKILL, lose Redis and get it back, stop:
    every line arrives once, and no key is left for anyone who left."""
    nodes = [Node(tmp_path / name, redis, name) for name in "abc"]
    a, b, c = nodes
    try:
        for node in nodes:
            node.wait_listening()

        # Registration and the list, across nodes
        alice, ann = a.register("alice"), a.register("ann")
        bob = b.register("bob")
        carol, cyril = c.register("carol"), c.register("cyril")
        assert listed(alice) == [b"alice", b"ann", b"bob", b"carol", b"cyril"]
        refused = Line(b.port)
        refused.until(WELCOME)
        refused.send(b"/pseudo CAROL\n")
        assert refused.until(b"\n") == b"Attention ce pseudo existe deja\n"
        refused.close()

        # A public line: once to everyone else, never back to its sender
        alice.send(b"bonjour de A\n")
        for user in (ann, bob, carol, cyril):
            assert user.until(b"bonjour de A\n").endswith(b"-alice: bonjour de A\n")
        settle(bob, alice, ann, carol, cyril)
        for user, count in ((alice, 0), (ann, 1), (bob, 1), (carol, 1), (cyril, 1)):
            assert user.count(b"bonjour de A") == count

        # A private line, to a node the sender is not on
        bob.send(b"msg CAROL un secret\n")
        assert carol.until(b"un secret\n").endswith(
            "-message privé de bob: un secret\n".encode()
        )
        settle(bob, alice, ann, carol, cyril)
        assert [u.count(b"un secret") for u in (alice, ann, bob, carol, cyril)] == [
            0,
            0,
            0,
            1,
            0,
        ]

        # Quit on one node, come back on another
        alice.send(b"/quit\n")
        assert alice.rest().endswith(b"Deconnexion\n")
        for user in (ann, bob, carol):
            user.until(departure("alice"))
        alice = b.register("alice")
        assert listed(bob) == [b"ann", b"bob", b"carol", b"cyril", b"alice"]

        # Node C dies: A and B announce its users gone, once, and free them
        c.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        for user in (ann, bob, alice):
            user.until_all(departure("cyril"), departure("carol"))
        assert time.monotonic() - killed < NODE_TIMEOUT + 3
        time.sleep(NODE_TIMEOUT / 2)  # more reaping rounds: none may repeat it
        settle(ann, bob, alice)
        for user in (ann, bob, alice):
            assert user.count(departure("carol")) == 1
            assert user.count(departure("cyril")) == 1
        carol = a.register("carol")
        assert listed(bob) == [b"ann", b"bob", b"alice", b"carol"]

        # Redis dies: registrations are refused in French, A chats locally
        redis.stop()
        newcomer = Line(a.port)
        newcomer.until(WELCOME)
        newcomer.send(b"/pseudo\n")
        newcomer.until(b"Entrez votre pseudo: \n")
        deadline = time.monotonic() + DEADLINE
        while True:
            newcomer.send(b"dave\n")
            if newcomer.until(b"\n") == UNAVAILABLE:
                break
            pytest.fail("registered with Redis down")  # pragma: no cover
        assert time.monotonic() < deadline
        ann.send(b"entre nous\n")
        assert carol.until(b"entre nous\n").endswith(b"-ann: entre nous\n")
        carol.send(b"/quit\n")
        assert carol.rest().endswith(b"Deconnexion\n")
        ann.until(departure("carol"))

        # Redis returns, empty: the nodes register their users again
        redis.start()
        dave = b.register("dave")
        deadline = time.monotonic() + DEADLINE
        while True:
            newcomer.send(b"erin\n")
            answer = newcomer.until(b"\n")
            if answer == b"Bienvenue erin\n":
                break
            assert answer == UNAVAILABLE and time.monotonic() < deadline
            time.sleep(0.1)
        erin = newcomer
        bob.until(departure("carol"))  # left during the outage: told now
        assert sorted(listed(dave)) == [b"alice", b"ann", b"bob", b"dave", b"erin"]
        ann.send(b"de retour\n")
        for user in (bob, alice, dave, erin):
            user.until(b"-ann: de retour\n")
        settle(dave, ann, bob, alice, erin)
        for user in (ann, bob, alice):  # the carol of C, then the carol of A
            assert user.count(departure("carol")) == 2

        # A stops cleanly: B tells its users who went with it
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(10) in (0, -signal.SIGTERM)
        for user in (bob, alice, dave):
            user.until_all(departure("ann"), departure("erin"))
        for user in (bob, alice, dave):
            user.send(b"/quit\n")
            user.rest()
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(10) in (0, -signal.SIGTERM)
        # The cluster's epoch, and the departures announced late (carol's)
        # for a minute, for nodes slower to come back, and the history (for
        # --history-age): nothing per user.
        assert redis.key_names() == [
            "chatproto:e2e:epoch",
            "chatproto:e2e:history",
            "chatproto:e2e:history:bytes",
            "chatproto:e2e:left",
        ]
        assert 0 < int(redis.cli("TTL", "chatproto:e2e:left")) <= 60

        for node in (a, b):
            log = node.output()
            assert "Redis unreachable" in log
            assert "Traceback" not in log, log
    finally:
        for node in nodes:
            node.stop()


CLUSTER_LOST = (
    "Le serveur a perdu le contact avec le reste du chat, qui vous a vu partir : "
    "vous êtes déconnecté, reconnectez-vous\n"
).encode()


def test_a_node_stalled_past_its_timeout_drops_its_users_consistently(
    tmp_path: Path, redis: RedisServer
) -> None:
    """Node A is frozen (SIGSTOP) past --node-timeout while alice types: B
    announces A's users gone, once. When A wakes, its users are told the
    server lost the chat and get Deconnexion; nobody tells them they left,
    nothing alice typed reaches B, nobody is announced twice; A serves new
    users again."""
    a, b = Node(tmp_path / "a", redis, "a"), Node(tmp_path / "b", redis, "b")
    try:
        a.wait_listening()
        b.wait_listening()
        alice, ann = a.register("alice"), a.register("ann")
        bob, bea = b.register("bob"), b.register("bea")
        settle(alice, ann, bob, bea)

        a.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        for n in range(3):
            alice.send(f"pendant la pause {n}\n".encode())
        for user in (bob, bea):
            user.until_all(departure("alice"), departure("ann"))
        assert time.monotonic() - stopped < NODE_TIMEOUT + 3
        time.sleep(NODE_TIMEOUT / 2)  # more reaping rounds: none may repeat it
        a.proc.send_signal(signal.SIGCONT)

        for user in (alice, ann):
            assert user.rest().endswith(CLUSTER_LOST + b"Deconnexion\n")
            assert user.count(CLUSTER_LOST) == 1
            assert departure("alice") not in user.received
            assert departure("ann") not in user.received
        carl = a.register("carl")  # A joined again, with no users
        settle(carl, bob, bea)  # what A published before has arrived
        for user in (bob, bea):
            assert user.count(departure("alice")) == 1
            assert user.count(departure("ann")) == 1
            assert b"pendant la pause" not in user.received
        assert listed(bob) == [b"bob", b"bea", b"carl"]
        alice = b.register("alice")
        settle(alice, bob, carl)
        assert carl.count(b"Connexion de alice\n") == 1
        assert "Traceback" not in a.output() + b.output()
    finally:
        a.stop()
        b.stop()


def test_a_node_stalled_shorter_than_its_timeout_is_not_noticed(
    tmp_path: Path, redis: RedisServer
) -> None:
    """A stall shorter than the lease: nobody is told anything, and the lines
    typed during it arrive once, everywhere."""
    a, b = Node(tmp_path / "a", redis, "a"), Node(tmp_path / "b", redis, "b")
    try:
        a.wait_listening()
        b.wait_listening()
        alice, ann = a.register("alice"), a.register("ann")
        bob = b.register("bob")
        settle(alice, ann, bob)

        a.proc.send_signal(signal.SIGSTOP)
        alice.send(b"pendant une courte pause\n")
        time.sleep(NODE_TIMEOUT / 4)
        a.proc.send_signal(signal.SIGCONT)

        for user in (ann, bob):
            user.until(b"-alice: pendant une courte pause\n")
        settle(bob, alice, ann)
        settle(ann, alice, bob)
        for user in (alice, ann, bob):
            assert b"connection de" not in user.received
            assert CLUSTER_LOST not in user.received
        assert ann.count(b"pendant une courte pause") == 1
        assert bob.count(b"pendant une courte pause") == 1
        assert listed(bob) == [b"alice", b"ann", b"bob"]
    finally:
        a.stop()
        b.stop()


def test_a_registration_while_a_node_joins_waits_for_the_join(
    tmp_path: Path, redis: RedisServer
) -> None:
    """A node listens before it has joined its cluster: a user who registers
    at once is welcomed, even while Redis is slow to answer (frozen here for
    a while), rather than told to try later."""
    first = Node(tmp_path / "first", redis, "first", 4.0, 2.0)
    try:
        first.wait_listening()
        user = Line(first.port)
        user.until(WELCOME)
        user.send(b"/pseudo alice\n")
        assert user.until(b"\n") == b"Bienvenue alice\n"
    finally:
        first.stop()
    redis.pause()
    try:
        slow = Node(tmp_path / "slow", redis, "slow", 4.0, 2.0)
        slow.wait_listening()
        user = Line(slow.port)
        user.until(WELCOME)
        user.send(b"/pseudo bob\n")
        time.sleep(0.3)  # Redis is frozen: the node cannot join yet
    finally:
        redis.resume()
    try:
        assert user.until(b"\n") == b"Bienvenue bob\n"
        assert "Traceback" not in slow.output()
    finally:
        slow.stop()
