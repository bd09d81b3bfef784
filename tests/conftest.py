"""Drive the real server factory over in-memory transports and a fake clock
(the doubles are chatproto.testing's, public)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from chatproto._redis import Commands
from chatproto.config import RedisAddress
from chatproto.testing import Chat
from tests.redis_fixture import RedisServer, running_redis


@pytest.fixture(autouse=True)
def no_default_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server built in a test's process keeps its history in memory
    unless the test gives --store: the default store would be a
    chat.sqlite3 in the checkout, its threads answering a fake reactor.
    (Servers run as processes get theirs in the test's directory.)"""
    monkeypatch.setattr("chatproto.tap.STORE", None)


@pytest.fixture
def chat() -> Iterator[Chat]:
    yield Chat()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a loopback port (the tests
    that use it are marked redis: skipped without redis-server)."""
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def commands(redis: RedisServer) -> Iterator[Commands]:
    """A connection to that redis-server, as a node makes one."""
    connection = Commands(RedisAddress.parse(redis.url), reactor, 2.0)
    connection.start()
    pytest_twisted.blockon(connection.first_connected)
    yield connection
    pytest_twisted.blockon(connection.close())


# Debian's chromium, which .ci/run installs with apt-get: never
# `playwright install` (it downloads a browser).
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright, for the tests of the page in
    a real browser (tests/test_web_*browser*.py, which skip without it)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield chromium
        chromium.close()
