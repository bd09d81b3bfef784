"""The terminal client and /unread (docs/client.md, "History and search"):
its answer shown as plain lines, and --help naming it."""

from __future__ import annotations

from chatproto import wire
from chatproto.client.events import Disconnected, Notice, Public
from chatproto.client.options import build_parser
from tests.test_client_protocol import Chat

UNREAD_BLOCK = (
    "--- 2 messages depuis votre dernière visite (n° 41 à 42) ---\n"
    "--- lundi 7 décembre 2026 ---\n"
    "[23.59.0]-alice: bonne nuit\n"
    "[0.1.0]-bob: bonjour\n"
    "--- fin des messages depuis votre dernière visite ---\n"
    "Aucun message depuis votre dernière visite\n"
).encode()


def test_unread_s_answer_is_plain_lines_none_lost() -> None:
    chat = Chat()
    chat.register_ruby()
    chat.proto.send("/unread")
    assert chat.sent() == b"/unread\n"
    chat.feed(UNREAD_BLOCK)
    events = chat.take()
    assert [line for event in events for line in event.lines] == (
        UNREAD_BLOCK.decode().splitlines()
    )
    kinds = [type(event) for event in events]
    assert kinds == [Notice, Notice, Public, Public, Notice, Notice]
    assert chat.proto.reader.undelivered == 0
    assert wire.notice(wire.UNREAD_END) in UNREAD_BLOCK


def test_a_first_visit_s_unread_loses_no_line() -> None:
    """/unread from a nickname the server knows no visit of is answered
    with an Erreur line, but nothing the user said was refused: the
    session still ends with status 0 (it ended "but 1 line was not
    delivered")."""
    chat = Chat()
    chat.register_ruby()
    chat.proto.send("/unread")
    chat.feed(wire.UNREAD_UNKNOWN.encode() + b"\n")
    assert chat.shown() == [wire.UNREAD_UNKNOWN]
    chat.proto.send("msg nobody hi")
    chat.feed(wire.NO_SUCH_USER.format("nobody").encode() + b"\n")
    chat.proto.quit()
    chat.feed(b"Deconnexion\n")
    assert chat.ending() == Disconnected(
        ok=False,
        reason="Left the chat, but 1 line was not delivered (the server refused it).",
    )


def test_help_names_unread() -> None:
    assert "/unread" in (build_parser().epilog or "")
