"""Drive the real server factory over in-memory transports and a fake clock
(the doubles are chatproto.testing's, public)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatproto.testing import Chat


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
