"""What an idle user costs the server in memory, and what it keeps out.

bench/memory.py measures the bytes of one idle user by source file, and
`make bench` the resident memory of 10,000 of them (docs/architecture.md,
"Memory"); these tests keep the cuts made there from coming back unnoticed.
"""

from __future__ import annotations

from chatproto.registry import nick_key
from chatproto.testing import Chat


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
