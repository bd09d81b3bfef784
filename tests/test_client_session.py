"""ClientSession (the part of the client both user interfaces share), PipeUI and
the standard input reader, in memory: a fake endpoint hands out
StringTransport connections, a task.Clock keeps the time."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto.client.events import Event, Refused, Registered
from chatproto.client.pipe import PipeUI, read_lines
from chatproto.client.protocol import ChatClientProtocol, Timings
from chatproto.client.session import ClientSession

RUBY_WELCOME = (
    b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
)
RUBY_PROMPT = b"Entrez votre pseudo: \n"
SEED_WELCOME = b"bienvenue dans le chat, enregistrez-vous avec la commande /pseudo\n"


class Endpoint:
    """Connects at once to a StringTransport, or fails or hangs as told."""

    def __init__(self) -> None:
        self.connections: list[
            tuple[ChatClientProtocol, StringTransportWithDisconnection]
        ] = []
        self.refuse = False
        self.hang = False

    def connect(self, factory: IProtocolFactory) -> Deferred[Protocol]:
        if self.refuse:
            return fail(ConnectionRefusedError())
        if self.hang:
            return Deferred()
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7000))
        assert isinstance(proto, ChatClientProtocol)
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
        self.connections.append((proto, transport))
        return succeed(proto)

    @property
    def last(self) -> tuple[ChatClientProtocol, StringTransportWithDisconnection]:
        return self.connections[-1]

    def feed(self, data: bytes) -> None:
        self.last[0].dataReceived(data)

    def sent(self) -> bytes:
        transport = self.last[1]
        data = transport.value()
        transport.clear()
        return data


@dataclass
class UI:
    events: list[Event] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def show(self, event: Event) -> None:
        self.events.append(event)

    def ask_nickname(self, why: str) -> None:
        self.asked.append(why)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        return None


class Harness:
    """A ClientSession on the fake endpoint, with its UI, clock and outcome."""

    def __init__(
        self,
        reask: bool = False,
        nickname: str | None = None,
        password: str | None = None,
    ) -> None:
        self.clock = Clock()
        self.endpoint = Endpoint()
        self.ui = UI()
        self.session = ClientSession(
            self.clock,
            cast(IStreamClientEndpoint, self.endpoint),
            "example:7000",
            timings=Timings(),
            nickname=nickname,
            reask=reask,
            password=password,
        )
        self.session.ui = self.ui
        self.ended: list[tuple[int, str | None]] = []
        self.session.done.addCallback(self.ended.append)


def register_refused(endpoint: Endpoint, line: bytes) -> None:
    endpoint.feed(RUBY_WELCOME)
    assert endpoint.sent() == b"/pseudo\n"
    endpoint.feed(RUBY_PROMPT)
    assert endpoint.sent() == b"alice\n"
    endpoint.feed(line)


def test_lines_typed_before_the_connection_are_sent() -> None:
    """Input that comes before the connection is kept and sent in order."""
    h = Harness()
    h.session.user_line("early")
    h.session.start()
    h.endpoint.feed(RUBY_WELCOME)
    assert h.endpoint.sent() == b"early\n"


def test_refusal_ends_a_pipe_session() -> None:
    """Without re-asking, a refused nickname ends the session: status 1 and
    the refusal as the sentence."""
    h = Harness(nickname="alice")
    h.session.start()
    register_refused(h.endpoint, b"Attention ce pseudo existe deja\n")
    h.clock.advance(1)
    assert h.ended == [
        (1, "The server refused the nickname 'alice': it is already taken.")
    ]


def test_taken_nickname_asked_again_on_a_new_connection() -> None:
    """Interactive: after 'Attention ce pseudo existe deja' (the Ruby server
    is dead on that connection) the next nickname goes on a new one."""
    h = Harness(reask=True, nickname="alice")
    h.session.start()
    register_refused(h.endpoint, b"Attention ce pseudo existe deja\n")
    assert h.ui.asked == [
        "The server refused the nickname 'alice': it is already taken."
    ]
    assert h.session.reasking
    h.session.user_line("alice2")
    assert len(h.endpoint.connections) == 2
    assert not h.endpoint.connections[0][1].connected
    h.endpoint.feed(RUBY_WELCOME)
    assert h.endpoint.sent() == b"/pseudo\n"
    h.endpoint.feed(RUBY_PROMPT)
    assert h.endpoint.sent() == b"alice2\n"
    h.endpoint.feed(b"Bienvenue alice2\n")
    assert isinstance(h.ui.events[-1], Registered)
    assert not h.session.reasking
    assert h.ended == []


def test_invalid_nickname_asked_again_on_the_same_connection() -> None:
    """After 'Rentrez un pseudo correct' the server waits for another
    nickname: the next one goes on the same connection."""
    h = Harness(reask=True, nickname="alice")
    h.session.start()
    register_refused(h.endpoint, b"Rentrez un pseudo correct\n")
    h.session.user_line("alice2")
    assert len(h.endpoint.connections) == 1
    assert h.endpoint.sent() == b"alice2\n"


def test_seed_invalid_nickname_asked_again_with_pseudo() -> None:
    """projet.py waits for /pseudo again after refusing a nickname."""
    h = Harness(reask=True)
    h.session.start()
    h.endpoint.feed(SEED_WELCOME)
    h.session.user_line("/pseudo")
    h.endpoint.feed(b"Entrez votre pseudo\n")
    h.clock.advance(1)
    h.session.user_line("x!")
    h.endpoint.feed("le pseudo proposé est invalide, car …\n".encode())
    h.endpoint.sent()
    h.session.user_line("xavier")
    h.clock.advance(1)
    assert h.endpoint.sent() == b"/pseudo\n"
    h.endpoint.feed(b"Entrez votre pseudo\n")
    h.clock.advance(1)
    assert h.endpoint.sent() == b"xavier\n"


def test_nickname_checked_before_asking_the_server() -> None:
    """A re-asked nickname that breaks the rules is asked again at once."""
    h = Harness(reask=True, nickname="alice")
    h.session.start()
    register_refused(h.endpoint, b"Rentrez un pseudo correct\n")
    h.session.user_line("no way")
    assert h.endpoint.sent() == b""
    assert h.ui.asked[1:] == [
        "'no way' is not a nickname: 2 to 12 letters, digits, '_' or '-'."
    ]


def test_leaving_while_asked_after_the_server_closed() -> None:
    """projet.py closes after a taken nickname; leaving then ends with the
    refusal as the reason."""
    h = Harness(reask=True, nickname="alice")
    h.session.start()
    h.endpoint.feed(SEED_WELCOME)
    h.clock.advance(1)
    h.endpoint.feed(b"Entrez votre pseudo\n")
    h.endpoint.feed("Ce pseudo existe déjà\nDéconnexion\n".encode())
    assert h.ended == []
    h.session.user_quit()
    assert h.ended == [
        (1, "The server refused the nickname 'alice': it is already taken.")
    ]


def test_unreachable() -> None:
    """A refused connection ends the session with one sentence."""
    h = Harness()
    h.endpoint.refuse = True
    h.session.start()
    assert h.ended == [(1, "Cannot reach example:7000: the connection was refused.")]


def test_connecting_too_long() -> None:
    """A connection that never completes is given up after the timeout."""
    h = Harness()
    h.endpoint.hang = True
    h.session.start()
    h.clock.advance(Timings().timeout)
    assert h.ended == [(1, "Cannot reach example:7000: no answer within 10 seconds.")]


def test_interrupt_leaves_cleanly_then_at_once() -> None:
    """The first Ctrl-C (or SIGTERM) sends /quit; the second closes at once."""
    h = Harness()
    h.session.start()
    h.endpoint.feed(RUBY_WELCOME)
    h.session.interrupt()
    assert h.endpoint.sent() == b"/quit\n"
    assert h.ended == []
    h.session.interrupt()
    assert h.ended == [(1, "Interrupted.")]


def test_quit_acknowledged_is_status_0() -> None:
    """/quit typed, Deconnexion received: status 0, no sentence."""
    h = Harness()
    h.session.start()
    h.endpoint.feed(RUBY_WELCOME)
    h.session.user_line("/quit")
    assert h.endpoint.sent() == b"/quit\n"
    h.endpoint.feed(b"Deconnexion\n")
    assert h.ended == [(0, None)]


# -- PipeUI and the input reader ---------------------------------------------------


def test_pipe_ui_prints_lines_as_they_came() -> None:
    """Each line of an event on its own line; events without lines print
    nothing."""
    out = io.StringIO()
    ui = PipeUI(Harness().session, out, None, lambda *_: None)
    ui.show(Registered(nickname="bob"))
    ui.show(Refused(lines=("a", ""), nickname="x", taken=False))
    assert out.getvalue() == "a\n\n"


def test_pipe_ui_broken_pipe_leaves() -> None:
    """When nobody reads standard output any more, the client leaves."""
    h = Harness()
    h.session.start()
    h.endpoint.feed(RUBY_WELCOME)
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with os.fdopen(write_fd, "w") as out:
        ui = PipeUI(h.session, out, None, lambda *_: None)
        ui.show(Refused(lines=("x",), nickname="x", taken=False))
        assert ui.broken
    assert h.endpoint.sent() == b"/quit\n"


def test_pipe_ui_input_lines_then_quit() -> None:
    """Each input line goes to the session; the end of input is /quit."""
    h = Harness()
    h.session.start()
    h.endpoint.feed(RUBY_WELCOME)
    read_fd, write_fd = os.pipe()
    ended = threading.Event()

    def call(function: Callable[[list[str]], None], lines: list[str]) -> None:
        function(lines)
        if not lines:
            ended.set()

    ui = PipeUI(h.session, io.StringIO(), read_fd, call)
    ui.start()
    os.write(write_fd, b"hello\n")
    os.close(write_fd)
    assert ended.wait(10)
    os.close(read_fd)
    assert h.endpoint.sent() == b"hello\n/quit\n"


def test_read_lines() -> None:
    """Lines in order, CRLF or LF, a last line without its end, invalid UTF-8
    replaced, then an empty batch for the end of input."""
    read_fd, write_fd = os.pipe()
    batches: list[list[str]] = []
    done = threading.Event()

    def call(function: Callable[[list[str]], None], lines: list[str]) -> None:
        function(lines)
        if not lines:
            done.set()

    reader = threading.Thread(
        target=read_lines, args=(read_fd, batches.append, call), daemon=True
    )
    reader.start()
    os.write(write_fd, b"one\r\ntwo\n\xffthree")
    os.close(write_fd)
    assert done.wait(10)
    reader.join(10)
    os.close(read_fd)
    assert [line for batch in batches for line in batch] == [
        "one",
        "two",
        "\ufffdthree",
    ]
    assert batches[-1] == []
