"""chatproto.testing, the public in-memory doubles, does what it says."""

from __future__ import annotations

from chatproto.testing import Chat


def test_the_example_of_its_docstring_holds() -> None:
    """The module's example: two users, a public line, a ping ten seconds
    later, with no socket and no reactor."""
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"bonjour\n")
    assert bob.take() == chat.stamp() + b"-alice: bonjour\n"
    chat.advance(10)
    assert bob.take() == b"ping\n"


def test_one_turn_leaves_what_it_schedules_for_the_next() -> None:
    """turn() runs the calls due now, not those they add: with passes of one
    user, one turn serves one user."""
    chat = Chat(pass_size=1, join_notice_limit=0)
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    for user in (bob, carol):
        user.transport.clear()
    alice.send(b"salut\n")
    chat.turn()  # alice's turn in the pass: nothing for her own line
    chat.turn()  # bob's
    assert bob.transport.value().endswith(b"-alice: salut\n")
    assert carol.transport.value() == b""
    chat.turn()
    assert carol.transport.value().endswith(b"-alice: salut\n")
