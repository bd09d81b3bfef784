"""What an idle user costs the server in memory, and what it keeps out.

bench/memory.py measures the bytes of one idle user by source file, and
`make bench` the resident memory of 10,000 of them (docs/architecture.md,
"Memory"); these tests keep the cuts made there from coming back unnoticed.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

import chatproto
from chatproto.config import ServerConfig
from chatproto.registry import nick_key
from chatproto.server import ChatFactory
from chatproto.testing import Chat
from tests.peer import Peer


def test_a_lowercase_nickname_is_its_own_key() -> None:
    """A nickname in lower case is its own key: the very string, no copy."""
    nick = "".join(["ali", "ce"])  # made at run time: not interned
    assert nick_key(nick) is nick


def test_a_mixed_case_nickname_has_one_key_for_all() -> None:
    """Every key of a nickname not in lower case is one (interned) string."""
    assert nick_key("".join(["Ali", "ce"])) == "alice"
    assert nick_key("".join(["Ali", "ce"])) is nick_key("".join(["ALI", "CE"]))


def test_the_registry_and_the_room_keep_the_session_s_nickname() -> None:
    """Registered, a user's nickname is one string: the session's, which
    is also its key in the registry's names and in the room."""
    chat = Chat()
    session = chat.user("bob").session
    (key,) = chat.factory.sessions
    assert key is session.nick
    answers: list[tuple[list[str], int]] = []
    chat.factory.registry.names().addCallback(answers.append)
    assert answers[0][0][0] is session.nick


@pytest_twisted.ensureDeferred
async def test_a_tcp_connection_shares_its_labels() -> None:
    """The chat's TCP connections share one log prefix and one repr, rather
    than Twisted's two strings a connection (chatproto._twisted.share_labels)."""
    r: Any = reactor
    factory = ChatFactory(ServerConfig(ping_interval=0), clock=r)
    listening = r.listenTCP(0, factory, interface="127.0.0.1")
    try:
        client = TCP4ClientEndpoint(r, "127.0.0.1", listening.getHost().port)
        peers: list[Any] = [
            await client.connect(Factory.forProtocol(Peer)) for _ in range(2)
        ]
        for peer in peers:
            await peer.until(b"/pseudo\n")
        sessions: list[Any] = list(factory.admission.connections)
        first, second = (s.connection.transport for s in sessions)
        assert first.logPrefix() == "ChatServerProtocol"
        assert first.logPrefix() is second.logPrefix()
        assert repr(first) is repr(second)
        for peer in peers:
            peer.transport.loseConnection()
            await peer.closed
    finally:
        await listening.stopListening()


# chatproto's own objects for one registered idle user, measured by
# tracemalloc below with Python 3.11: 543 bytes at 1,000 users (its
# Session, Output and Inbox, its nickname, and its entries in the room,
# the registry, the positions and the admission's books). The bound leaves
# room for the lumps of dictionaries growing, not for one more object a user.
OWN_BYTES_PER_USER = 650


def test_an_idle_user_costs_at_most_a_bound_of_chatproto_s_objects() -> None:
    """Registering 1,000 more users allocates at most OWN_BYTES_PER_USER
    each in chatproto's modules, once their output is taken (the test's
    transports keep it): Twisted's transport and the socket are the rest,
    which bench/memory.py measures on real connections."""
    package = str(Path(chatproto.__file__).parent)
    chat = Chat(ping_interval=0, max_per_ip=0, max_per_network=0)
    users = [chat.user(f"w{i}", f"10.0.0.{i + 1}") for i in range(20)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        n = 1000
        users += [
            chat.user(f"u{i}", f"10.1.{i // 200}.{i % 200 + 1}") for i in range(n)
        ]
        for user in users:
            user.take()
            user.transport.writes.clear()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    own = [
        tracemalloc.Filter(True, f"{package}/*"),
        tracemalloc.Filter(False, f"{package}/testing.py"),
    ]
    stats = after.filter_traces(own).compare_to(before.filter_traces(own), "lineno")
    per_user = sum(s.size_diff for s in stats) / n
    where = [f"{s.traceback[0]}: {s.size_diff / n:.0f}" for s in stats[:8]]
    assert 300 < per_user <= OWN_BYTES_PER_USER, where
