"""The client and protected nicknames (issue 21): the server's password
prompt, answered by the user or by --password-file; the commands that carry
a password, never shown nor kept in the line editor's history; and the
/history and /search blocks, shown as plain lines. Scripted server lines
over a StringTransport and a task.Clock; the password file on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.layout.processors import TransformationInput

from chatproto import wire
from chatproto.client.events import (
    Departure,
    Notice,
    PasswordPrompt,
    Public,
    Refused,
    Registered,
)
from chatproto.client.masking import carries_password, masked, password_start
from chatproto.client.options import parse_args, read_password
from chatproto.client.registration import Stage
from chatproto.client.servers import PASSWORD_PROMPT
from chatproto.client.terminal import DiscreetHistory, MaskPasswords, render
from tests.test_client_protocol import RUBY_PROMPT, RUBY_WELCOME, Chat
from tests.test_client_session import Harness

PROMPT_LINE = PASSWORD_PROMPT.encode() + b"\n"
THROTTLED_LINE = wire.OP_THROTTLED.format(27).encode() + b"\n"
GREETING = b"Bienvenue bob\n"
LIST_BOB = (
    b"----------------------\nUtilisateurs en ligne:\n=>bob\n----------------------\n"
)


def test_the_prompt_line_is_the_contract() -> None:
    """The exact line of issue 21's contract (i21_shared.md)."""
    assert PASSWORD_PROMPT == "Ce pseudo est protégé : entrez son mot de passe"


def to_the_password_prompt(chat: Chat) -> None:
    """chatproto's server: /pseudo, bob, then the password prompt."""
    chat.feed(RUBY_WELCOME)
    chat.proto.register("bob")
    chat.feed(RUBY_PROMPT)
    assert chat.sent() == b"/pseudo\nbob\n"
    chat.take()
    chat.feed(PROMPT_LINE)


# -- The protocol -----------------------------------------------------------------


def test_the_prompt_then_the_password_then_the_verdict() -> None:
    """The prompt is an event of its own; the next line is the password, and
    the lines after it wait for the verdict, as after a nickname."""
    chat = Chat()
    to_the_password_prompt(chat)
    assert chat.take() == [PasswordPrompt(lines=(PASSWORD_PROMPT,))]
    assert chat.proto.stage is Stage.PASSWORD
    chat.proto.send("s3cret")
    chat.proto.send("hello")
    assert chat.sent() == b"s3cret\n"
    assert chat.proto.stage is Stage.NICK_SENT
    chat.feed(GREETING + LIST_BOB)
    assert chat.proto.stage is Stage.REGISTERED
    assert chat.proto.nickname == "bob"
    assert chat.sent() == b"hello\n"


@pytest.mark.parametrize("give_up", [False, True])
def test_a_wrong_password_is_a_refusal_as_a_taken_nickname(give_up: bool) -> None:
    """Attention ce pseudo existe deja after the password: refused as a
    taken nickname (nothing more on this connection), the sentence says
    what may be wrong and never the password; a pipe ends there."""
    chat = Chat(give_up=give_up)
    to_the_password_prompt(chat)
    chat.proto.send("s3cret")
    chat.feed(b"Attention ce pseudo existe deja\n")
    [refused] = chat.of(Refused)
    assert refused.taken
    assert refused.sentence == (
        "The server refused the nickname 'bob': it is in use, or the password is wrong."
    )
    assert chat.proto.stage is Stage.SPENT
    assert not chat.proto.can_register
    if give_up:
        chat.clock.advance(1)
        assert chat.ending().reason == refused.sentence


@pytest.mark.parametrize("after_the_password", [True, False])
def test_too_many_tries_is_a_refusal_too(after_the_password: bool) -> None:
    """The throttled answer (wire.OP_THROTTLED's text), to the password or
    to the nickname: shown, refused as after a taken nickname so that the
    user may try again, and not counted as a line lost."""
    chat = Chat()
    if after_the_password:
        to_the_password_prompt(chat)
        chat.proto.send("s3cret")
    else:  # a server that throttles before it asks
        chat.feed(RUBY_WELCOME)
        chat.proto.register("bob")
        chat.feed(RUBY_PROMPT)
    chat.take()
    chat.feed(THROTTLED_LINE)
    [refused] = chat.take()
    assert isinstance(refused, Refused)
    assert refused.lines == (THROTTLED_LINE.decode().rstrip("\n"),)
    assert refused.taken
    assert refused.sentence == (
        "The server refused the nickname 'bob': too many password tries."
    )
    assert chat.proto.stage is Stage.SPENT
    assert chat.proto.reader.undelivered == 0


def test_the_throttled_line_after_registering_is_a_notice() -> None:
    """The same line to a registered user (its /op, /register): an error
    line, as before."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(THROTTLED_LINE)
    assert [type(event) for event in chat.take()] == [Notice]
    assert chat.proto.reader.undelivered == 1


def test_the_prompt_line_at_any_other_time_is_a_notice() -> None:
    """Only the answer to a nickname is a password prompt: the same line
    from a registered user's view is shown, and nothing is sent."""
    chat = Chat()
    chat.register_ruby()
    chat.feed(PROMPT_LINE)
    assert chat.take() == [Notice(lines=(PASSWORD_PROMPT,))]
    assert chat.proto.stage is Stage.REGISTERED


def test_the_shortcut_with_a_password_names_only_the_nickname() -> None:
    """/pseudo NICK PASSWORD in one line: the nickname is bob, and a
    refusal says bob, never the password."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    chat.proto.send("/pseudo bob s3cret")
    assert chat.sent() == b"/pseudo bob s3cret\n"
    chat.proto.send("hello")
    assert chat.sent() == b""  # waits for the verdict
    chat.feed(b"Attention ce pseudo existe deja\n")
    [refused] = chat.of(Refused)
    assert refused.nickname == "bob"
    assert "s3cret" not in refused.sentence


def test_the_shortcut_with_a_password_for_a_nickname_nobody_protects() -> None:
    """chatproto's server answers /pseudo NICK PASSWORD for a NICK nobody
    protects as for an invalid nickname: the sentence says both."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    chat.proto.send("/pseudo bob s3cret")
    chat.feed(b"Rentrez un pseudo correct\n")
    [refused] = chat.of(Refused)
    assert refused.sentence == (
        "The server refused the nickname 'bob': it is not valid, or no password"
        " protects it."
    )
    assert chat.proto.stage is Stage.PROMPTED


def test_the_shortcut_with_a_password_registers_the_nickname() -> None:
    """/pseudo NICK PASSWORD, then the list block alone (no greeting): the
    nickname registered is NICK."""
    chat = Chat()
    chat.feed(RUBY_WELCOME)
    chat.proto.send("/pseudo bob s3cret")
    chat.feed(LIST_BOB)
    assert chat.proto.nickname == "bob"
    [registered] = chat.of(Registered)
    assert registered.nickname == "bob"


def test_quitting_at_the_password_prompt_closes() -> None:
    """/quit at the password prompt would be taken for the password: the
    client closes instead, and the session ends well."""
    chat = Chat()
    to_the_password_prompt(chat)
    chat.proto.quit()
    assert chat.sent() == b""
    ending = chat.ending()
    assert (ending.ok, ending.reason) == (True, "Left the chat before registering.")


# -- The session ---------------------------------------------------------------------


def start_as_bob(h: Harness) -> None:
    h.session.start()
    h.endpoint.feed(RUBY_WELCOME)
    assert h.endpoint.sent() == b"/pseudo\n"
    h.endpoint.feed(RUBY_PROMPT)
    assert h.endpoint.sent() == b"bob\n"


def test_the_password_file_answers_the_prompt() -> None:
    """With a password (--password-file), the session answers the prompt at
    once, before the piped lines that wait; the user is never asked."""
    h = Harness(nickname="bob", password="s3cret")
    start_as_bob(h)
    h.session.user_line("hello")
    h.endpoint.feed(PROMPT_LINE)
    assert not h.session.asking_password
    assert h.endpoint.sent() == b"s3cret\n"
    h.endpoint.feed(GREETING)
    assert h.endpoint.sent() == b"hello\n"


def test_the_password_file_answers_after_the_end_of_input() -> None:
    """A pipe whose input ended before the prompt came (its lines and the
    end of input wait for the registration): the password still goes
    first, then the lines, then /quit."""
    h = Harness(nickname="bob", password="s3cret")
    h.session.user_line("hello")
    h.session.user_quit()
    start_as_bob(h)
    h.endpoint.feed(PROMPT_LINE)
    assert h.endpoint.sent() == b"s3cret\n"
    h.endpoint.feed(GREETING)
    h.clock.advance(1)  # the pacing: the fifth line in a row
    assert h.endpoint.sent() == b"hello\n/quit\n"
    h.endpoint.feed(b"Deconnexion\n")
    assert h.ended == [(0, None)]


def test_without_a_file_the_next_line_is_the_password() -> None:
    """No password file: the session says the user is asked (the terminal
    reads without echo) until a line is typed, which goes as the password."""
    h = Harness(nickname="bob")
    start_as_bob(h)
    assert not h.session.asking_password
    h.endpoint.feed(PROMPT_LINE)
    assert h.session.asking_password
    h.session.user_line("s3cret")
    assert not h.session.asking_password
    assert h.endpoint.sent() == b"s3cret\n"
    h.endpoint.feed(b"Attention ce pseudo existe deja\n")
    assert not h.session.asking_password


def test_no_password_goes_to_a_server_that_does_not_ask() -> None:
    """The Ruby server (no greeting, the list block) never gets the password
    of the file: only the prompt line makes the client send it."""
    h = Harness(nickname="bob", password="s3cret")
    start_as_bob(h)
    h.endpoint.feed(LIST_BOB)
    h.session.user_line("hello")
    h.session.user_quit()
    assert h.endpoint.sent() == b"hello\n/quit\n"


def test_a_wrong_password_ends_a_pipe_session() -> None:
    """In a pipe a wrong password ends the session: status 1, one sentence
    without the password."""
    h = Harness(nickname="bob", password="s3cret")
    start_as_bob(h)
    h.endpoint.feed(PROMPT_LINE)
    h.endpoint.sent()
    h.endpoint.feed(b"Attention ce pseudo existe deja\n")
    h.clock.advance(1)
    assert h.ended == [
        (
            1,
            "The server refused the nickname 'bob': it is in use, or the password"
            " is wrong.",
        )
    ]


@pytest.mark.parametrize(
    "answer", [b"Attention ce pseudo existe deja\n", THROTTLED_LINE]
)
def test_the_terminal_may_try_again(answer: bytes) -> None:
    """On a terminal, after a wrong password or too many tries, the user is
    asked a nickname again and it goes on a new connection, as after a
    taken nickname; the password is asked again there."""
    h = Harness(reask=True, nickname="bob")
    start_as_bob(h)
    h.endpoint.feed(PROMPT_LINE)
    h.session.user_line("wrong")
    h.endpoint.sent()
    h.endpoint.feed(answer)
    assert h.session.reasking
    assert len(h.ui.asked) == 1
    h.session.user_line("bob")
    assert len(h.endpoint.connections) == 2
    h.endpoint.feed(RUBY_WELCOME)
    assert h.endpoint.sent() == b"/pseudo\n"
    h.endpoint.feed(RUBY_PROMPT)
    h.clock.advance(1)  # the pacing: the fifth line in a row
    assert h.endpoint.sent() == b"bob\n"
    h.endpoint.feed(PROMPT_LINE)
    assert h.session.asking_password
    h.session.user_line("right")
    h.clock.advance(1)
    assert h.endpoint.sent() == b"right\n"
    h.endpoint.feed(GREETING)
    assert isinstance(h.ui.events[-1], Registered)


def test_a_nickname_asked_again_is_never_echoed_with_its_password() -> None:
    """At the nickname prompt, a /pseudo NICK PASSWORD line is not a
    nickname: the client says so, with the password masked."""
    h = Harness(reask=True, nickname="bob")
    start_as_bob(h)
    h.endpoint.feed(b"Rentrez un pseudo correct\n")
    h.session.user_line("/pseudo bob s3cret")
    assert "s3cret" not in h.ui.asked[-1]
    assert "'/pseudo bob ******' is not a nickname" in h.ui.asked[-1]


# -- Masking and the line editor -----------------------------------------------


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("/register s3cret", "/register ******"),
        ("/unregister s3cret", "/unregister ******"),
        ("/op s3cret", "/op ******"),
        ("  /op  two words", "  /op **********"),
        ("/pseudo bob s3cret", "/pseudo bob ******"),
        ("/pseudo  bob\ts3 cret", "/pseudo  bob\t*******"),
        ("/pseudo bob", "/pseudo bob"),
        ("/pseudo bob ", "/pseudo bob "),
        ("/register", "/register"),
        ("/register ", "/register "),
        ("/registered x", "/registered x"),
        ("/opera x", "/opera x"),
        ("I typed /register s3cret", "I typed /register s3cret"),
        ("hello", "hello"),
    ],
)
def test_masked(line: str, shown: str) -> None:
    """The password of each command that carries one, masked one star a
    character; any other line as it is."""
    assert masked(line) == shown
    assert carries_password(line) == (shown != line)
    assert (password_start(line) is None) == (shown == line)


def test_a_paste_with_a_password_carries_it() -> None:
    assert carries_password("hello\n/register s3cret\nbye")
    assert not carries_password("hello\nbye")


def shown(text: str, lineno: int = 0) -> str:
    """What MaskPasswords makes of line C{lineno} of C{text}."""
    document = Document(text)
    line = document.lines[lineno]
    ti = TransformationInput(
        buffer_control=None,  # type: ignore[arg-type]
        document=document,
        lineno=lineno,
        source_to_display=lambda i: i,
        fragments=[("class:a", line[:3]), ("", line[3:])],
        width=80,
        height=1,
    )
    transformed = MaskPasswords().apply_transformation(ti)
    return "".join(fragment[1] for fragment in transformed.fragments)


def test_the_line_editor_masks_as_it_is_typed() -> None:
    """The line being typed shows its password as stars, keeping its
    length and styles; the other lines of a paste as they are."""
    assert shown("/register s3cret") == "/register ******"
    assert shown("/pseudo bob s") == "/pseudo bob *"
    assert shown("/pseudo bob") == "/pseudo bob"
    assert shown("hello\n/op s3cret", 0) == "hello"
    assert shown("hello\n/op s3cret", 1) == "/op ******"


def test_the_history_keeps_no_password() -> None:
    """The line editor's history keeps every line but those that carry a
    password and the answers to the password prompt."""
    asking = [False]
    history = DiscreetHistory(lambda: asking[0])
    for line in ("hello", "/register s3cret", "/pseudo bob s3cret", "a\n/op x"):
        history.append_string(line)
    asking[0] = True
    history.append_string("s3cret")
    asking[0] = False
    history.append_string("/history 50")
    assert history.get_strings() == ["hello", "/history 50"]


# -- /history and /search blocks ---------------------------------------------------


SEARCH_BLOCK = (
    "--- recherche « éléphant » (3 lignes) ---\n"
    "--- lundi 7 décembre 2026 ---\n"
    "[9.12.1]-alice: un Éléphant !\n"
    "[9.13.2]-Déconnection de alice\n"
    "--- mardi 8 décembre 2026 ---\n"
    "[10.1.0]-bob: l'éléphant, encore\n"
    "--- fin de la recherche ---\n"
    "Aucune ligne ne contient « girafe »\n"
    "--- historique (1 ligne) ---\n"
    "--- dimanche 1er novembre 2026 ---\n"
    "[8.0.0]-carol: bonjour\n"
    "--- fin de l'historique ---\n"
).encode()


def test_search_and_history_blocks_are_plain_lines() -> None:
    """The answers to /search and /history: every line shown as it came, in
    order; the markers and day lines as the server's notices (the terminal's
    notice colour), the lines kept as the chat's; none counts as a line
    lost."""
    chat = Chat()
    chat.register_ruby()
    chat.proto.send("/search éléphant")
    assert chat.sent() == "/search éléphant\n".encode()
    chat.feed(SEARCH_BLOCK)
    events = chat.take()
    assert [line for event in events for line in event.lines] == (
        SEARCH_BLOCK.decode().splitlines()
    )
    kinds = [type(event) for event in events]
    assert kinds == [
        Notice,
        Notice,
        Public,
        Departure,
        Notice,
        Public,
        Notice,
        Notice,
        Notice,
        Notice,
        Public,
        Notice,
    ]
    assert chat.proto.reader.undelivered == 0
    assert render(events[1]) == [("class:notice", "--- lundi 7 décembre 2026 ---")]


def test_help_lists_the_new_commands() -> None:
    """The client's own help (--help) names /history, /search, /register
    and /unregister."""
    from chatproto.client.options import build_parser

    epilog = build_parser().epilog or ""
    for command in ("/history", "/search", "/register", "/unregister"):
        assert command in epilog


# -- --password-file ---------------------------------------------------------------


def password_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> str:
    path = tmp_path / "pw"
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("data", "password"),
    [
        (b"s3cret", "s3cret"),
        (b"s3cret\n", "s3cret"),
        (b"s3cret\r\nsecond line\n", "s3cret"),
        (b" with spaces \n", " with spaces "),
        ("mot de passe é\n".encode(), "mot de passe é"),
    ],
)
def test_the_password_is_the_first_line(
    tmp_path: Path, data: bytes, password: str
) -> None:
    assert read_password(password_file(tmp_path, data)) == (password, None)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "holds no password on its first line"),
        (b"\nsecond\n", "holds no password on its first line"),
        (b"\xff\xfe\n", "is not UTF-8 text"),
    ],
)
def test_a_file_without_a_password(tmp_path: Path, data: bytes, says: str) -> None:
    path = password_file(tmp_path, data)
    with pytest.raises(ValueError) as raised:
        read_password(path)
    assert str(raised.value) == f"the password file {path!r} {says}"


def test_an_unreadable_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError) as raised:
        read_password(missing)
    assert str(raised.value) == (
        f"cannot read the password file {missing!r}: No such file or directory"
    )
    with pytest.raises(ValueError) as raised:
        read_password(str(tmp_path))
    assert str(raised.value) == (
        f"cannot read the password file {str(tmp_path)!r}: Is a directory"
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_file_others_may_read_is_warned_of(tmp_path: Path, mode: int) -> None:
    path = password_file(tmp_path, b"s3cret\n", mode)
    password, warning = read_password(path)
    assert password == "s3cret"
    assert warning == (
        f"warning: the password file {path!r} is readable by other users"
        f" (chmod 600 {path} would keep it yours)"
    )


def test_the_option(tmp_path: Path) -> None:
    """--password-file FILE names the file; the password is read later
    (never kept in the options)."""
    path = password_file(tmp_path, b"s3cret\n")
    options = parse_args(["--password-file", path])
    assert options.password_file == path
    assert "s3cret" not in repr(options)
