"""python -m chatproto.client in pipe mode, as a process, over real loopback:
against chatproto's server (run by twistd) and against scripted servers that
fall silent, close in the middle of a line, or send escape sequences."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatproto.client.options import ClientOptions, parse_args
from chatproto.client.servers import PASSWORD_PROMPT
from tests.test_client_support import (
    RUBY_WELCOME,
    Client,
    OurServer,
    Peer,
    Scripted,
    closed_port,
    run_client,
)
from tests.test_tls import key_and_certificate, self_signed

pytestmark = pytest.mark.slow

WELCOME = RUBY_WELCOME.decode().rstrip("\n")
STAMP = r"\[\d{1,2}\.\d{1,2}\.\d{1,2}\]-"


@pytest.fixture(scope="module")
def server() -> Iterator[OurServer]:
    """chatproto's server, pinging every 0.3 s and dropping a client after
    2 pings without pong."""
    running = OurServer("--ping-interval", "0.3", "--max-missed-pings", "2")
    yield running
    running.stop()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    listener = Scripted()
    yield listener
    listener.close()


def no_traceback(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") <= 1


# -- The command line ----------------------------------------------------------------


def test_help() -> None:
    """--help describes the arguments and exits 0."""
    result = run_client(["--help"])
    assert result.returncode == 0
    for word in ("HOST", "PORT", "--connect", "--nick", "tls:host="):
        assert word in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--nick", "x"],
        ["--nick", "a b"],
        ["--connect", "tcp:host=h:port=1", "h"],
        ["localhost", "notaport"],
        ["localhost", "70000"],
        ["--timeout", "0"],
    ],
)
def test_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A bad command line is status 2 with a message."""
    with pytest.raises(SystemExit) as exit:
        parse_args(args)
    assert exit.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_defaults() -> None:
    """No arguments: localhost, port 7000."""
    assert parse_args([]) == ClientOptions(host="localhost", port=7000)
    assert parse_args(["example.org"]).target == "example.org:7000"
    options = parse_args(["--connect", "tls:host=example.org:port=7443"])
    assert options.target == "tls:host=example.org:port=7443"


def test_bad_endpoint_as_a_user_sees_it() -> None:
    """An endpoint string Twisted cannot parse: status 2, one line."""
    result = run_client(["--connect", "bogus:x"])
    assert result.returncode == 2
    assert result.stderr == (
        "python -m chatproto.client: error: invalid endpoint 'bogus:x':"
        " Unknown endpoint type: 'bogus'\n"
    )


def test_tls_roots_that_are_not_certificates_as_a_user_sees_it(
    tmp_path: Path,
) -> None:
    """A tls: endpoint whose trustRoots= directory holds a key (not a
    certificate): status 2, one line that says what the directory must
    hold, no traceback."""
    key_file, _ = key_and_certificate(tmp_path)
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "key.pem").write_bytes(key_file.read_bytes())
    endpoint = f"tls:host=localhost:port=7999:trustRoots={roots}"
    result = run_client(["--connect", endpoint])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"python -m chatproto.client: error: cannot read the files of {endpoint!r}"
    )
    assert result.stderr.endswith(
        "trustRoots= names a directory holding only PEM certificates.\n"
    )


# -- Against chatproto's server -------------------------------------------------------


def test_pipe_session(server: OurServer) -> None:
    """The issue's example: every line sent, every server line printed as it
    came, /quit at the end of input, status 0."""
    result = run_client(
        ["127.0.0.1", str(server.port)], stdin="/pseudo\npipebob\nhello\n/list\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[:3] == [WELCOME, "Entrez votre pseudo: ", "Bienvenue pipebob"]
    assert lines[3:5] == ["----------------------", "Utilisateurs en ligne:"]
    assert "=>pipebob" in lines
    assert lines.count("Utilisateurs en ligne:") == 2
    assert lines[-1] == "Deconnexion"


def test_forty_piped_lines_all_arrive_through_default_flood_control() -> None:
    """The issue's example against a server with the default flood control
    (5 lines at once, then 2 a second): printf '/pseudo\\nbob\\n'; seq 40
    through the client. Another user receives all 40 lines, in order, and
    the client exits 0. (The client paces: about 20 s, the one slow test.)"""
    server = OurServer()  # its own: the server remembers what an address spent
    carol = Client("--nick", "carol", "127.0.0.1", str(server.port))
    try:
        carol.out.wait_for("^=>carol$")
        piped = "/pseudo\nbob\n" + "".join(f"{n}\n" for n in range(1, 41))
        started = time.monotonic()
        bob = run_client(["127.0.0.1", str(server.port)], stdin=piped, timeout=60)
        took = time.monotonic() - started
        assert (bob.returncode, bob.stderr) == (0, "")
        assert "Trop de messages" not in bob.stdout
        carol.out.wait_for(STAMP + "bob: 40$")
        code, lines, err = carol.finish()
    finally:
        carol.kill()
        server.stop()
    assert (code, err) == (0, "")
    said = [line.split("-bob: ", 1)[1] for line in lines if "-bob: " in line]
    assert said == [str(n) for n in range(1, 41)]
    # 43 lines (with /quit), 4 at once, then 1.9 a second: 20.5 s at least.
    assert took > (43 - 4) / 1.9


def test_two_users_through_pings(server: OurServer) -> None:
    """alice stays connected through several pings (answered, never shown),
    and sees bob's arrival, private line, public line and departure."""
    alice = Client("--nick", "alice", "127.0.0.1", str(server.port))
    try:
        alice.out.wait_for("^=>alice$")
        bob = run_client(
            ["--nick", "bob", "127.0.0.1", str(server.port)],
            stdin="msg alice psst\nhello all\n",
        )
        assert bob.returncode == 0, bob.stderr
        alice.out.wait_for(f"^{STAMP}Déconnection de bob$")
        time.sleep(1.2)  # four ping intervals: alice must answer them all
        code, lines, err = alice.finish()
    finally:
        alice.kill()
    assert code == 0, err
    assert err == ""
    assert "ping" not in lines
    tail = [line for line in lines if line.startswith("[")]
    assert [line.split("-", 1)[1] for line in tail] == [
        "Connexion de bob",
        "message privé de bob: psst",
        "bob: hello all",
        "Déconnection de bob",
    ]
    assert lines[-1] == "Deconnexion"


def test_nickname_taken(server: OurServer) -> None:
    """--nick with a nickname in use: status 1 and one sentence."""
    carol = Client("--nick", "carol", "127.0.0.1", str(server.port))
    try:
        carol.out.wait_for("^=>carol$")
        result = run_client(["--nick", "carol", "127.0.0.1", str(server.port)])
        carol.finish()
    finally:
        carol.kill()
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "Attention ce pseudo existe deja"
    assert result.stderr == (
        "The server refused the nickname 'carol': it is already taken.\n"
    )


def test_nickname_invalid(server: OurServer) -> None:
    """A nickname the server refuses as invalid: status 1, one sentence, and
    the lines after it are not sent."""
    result = run_client(["127.0.0.1", str(server.port)], stdin="/pseudo\nd\nnot sent\n")
    assert result.returncode == 1
    assert "Rentrez un pseudo correct" in result.stdout.splitlines()
    assert result.stderr == "The server refused the nickname 'd': it is not valid.\n"


# -- A protected nickname ------------------------------------------------------------


def test_the_password_file_answers_the_prompt(
    scripted: Scripted, tmp_path: Path
) -> None:
    """--password-file: the password goes when the server asks for it, and
    only then; a file others may read is warned of in one line at start."""
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nnot this one\n")
    secret.chmod(0o644)
    client = Client(
        "--nick", "bob", "--password-file", str(secret), "127.0.0.1", str(scripted.port)
    )
    try:
        peer = scripted.accept()
        peer.send(RUBY_WELCOME)
        assert peer.line() == b"/pseudo"
        peer.send(b"Entrez votre pseudo: \n")
        assert peer.line() == b"bob"
        client.type("hello")
        peer.send(PASSWORD_PROMPT.encode() + b"\n")
        assert peer.line() == b"s3cret"
        peer.send(b"Bienvenue bob\n")
        assert peer.line() == b"hello"
        client.end_input()
        assert peer.line() == b"/quit"
        peer.send(b"Deconnexion\n")
        code, lines, err = client.wait()
    finally:
        client.kill()
    assert code == 0
    assert lines == [
        WELCOME,
        "Entrez votre pseudo: ",
        PASSWORD_PROMPT,
        "Bienvenue bob",
        "Deconnexion",
    ]
    assert err == (
        f"python -m chatproto.client: warning: the password file {str(secret)!r}"
        f" is readable by other users (chmod 600 {secret} would keep it yours)\n"
    )


def test_an_unusable_password_file_stops_the_start(tmp_path: Path) -> None:
    """A password file that cannot be read, or is empty: status 2 and one
    sentence, before connecting."""
    missing = tmp_path / "missing"
    result = run_client(["--password-file", str(missing), "127.0.0.1", "1"])
    assert result.returncode == 2
    assert result.stderr == (
        "python -m chatproto.client: error: cannot read the password file"
        f" {str(missing)!r}: No such file or directory\n"
    )
    empty = tmp_path / "empty"
    empty.touch(0o600)
    result = run_client(["--password-file", str(empty), "127.0.0.1", "1"])
    assert result.returncode == 2
    assert result.stderr == (
        f"python -m chatproto.client: error: the password file {str(empty)!r}"
        " holds no password on its first line\n"
    )


# -- Failures, against scripted servers ------------------------------------------------


def test_connection_refused() -> None:
    """Nobody listens: status 1 and a sentence that says so."""
    port = closed_port()
    result = run_client(["127.0.0.1", str(port)])
    assert result.returncode == 1
    assert result.stderr == (
        f"Cannot reach 127.0.0.1:{port}: the connection was refused.\n"
    )
    assert result.stdout == ""


def test_server_closes_mid_line(scripted: Scripted) -> None:
    """The server closes after half a line: the half line is shown once,
    then one sentence, status 1."""
    client = Client("--connect", f"tcp:host=127.0.0.1:port={scripted.port}")
    try:
        peer = scripted.accept()
        peer.send(RUBY_WELCOME + b"[1.2.3]-bob: half a li")
        peer.close()
        code, lines, err = client.wait()
    finally:
        client.kill()
    assert code == 1
    assert lines == [WELCOME, "[1.2.3]-bob: half a li"]
    assert err == "The server closed the connection.\n"


def test_server_silent(scripted: Scripted) -> None:
    """A server that accepts and never speaks: given up on after --timeout."""
    client = Client("--timeout", "1", "127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        code, lines, err = client.wait()
        assert peer.closed()
    finally:
        client.kill()
    assert code == 1
    assert lines == []
    assert err == "The server did not send a welcome line within 1 second.\n"


def test_server_stops_answering(scripted: Scripted) -> None:
    """A server that never answers /quit: status 1 after --timeout, and the
    client closes the connection."""
    client = Client("--timeout", "1", "127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        peer.send(RUBY_WELCOME)
        client.end_input()
        assert peer.line() == b"/quit"
        code, lines, err = client.wait()
        assert peer.closed()
    finally:
        client.kill()
    assert code == 1
    assert lines == [WELCOME]
    assert err == "The server did not send an answer to /quit within 1 second.\n"


def test_escape_sequences_printed_harmless(scripted: Scripted) -> None:
    """ESC, BEL and C1 controls from the server reach standard output only
    as visible characters."""
    client = Client("127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        peer.send(RUBY_WELCOME + b"[1.2.3]-eve: \x1b[2J\x1b]0;pwned\x07\xc2\x9b1m\n")
        client.out.wait_for("eve")
        client.end_input()
        assert peer.line() == b"/quit"
        peer.send(b"Deconnexion\n")
        code, lines, err = client.wait()
    finally:
        client.kill()
    assert code == 0, err
    assert lines[1] == "[1.2.3]-eve: ^[[2J^[]0;pwned^G\ufffd1m"
    assert not any(ch in line for line in lines for ch in "\x1b\x07\x9b")


def peak_memory(pid: int) -> int:
    """The most memory a process has held so far (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_ping_flood_from_a_server_that_reads_nothing(scripted: Scripted) -> None:
    """A server that sends 4 MB of pings and reads nothing does not make the
    client hold its answers (on 082036f its memory grew by 23 MiB, every
    pong a write of its own); once the server reads, one pong answers what
    came meanwhile, then /quit, and the session ends well."""
    # The kernel takes what the server's small receive buffer and the
    # client's send buffer hold; the client holds the rest, or not.
    scripted.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # --timeout: the flood takes a few seconds to read, while nothing the
    # client writes is read.
    client = Client("--timeout", "60", "127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        peer.conn.settimeout(60)
        peer.send(RUBY_WELCOME)
        client.out.wait_for("^Bienvenue")
        before = peak_memory(client.process.pid)
        peer.send(b"ping\n" * 800_000 + b"[1.2.3]-eve: done\n")
        client.out.wait_for("done$", timeout=60)
        grown = peak_memory(client.process.pid) - before
        client.end_input()
        read = b""
        while b"/quit\n" not in read:
            peer.send(b"ping\n")  # the server is alive: its pings go on
            chunk = peer.conn.recv(1 << 20)
            assert chunk, read[-100:]
            read += chunk
        peer.send(b"Deconnexion\n")
        code, lines, err = client.wait()
    finally:
        client.kill()
    assert grown < 8 * 2**20, f"{grown / 2**20:.1f} MiB"
    answers, _, _ = read.partition(b"/quit\n")
    assert set(answers.split(b"\n")) == {b"pong", b""}
    assert (code, lines, err) == (0, [WELCOME, "[1.2.3]-eve: done", "Deconnexion"], "")


def test_partial_last_line_then_quit(scripted: Scripted) -> None:
    """projet.py's unterminated last line is printed after a short quiet
    time, while the connection is still open."""
    client = Client("127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        peer.send(
            b"bienvenue dans le chat, enregistrez-vous avec la commande /pseudo\n"
            b"[18.58.9]-D\xc3\xa9connection de Thread-3"
        )
        client.out.wait_for("Thread-3$", timeout=2)
        client.end_input()
        assert peer.line() == b"/quit"
        peer.send(b"Deconnexion\n")
        peer.close()
        code, lines, err = client.wait()
    finally:
        client.kill()
    assert code == 0, err
    assert lines[1:] == ["[18.58.9]-Déconnection de Thread-3", "Deconnexion"]


def test_interrupt_leaves_cleanly_then_at_once(scripted: Scripted) -> None:
    """Ctrl-C (SIGINT) sends /quit and waits; a second one leaves at once,
    with one sentence and no traceback."""
    client = Client("127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        peer.send(RUBY_WELCOME)
        client.out.wait_for("^Bienvenue")
        client.process.send_signal(signal.SIGINT)
        assert peer.line() == b"/quit"
        client.process.send_signal(signal.SIGINT)
        code, _, err = client.wait()
        assert peer.closed()
    finally:
        client.kill()
    assert code == 1
    assert err == "Interrupted.\n"


def test_sigterm_leaves_cleanly(scripted: Scripted) -> None:
    """SIGTERM is a request to leave: /quit, Deconnexion, status 0."""
    client = Client("127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        peer.send(RUBY_WELCOME)
        client.out.wait_for("^Bienvenue")
        client.process.send_signal(signal.SIGTERM)
        assert peer.line() == b"/quit"
        peer.send(b"Deconnexion\n")
        code, lines, err = client.wait()
    finally:
        client.kill()
    assert (code, err) == (0, "")
    assert lines[-1] == "Deconnexion"


def test_tls_endpoint(tmp_path: Path) -> None:
    """--connect tls:... talks to a TLS server whose certificate it trusts,
    and refuses, with one sentence, one it does not."""
    pem = self_signed(tmp_path)
    roots = tmp_path / "roots"
    roots.mkdir()
    blocks = pem.read_text().split("-----BEGIN CERTIFICATE-----")
    (roots / "ca.pem").write_text("-----BEGIN CERTIFICATE-----" + blocks[1])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    listener = Scripted()
    try:
        endpoint = f"tls:host=localhost:port={listener.port}:trustRoots={roots}"
        client = Client("--connect", endpoint)
        try:
            peer = Peer(context.wrap_socket(listener.accept().conn, server_side=True))
            peer.send(RUBY_WELCOME)
            client.out.wait_for("^Bienvenue")
            client.end_input()
            assert peer.line() == b"/quit"
            peer.send(b"Deconnexion\n")
            peer.close()
            code, lines, err = client.wait()
        finally:
            client.kill()
        assert (code, lines, err) == (0, [WELCOME, "Deconnexion"], "")

        untrusting = Client("--connect", f"tls:host=localhost:port={listener.port}")
        try:
            with contextlib.suppress(ssl.SSLError, OSError):
                context.wrap_socket(listener.accept().conn, server_side=True)
            code, lines, err = untrusting.wait()
        finally:
            untrusting.kill()
        assert code == 1
        assert err.startswith("The connection to the server was lost: ")
        assert "certificate verify failed" in err
        assert err.count("\n") == 1
    finally:
        listener.close()


def test_room_lines_printed_as_they_came(scripted: Scripted) -> None:
    """In a pipe, /join and /part go as typed, and the rooms' lines (the
    answer to /join, a room's messages and topic, another room's, the rooms
    block) are printed as the server sent them; none counts as refused."""
    client = Client("--nick", "bob", "127.0.0.1", str(scripted.port))
    try:
        peer = scripted.accept()
        peer.send(RUBY_WELCOME)
        assert peer.line() == b"/pseudo"
        peer.send(b"Entrez votre pseudo: \n")
        assert peer.line() == b"bob"
        peer.send(b"Bienvenue bob\n----------------------\nUtilisateurs en ligne:\n")
        peer.send(b"=>bob\n----------------------\n")
        client.type("/join #Salle", "/rooms", "/part")
        assert peer.line() == b"/join #Salle"
        room = (
            "Salon courant : #salle\n"
            "----------------------\nUtilisateurs en ligne:\n=>bob\n"
            "----------------------\n"
            "Sujet de #salle : TP réseau\n"
            "[1.2.3]-#salle dave: ici\n"
            "[1.2.4]-#autre carol: \x1b[2Jailleurs\n"
            "[1.2.5]-#salle Sujet : TP 2 (par prof)\n"
        )
        peer.send(room.encode())
        assert peer.line() == b"/rooms"
        rooms = (
            "--- salons (2) ---\n#accueil 3 membres\n#salle 1 membre\n"
            "--- fin des salons ---\n"
        )
        peer.send(rooms.encode())
        assert peer.line() == b"/part"
        part = "Vous avez quitté #salle\nSalon courant : #accueil\n"
        peer.send(part.encode())
        client.out.wait_for("^Salon courant : #accueil$")
        client.end_input()
        assert peer.line() == b"/quit"
        peer.send(b"Deconnexion\n")
        code, lines, err = client.wait()
    finally:
        client.kill()
    assert (code, err) == (0, "")
    sent = (room + rooms + part).replace("\x1b", "^[").splitlines()
    assert lines[lines.index("Salon courant : #salle") :] == [*sent, "Deconnexion"]
