"""docs/protocol.md, the protocol as the server speaks it, against wire.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatproto import wire

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def sent_lines() -> list[tuple[str, str]]:
    """Every fixed line and template of wire.py, by name."""
    lines = []
    for name, value in vars(wire).items():
        if name.startswith("_") or not name.isupper():
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            lines += [(name, line) for line in value.splitlines()]
    return lines


@pytest.mark.parametrize(("name", "line"), sent_lines())
def test_every_line_the_server_sends_is_in_the_protocol_document(
    name: str, line: str
) -> None:
    """Templates count by their fixed parts: `Erreur : {} n'est pas connecté`
    is documented as `Erreur : <NICK> n'est pas connecté`."""
    pattern = r"[^`]*".join(re.escape(part) for part in line.split("{}"))
    assert re.search(pattern, PROTOCOL), f"wire.{name}: {line!r}"


def test_the_lines_made_in_code_are_in_the_protocol_document() -> None:
    for line in (
        "Bienvenue <NICK>",
        "[H.M.S]-Connexion de <NICK>",
        "[H.M.S]-Déconnection de <NICK>",
        "[H.M.S]-<YOUR NICK>: <TEXT>",
        "[H.M.S]-message privé de <YOUR NICK>: <TEXT>",
        "... et <N> autres (tapez /list pour tous les voir)",
        # rooms (chatproto/rooms.py, wire.py's room_* and rooms_block)
        "`[H.M.S]-#<NAME> <YOU>: <TEXT>⏎`",
        "`[H.M.S]-#<NAME> Connexion de <YOU>⏎`",
        "`[H.M.S]-#<NAME> Départ de <YOU>⏎`",
        "`[H.M.S]-#<NAME> Sujet : <TEXT> (par <YOU>)⏎`",
        "--- salons (<COUNT>) ---⏎",
        "#<NAME> <N> membres⏎",
    ):
        assert line in PROTOCOL


def test_the_readme_points_to_the_document_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/protocol.md" in readme
    assert "../shared" not in readme
