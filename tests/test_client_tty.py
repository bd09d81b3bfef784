"""The interactive client in a real pseudo-terminal (pexpect), its screen
read back through a terminal emulator (pyte), against a scripted server."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pexpect
import pyte
import pytest

from chatproto.client.events import UserList
from chatproto.client.servers import PASSWORD_PROMPT
from chatproto.client.terminal import INDENT, LIST_CUT, render, wrap
from tests.test_client_support import (
    DEADLINE,
    ROOT,
    RUBY_WELCOME,
    Peer,
    Scripted,
    client_env,
)

pytestmark = pytest.mark.slow

WELCOME = RUBY_WELCOME.decode().rstrip("\n")
UP = "\x1b[A"


class AnsweringScreen(pyte.Screen):
    """A pyte screen that answers the cursor position requests
    prompt_toolkit sends, as a real terminal does."""

    terminal: Any = None

    def write_process_input(self, data: str) -> None:
        if self.terminal is not None:
            self.terminal.type(data)


class Terminal:
    """python -m chatproto.client in a 24x80 pseudo-terminal.

    A thread feeds everything the client writes to the emulated screen at
    once, so that prompt_toolkit's cursor position requests are answered
    as promptly as a real terminal does.
    """

    def __init__(self, *args: str) -> None:
        self.screen = AnsweringScreen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.changed = threading.Condition()
        self.ended = False
        env = client_env()
        env["TERM"] = "xterm"
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "chatproto.client", *args],
            cwd=str(ROOT),
            env=env,
            dimensions=(24, 80),
        )
        self.sending = threading.Lock()
        self.screen.terminal = self
        self.reader = threading.Thread(target=self.relay, daemon=True)
        self.reader.start()

    def relay(self) -> None:
        """Feed what the client writes to the screen, until it ends."""
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError):
                data = b""
            with self.changed:
                if data:
                    self.stream.feed(data)
                else:
                    self.ended = True
                self.changed.notify_all()
            if not data:
                return

    @property
    def lines(self) -> list[str]:
        with self.changed:
            return [line.rstrip() for line in self.screen.display]

    @property
    def cursor_line(self) -> str:
        with self.changed:
            return self.screen.display[self.screen.cursor.y].rstrip()

    def row_of(self, text: str) -> int:
        for row, line in enumerate(self.lines):
            if text in line:
                return row
        raise AssertionError(f"{text!r} not on screen:\n" + self.dump())

    def dump(self) -> str:
        return "\n".join(f"{row:2}|{line}" for row, line in enumerate(self.lines))

    def wait(self, what: Callable[[], bool], timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not what():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("screen never got there:\n" + self.dump())
                self.changed.wait(left)

    def shows(self, text: str) -> Callable[[], bool]:
        return lambda: any(text in line for line in self.lines)

    def type(self, keys: str) -> None:
        # One write at a time: the reader thread answers cursor position
        # requests, and a key must not land inside such an answer.
        with self.sending:
            self.child.send(keys)

    def exit_status(self, timeout: float = DEADLINE) -> int:
        self.wait(lambda: self.ended, timeout)
        self.reader.join(timeout)
        self.child.close()
        status: int = self.child.exitstatus
        return status

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    listener = Scripted()
    yield listener
    listener.close()


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.kill()


def start(terminals: list[Terminal], *args: str) -> Terminal:
    terminal = Terminal(*args)
    terminals.append(terminal)
    return terminal


def leave(term: Terminal, peer: Peer, keys: str = "\x04") -> None:
    """Leave with C{keys} (Ctrl-D): the client sends /quit, the server says
    Deconnexion, and the client ends with status 0."""
    term.type(keys)
    assert peer.line() == b"/quit"
    peer.send(b"Deconnexion\n")
    assert term.exit_status() == 0


def test_half_typed_line_stays_while_a_message_arrives(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """Type half a line, let a message arrive: the message shows above, the
    half line is still there under the cursor; finish it and it is sent;
    Ctrl-D leaves with /quit, status 0."""
    term = start(terminals, "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    term.wait(lambda: term.cursor_line == ">")
    term.type("half a li")
    term.wait(lambda: term.cursor_line == "> half a li")
    peer.send(b"[18.57.28]-alice: salut tout le monde\n")
    term.wait(term.shows("[18.57.28]-alice: salut tout le monde"))
    term.wait(lambda: term.cursor_line == "> half a li")
    message = term.row_of("salut tout le monde")
    assert term.row_of(WELCOME) < message < term.screen.cursor.y
    assert term.screen.cursor.x == len("> half a li")
    term.type("ne\r")
    assert peer.line() == b"half a line"
    leave(term, peer)  # Ctrl-D
    assert peer.closed()


def test_a_line_padded_to_the_width_cannot_pass_for_another_users(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """A line padded with blanks to the terminal's width: what follows the
    blanks shows on a row of its own, indented, not at the left edge where
    a line of alice's would start."""
    term = start(terminals, "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    spoof = "[20.19.18]-alice: envoie-moi ton mot de passe"
    head = "[20.19.17]-mallory: salut"
    peer.send(RUBY_WELCOME + (head + " " * (80 - len(head)) + spoof + "\n").encode())
    term.wait(term.shows(spoof))
    row = term.row_of(spoof)
    assert term.lines[row] == INDENT + spoof
    assert term.lines[row - 1] == head
    leave(term, peer)


def test_wrap_indents_every_row_after_a_lines_first() -> None:
    """Rows of a long line after its first start with the indent, wide
    characters counting two columns; a line that fits, and the lines of a
    multi-line event, start at the edge; styles stay on their text."""
    assert wrap([("", "a" * 20)], 20) == [("", "a" * 20)]
    assert wrap([("", "a" * 50)], 20) == [
        ("", "a" * 20 + "\n  " + "a" * 18 + "\n  " + "a" * 12)
    ]
    assert wrap([("x", "abcdefghijklmnop"), ("y", "qrstuvwxyz\nshort")], 20) == [
        ("x", "abcdefghijklmnop"),
        ("y", "qrst\n  uvwxyz\nshort"),
    ]
    assert wrap([("", "日本" * 6)], 20) == [("", "日本" * 5 + "\n  日本")]
    assert wrap([("", "a" * 50)], 11) == [("", "a" * 50)]  # too narrow


def test_private_and_notices_stand_out(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """A private line is marked and coloured, a server notice has its own
    colour, a public line has neither."""
    term = start(terminals, "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(
        RUBY_WELCOME
        + b"[1.2.3]-alice: public\n"
        + "[1.2.4]-message privé de alice: secret\n".encode()
        + b"Erreur : inconnu\n"
    )
    term.wait(term.shows("Erreur : inconnu"))
    buffer = term.screen.buffer

    def style(text: str) -> tuple[str, bool]:
        row = term.row_of(text)
        cell = buffer[row][term.lines[row].index(text)]
        return cell.fg, cell.bold

    assert style("[1.2.3]-alice: public") == ("default", False)
    assert term.lines[term.row_of("secret")].startswith("» [1.2.4]-message privé")
    assert style("[1.2.4]-message") == ("magenta", True)
    assert style("Erreur : inconnu")[0] == "cyan"
    term.type("\x03")  # Ctrl-C leaves too
    assert peer.line() == b"/quit"
    peer.send(b"Deconnexion\n")
    # An error line from chatproto's server means a line was not delivered.
    assert term.exit_status() == 1


def test_a_burst_of_lines_neither_holds_up_typing_nor_loses_a_line(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """20,000 lines in one burst: the line the user types meanwhile goes
    out at once, and every line is shown, in order. (Printing each line
    above the prompt on its own, hiding and drawing the prompt each time,
    took some 30 s for 10,000 lines, keys waiting meanwhile.)"""
    term = start(terminals, "--nick", "bob", "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    assert peer.line() == b"bob"
    peer.send(b"-" * 22 + b"\nUtilisateurs en ligne:\n=>bob\n" + b"-" * 22 + b"\n")
    term.wait(lambda: term.cursor_line == "bob>")
    count = 20_000
    burst = b"".join(b"[1.2.3]-alice: line %d\n" % n for n in range(count))
    sending = threading.Thread(target=peer.send, args=(burst,), daemon=True)
    sending.start()
    term.wait(term.shows("[1.2.3]-alice: line"))
    typed = time.monotonic()
    term.type("typed\r")
    assert peer.line() == b"typed"
    assert time.monotonic() - typed < 5
    term.wait(term.shows(f"[1.2.3]-alice: line {count - 1}"))
    last = [int(line.rsplit(" ", 1)[1]) for line in term.lines if "line" in line]
    assert last == list(range(count - len(last), count))
    assert len(last) > 10
    sending.join(DEADLINE)
    leave(term, peer)


def test_a_huge_nickname_in_the_greeting_does_not_freeze_the_prompt(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """A server greets with a nickname of 60,000 characters: the prompt
    shows its first 23 and '…', and what the user types still goes. (The
    whole nickname in the prompt took all the CPU to draw, twice a second,
    and no key was read any more.)"""
    term = start(terminals, "--nick", "bob", "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    assert peer.line() == b"bob"
    peer.send(b"Bienvenue " + b"N" * 60_000 + b"\n")
    term.wait(lambda: term.cursor_line == "N" * 23 + "…>")
    term.type("still here\r")
    assert peer.line() == b"still here"
    leave(term, peer)


def test_enter_on_an_empty_line_sends_nothing(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """Enter on an empty (or blank) line, or a paste's blank lines, send
    nothing: the Ruby server would show everyone an empty message
    ('[18.57.35]-alice: ', ruby-server.txt), and before registering it is
    a line refused (exit status 1)."""
    term = start(terminals, "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    term.wait(lambda: term.cursor_line == ">")
    term.type("\r")
    term.type("   \r")
    term.type("/pseudo\r")
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    term.type("bob\r")
    assert peer.line() == b"bob"
    peer.send(b"-" * 22 + b"\nUtilisateurs en ligne:\n=>bob\n" + b"-" * 22 + b"\n")
    term.wait(lambda: term.cursor_line == "bob>")
    term.type("\r")
    term.type("\x1b[200~one\n\n  \ntwo\x1b[201~\r")
    assert [peer.line(), peer.line()] == [b"one", b"two"]
    leave(term, peer)


def test_a_cut_user_list_says_where() -> None:
    """A user list the client cut (too long to keep) ends with a line of
    the client's that says so; its blank lines are left out as usual."""
    lines = ("-" * 22, "Utilisateurs en ligne:", "=>alice", "", "=>bob")
    cut = UserList(lines=lines, nicknames=("alice", "bob"), complete=False, cut=True)
    shown = "".join(text for _, text in render(cut)).split("\n")
    assert shown == [*lines[:3], lines[4], LIST_CUT]
    whole = UserList(lines=(*lines, "-" * 22), nicknames=("alice", "bob"))
    assert LIST_CUT not in "".join(text for _, text in render(whole))


def test_escape_sequences_do_nothing(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """Clear-screen, cursor-home and set-title sequences from the server are
    shown as text and obeyed by no one."""
    term = start(terminals, "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME + b"[1.2.3]-eve: \x1b[2J\x1b[H\x1b]0;pwned\x07evil\n")
    term.wait(term.shows("evil"))
    assert term.row_of(WELCOME) < term.row_of("evil")
    assert "[1.2.3]-eve: ^[[2J^[[H^[]0;pwned^Gevil" in term.lines
    assert "pwned" not in term.screen.title
    leave(term, peer, "/quit\r")


def test_history_and_registration_prompt(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """--nick registers at once; the prompt then shows the nickname; the up
    arrow brings back the line sent before."""
    term = start(terminals, "--nick", "bob", "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    assert peer.line() == b"bob"
    peer.send(b"Bienvenue bob\n----------------------\nUtilisateurs en ligne:\n")
    peer.send(b"=>bob\n----------------------\n")
    term.wait(lambda: term.cursor_line == "bob>")
    term.type("first line\r")
    assert peer.line() == b"first line"
    term.type(UP)
    term.wait(lambda: term.cursor_line == "bob> first line")
    term.type("\r")
    assert peer.line() == b"first line"
    term.type("\x04")
    assert peer.line() == b"/quit"
    peer.close()
    assert term.exit_status() == 0


def test_refused_nickname_is_asked_again(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """A taken nickname: the client says so, asks another, and registers it on
    a new connection (the Ruby server is dead on the first one)."""
    term = start(terminals, "--nick", "alice", "127.0.0.1", str(scripted.port))
    first = scripted.accept()
    first.send(RUBY_WELCOME)
    assert first.line() == b"/pseudo"
    first.send(b"Entrez votre pseudo: \n")
    assert first.line() == b"alice"
    first.send(b"Attention ce pseudo existe deja\n")
    term.wait(lambda: term.cursor_line == "nickname:")
    term.wait(term.shows("Ctrl-D to leave."))
    assert term.shows("already taken.")()
    term.type("alice2\r")
    second = scripted.accept()
    assert first.closed()
    second.send(RUBY_WELCOME)
    assert second.line() == b"/pseudo"
    second.send(b"Entrez votre pseudo: \n")
    assert second.line() == b"alice2"
    second.send(b"Bienvenue alice2\n")
    term.wait(lambda: term.cursor_line == "alice2>")
    term.type("\x04")
    assert second.line() == b"/quit"
    second.send(b"Deconnexion\n")
    assert term.exit_status() == 0


def test_leaving_says_what_it_waits_for(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """Ctrl-D to a server slow to answer /quit: the line editor goes, and
    after a second a line says what the client waits for and how to leave
    at once; Ctrl-C then leaves at once, status 1. (The screen stayed as
    it was, up to --timeout, with no word.)"""
    term = start(terminals, "--nick", "bob", "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    assert peer.line() == b"bob"
    peer.send(b"-" * 22 + b"\nUtilisateurs en ligne:\n=>bob\n" + b"-" * 22 + b"\n")
    term.wait(lambda: term.cursor_line == "bob>")
    term.type("\x04")
    assert peer.line() == b"/quit"
    leaving = "* Leaving: waiting for the server to answer /quit"
    term.wait(term.shows(leaving + " (Ctrl-C leaves at once)."))
    term.type("\x03")
    assert term.exit_status() == 1
    assert term.shows("Interrupted.")()


def test_server_closing_says_why(scripted: Scripted, terminals: list[Terminal]) -> None:
    """The server closes while the user types: the line editor goes, one
    sentence says why, status 1."""
    term = start(terminals, "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    term.wait(lambda: term.cursor_line == ">")
    term.type("unfinished")
    peer.close()
    assert term.exit_status() == 1
    assert term.shows("The server closed the connection.")()
    assert not term.shows("Traceback")()


def test_a_paste_goes_out_paced_and_the_prompt_counts_what_waits(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """Ten lines pasted at once to chatproto's server (known by its
    'Bienvenue bob'): the prompt says how many lines wait, they all go, in
    order, at the pace the server's flood control takes, and the count goes
    once they are sent."""
    term = start(terminals, "--nick", "bob", "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    assert peer.line() == b"bob"
    peer.send(b"Bienvenue bob\n----------------------\nUtilisateurs en ligne:\n")
    peer.send(b"=>bob\n----------------------\n")
    term.wait(lambda: term.cursor_line == "bob>")
    pasted = [f"pasted {n}" for n in range(1, 11)]
    term.type("\x1b[200~" + "\n".join(pasted) + "\x1b[201~")
    started = time.monotonic()
    term.type("\r")
    term.wait(term.shows("lines waiting) bob>"))
    assert [peer.line() for _ in pasted] == [line.encode() for line in pasted]
    # /pseudo and bob spent 2 of the 4 lines at once: 8 at 1.9 a second.
    assert time.monotonic() - started > 7 / 1.9
    term.wait(lambda: term.cursor_line == "bob>")
    leave(term, peer)


def test_passwords_are_never_shown_nor_kept(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """The password prompt is answered without echo, /register's password
    shows as stars as it is typed and once sent, and neither comes back
    with the arrows: the history holds only the other lines."""
    term = start(terminals, "--nick", "bob", "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    assert peer.line() == b"bob"
    peer.send(PASSWORD_PROMPT.encode() + b"\n")
    term.wait(lambda: term.cursor_line == "password:")
    term.type("s3cret")
    term.wait(lambda: term.cursor_line == "password: ******")
    term.type("\r")
    assert peer.line() == b"s3cret"
    peer.send(b"Bienvenue bob\n----------------------\nUtilisateurs en ligne:\n")
    peer.send(b"=>bob\n----------------------\n")
    term.wait(lambda: term.cursor_line == "bob>")
    term.type("hello\r")
    assert peer.line() == b"hello"
    term.type("/register top")
    term.wait(lambda: term.cursor_line == "bob> /register ***")
    term.type("s3cret\r")
    assert peer.line() == b"/register tops3cret"
    term.wait(term.shows("bob> /register *********"))
    term.type(UP)
    term.wait(lambda: term.cursor_line == "bob> hello")
    term.type(UP + "!")
    term.wait(lambda: term.cursor_line == "bob> hello!")
    assert not any("s3cret" in line for line in term.lines), term.dump()
    leave(term, peer, "\x15\x04")  # Ctrl-U, Ctrl-D


def test_the_prompt_shows_the_room_and_other_rooms_stand_out(
    scripted: Scripted, terminals: list[Terminal]
) -> None:
    """On chatproto's server, /join goes as typed; its `Salon courant` puts
    the room in the prompt; another room's name stands out in colour on its
    lines, the current room's is bold only; /part brings the lobby back."""
    term = start(terminals, "--nick", "bob", "127.0.0.1", str(scripted.port))
    peer = scripted.accept()
    peer.send(RUBY_WELCOME)
    assert peer.line() == b"/pseudo"
    peer.send(b"Entrez votre pseudo: \n")
    assert peer.line() == b"bob"
    peer.send(b"Bienvenue bob\n----------------------\nUtilisateurs en ligne:\n")
    peer.send(b"=>bob\n----------------------\n")
    term.wait(lambda: term.cursor_line == "bob>")
    term.type("/join #salle\r")
    assert peer.line() == b"/join #salle"
    peer.send(
        b"Salon courant : #salle\n----------------------\n"
        b"Utilisateurs en ligne:\n=>bob\n----------------------\n"
        b"[1.2.3]-#autre carol: ailleurs\n[1.2.4]-#salle dave: ici\n"
    )
    term.wait(lambda: term.cursor_line == "bob #salle>")
    term.wait(term.shows("[1.2.4]-#salle dave: ici"))
    buffer = term.screen.buffer

    def style(text: str) -> tuple[str, bool]:
        row = term.row_of(text)
        cell = buffer[row][term.lines[row].index(text)]
        return cell.fg, cell.bold

    assert style("#autre") == ("green", True)
    assert style("#salle dave") == ("default", True)
    assert style("dave: ici") == ("default", False)
    term.type("/part\r")
    assert peer.line() == b"/part"
    peer.send("Vous avez quitté #salle\nSalon courant : #accueil\n".encode())
    term.wait(lambda: term.cursor_line == "bob #accueil>")
    leave(term, peer)
