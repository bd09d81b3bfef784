"""The single server's nickname registry (chatproto/registry.py): its
Deferred interface, shared with the cluster's, and the answers at once
that a single server's sessions and room use."""

from __future__ import annotations

from typing import Any

import pytest

from chatproto import wire
from chatproto.registry import MemoryRegistry, NicknameTaken
from chatproto.testing import Chat


def result(d: Any) -> Any:
    """What an already fired Deferred holds (a Failure for an error)."""
    found: list[Any] = []
    d.addBoth(found.append)
    (value,) = found
    return value


def test_take_and_claim_agree() -> None:
    registry = MemoryRegistry()
    assert registry.take("Alice") == "Alice"
    with pytest.raises(NicknameTaken):
        registry.take("alice")  # any letter case
    assert result(registry.claim("bob")) == "bob"
    assert result(registry.claim("BOB")).check(NicknameTaken)
    assert registry.listed() == (["Alice", "bob"], 2)
    assert result(registry.names(1)) == registry.listed(1) == (["Alice"], 2)


def test_a_single_server_registers_without_the_deferred_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A newcomer's nickname and list are the registry's answers at once
    (MemoryRegistry.take and listed): no Deferred to chain in a
    registration."""
    chat = Chat(ping_interval=0)
    registry = chat.factory.registry
    assert type(registry) is MemoryRegistry

    def unused(*args: object) -> Any:
        raise AssertionError("the Deferred interface was used")

    monkeypatch.setattr(registry, "claim", unused)
    monkeypatch.setattr(registry, "names", unused)
    alice = chat.connect()
    assert alice.take() == wire.WELCOME
    alice.send(b"/pseudo alice\n")
    assert alice.take() == (
        b"Bienvenue alice\n"
        + wire.RULE
        + b"Utilisateurs en ligne:\n=>alice\n"
        + wire.RULE
    )
    bob = chat.connect()
    bob.send(b"/pseudo ALICE\n")
    assert bob.take().endswith(wire.TAKEN)
