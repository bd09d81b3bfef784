"""Protected nicknames over real loopback sockets, with the server's real
scrypt checks and hashes in the reactor's thread pool (as under twistd)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory

from chatproto import wire
from chatproto.config import ServerConfig
from chatproto.operators import check_in_threads, hash_in_threads
from chatproto.server import ChatFactory
from tests.peer import Peer

r: Any = reactor


@pytest.fixture
def server() -> Any:
    factory = ChatFactory(
        ServerConfig(flood_rate=0, ping_interval=0),
        clock=r,
        checker=check_in_threads(r),
        hasher=hash_in_threads(r),
    )
    port = pytest_twisted.blockon(
        TCP4ServerEndpoint(r, 0, interface="127.0.0.1").listen(factory)
    )
    yield factory, port.getHost().port
    for session in tuple(factory.admission.connections):
        session.connection.abort()
    pytest_twisted.blockon(port.stopListening())


async def connect(port: int) -> Peer:
    peer = await TCP4ClientEndpoint(r, "127.0.0.1", port).connect(
        Factory.forProtocol(Peer)
    )
    assert isinstance(peer, Peer)
    await peer.until(wire.WELCOME)
    peer.take()
    return peer


@pytest_twisted.ensureDeferred
async def test_a_nickname_protected_over_tcp_takes_its_password(server: Any) -> None:
    """/register with the real scrypt (84 ms, in a thread), then a new
    connection: the prompt, a wrong password, the right one."""
    factory, port = server
    prof = await connect(port)
    prof.send(b"/pseudo prof\n/register mot de passe\n")
    done = wire.notice(wire.REGISTER_DONE.format("prof"))
    await prof.until(done)
    prof.send(b"/quit\n")
    await prof.closed
    again = await connect(port)
    again.send(b"/pseudo prof\r\n")
    prompt = wire.notice(wire.PASSWORD_PROMPT)
    assert await again.until(prompt) == prompt
    again.take()
    again.send(b"pas le bon\r\n")
    assert await again.until(wire.TAKEN) == wire.TAKEN
    again.take()
    bob = await connect(port)
    started = time.monotonic()
    again.send(b"/pseudo prof mot de passe\r\n")
    bob.send(b"/pseudo bob\n")
    await bob.until(b"=>bob\n")
    got = await again.until(b"=>prof\n")
    assert got.startswith(b"Bienvenue prof\n")
    assert time.monotonic() - started < 5
    assert sorted(factory.sessions) == ["bob", "prof"]
