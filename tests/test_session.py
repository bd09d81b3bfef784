"""The seams of the server: a session needs no transport, the TCP protocol is
a LineReceiver in fact, and each piece of shared state has one writer."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver

from chatproto import wire
from chatproto.config import ServerConfig
from chatproto.inbox import Inbox
from chatproto.server import ChatServerProtocol
from chatproto.session import State
from chatproto.testing import Chat, RecordingTransport

SOURCES = Path(__file__).parent.parent / "chatproto"


def test_a_session_without_a_transport_chats_with_a_tcp_user() -> None:
    """A session fed lines by hand, writing to a bare connection (what the
    WebSocket front end will be), is in the same chat as a TCP user."""
    chat = Chat()
    bob = chat.user("bob")
    session, connection = chat.session()
    assert connection.opened and connection.take() == wire.WELCOME
    session.line_received(b"/pseudo alice")
    assert b"Bienvenue alice\n" in connection.take()
    assert bob.take() == chat.stamp() + b"-Connexion de alice\n"
    session.line_received(b"bonjour")
    assert bob.take() == chat.stamp() + b"-alice: bonjour\n"
    bob.send(b"msg alice psst\n")
    assert connection.take() == chat.stamp() + "-message privé de bob: psst\n".encode()
    assert connection.talked  # it talked: its writes are sent at once
    session.line_received(b"/quit")
    assert connection.closed and connection.take().endswith(wire.BYE)
    assert session.state is State.GONE
    session.lost()
    assert bob.take() == wire.departure_prefix(chat.factory.stamp()) + b"alice\n"
    assert not chat.factory.admission.connections - {bob.session}


def test_a_session_refused_at_the_door_is_closed_with_the_reason() -> None:
    chat = Chat(max_per_ip=1)
    chat.connect("192.0.2.7")
    session, connection = chat.session("192.0.2.7")
    assert connection.closed and not connection.opened
    assert connection.take() == wire.notice(wire.TOO_MANY_FROM_HOST)
    assert session.state is State.GONE


class Recorder(ChatServerProtocol):
    """A subclass as a Twisted engineer writes one: it sees each line."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.exceeded: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.exceeded.append(line)
        super().lineLengthExceeded(line)


def recorder(chat: Chat) -> tuple[Recorder, StringTransport]:
    proto = Recorder()
    proto.factory = chat.factory
    transport = RecordingTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 1))
    proto.makeConnection(transport)
    return proto, transport


def test_lines_arrive_through_line_received_however_they_are_cut() -> None:
    chat = Chat(flood_rate=0)
    proto, transport = recorder(chat)
    proto.dataReceived(b"/pseudo al")
    proto.dataReceived(b"ice\r\nbonjour\nmsg nobody x\r\n\n/li")
    assert proto.lines == [b"/pseudo alice", b"bonjour", b"msg nobody x", b""]
    proto.dataReceived(b"st\n")
    assert proto.lines[-1] == b"/list"
    assert b"=>alice\n" in transport.value()


def test_max_length_is_max_line_and_an_overlong_line_keeps_the_connection() -> None:
    """MAX_LENGTH is --max-line; a line past it goes to lineLengthExceeded
    (whole, or its first bytes if it has not ended), the user is told once,
    and the connection stays, unlike LineReceiver's default."""
    chat = Chat(max_line=10, flood_rate=0)
    proto, transport = recorder(chat)
    assert proto.MAX_LENGTH == 10
    transport.clear()
    proto.dataReceived(b"0123456789\n" + b"x" * 11 + b"\n" + b"y" * 30)
    proto.dataReceived(b"y" * 30 + b"\nafter\n")
    assert proto.lines == [b"0123456789", b"after"]
    assert proto.exceeded == [b"x" * 11, b"y" * 30]
    error = wire.notice(wire.TOO_LONG.format(10))
    assert transport.value().count(error) == 2
    assert transport.connected


def test_pausing_holds_the_lines_until_resumed() -> None:
    """pauseProducing is LineReceiver's: the lines not handed out yet wait
    for resumeProducing, in order."""
    chat = Chat(flood_rate=0)
    proto, _ = recorder(chat)
    proto.dataReceived(b"/pseudo alice\n")
    proto.pauseProducing()
    proto.dataReceived(b"one\ntwo\nthr")
    assert proto.lines == [b"/pseudo alice"]
    proto.resumeProducing()
    assert proto.lines == [b"/pseudo alice", b"one", b"two"]
    proto.dataReceived(b"ee\n")
    assert proto.lines[-1] == b"three"


def test_what_the_framing_does_not_support_fails_loudly() -> None:
    """There is no raw mode and no line buffer to give away: setRawMode,
    setLineMode and clearLineBuffer raise rather than quietly do nothing,
    and the line under way is still the next line."""
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.send(b"bon")
    for unsupported in (
        alice.proto.setRawMode,
        alice.proto.setLineMode,
        alice.proto.clearLineBuffer,
    ):
        with pytest.raises(NotImplementedError):
            unsupported()
    assert isinstance(alice.proto, LineReceiver) and alice.proto.buffered == 3
    alice.send(b"jour\n")
    assert bob.take().endswith(chat.stamp() + b"-alice: bonjour\n")


def test_send_line_comes_after_the_public_lines_made_before_it() -> None:
    """sendLine goes the way of every write to the client: after the public
    lines it has not been given yet, which go first."""
    chat = Chat()
    alice, bob = chat.user("alice"), chat.user("bob")
    alice.take(), bob.take()
    alice.send(b"first\n")  # waits for the end of the reactor turn
    bob.proto.sendLine(b"second")
    assert bob.transport.value() == chat.stamp() + b"-alice: first\nsecond\n"


def test_only_the_fan_out_moves_a_member_s_cursor() -> None:
    """A member's place in the log of public lines (Session.seen) is written
    by chatproto/fanout.py alone (and set to -1 when a Session is made)."""
    writers = set()
    for path in SOURCES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = (
                    node.targets if isinstance(node, ast.Assign) else [node.target]
                )
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr == "seen":
                        writers.add((path.name, ast.unparse(node)))
    assert {name for name, _ in writers} == {"fanout.py", "session.py"}
    assert [code for name, code in writers if name == "session.py"] == [
        "self.seen = -1"
    ]


def test_what_follows_a_quit_in_the_same_read_is_not_kept() -> None:
    """A user gone mid-read (/quit, then more bytes than a line may hold,
    found by the property test): the rest of the read is dropped, not held."""
    chat = Chat(max_line=64)
    alice = chat.user("alice")
    alice.send(b"/quit\n" + b"A" * 70)
    assert alice.proto.buffered == 0
    assert alice.take().endswith(wire.BYE)


def inbox(**config: Any) -> tuple[Inbox, Clock]:
    """An Inbox on a fake clock, started with a full bucket."""
    clock = Clock()
    clock.advance(100)
    limits = SimpleNamespace(config=ServerConfig(**config), clock=clock)
    box = Inbox(limits)
    box.start(limits.config.flood_burst, clock.seconds())
    return box, clock


def test_the_inbox_lets_a_burst_out_then_one_line_per_token() -> None:
    """flood_burst lines at once, then each waits for its token; the caller
    is called back when the next token is there."""
    box, clock = inbox(flood_burst=2, flood_rate=4.0)
    resumed: list[bool] = []
    for line in (b"one", b"two", b"three"):
        box.add(line)
    assert box.waiting == (3, 11)
    assert [box.take(lambda: resumed.append(True)) for _ in range(3)] == [
        b"one",
        b"two",
        None,
    ]
    assert box.waiting == (1, 5) and not box.flooded()
    clock.advance(0.24)
    assert not resumed
    clock.advance(0.01)
    assert resumed == [True]
    assert box.take(lambda: None) == b"three"
    assert box.waiting == (0, 0) and box.lines is None


def test_the_inbox_counts_an_over_long_line_in_tokens_and_bounds() -> None:
    """An over-long line waits as one entry that costs a token per max_line
    bytes; past flood_queue entries, the inbox is flooded."""
    box, _ = inbox(max_line=10, flood_queue=3, flood_burst=1)
    box.too_long(25)  # the line, and 10 bytes more
    assert box.waiting == (2, 3)
    assert not box.skipped(10) and box.skipped(1)  # 11 bytes: one token more
    assert box.waiting == (3, 5) and not box.flooded()
    box.add(b"x")
    assert box.flooded()


def test_a_closed_inbox_drops_its_lines_and_its_timer() -> None:
    """Closing gives back what is left of the bucket, and leaves no call."""
    box, clock = inbox(flood_burst=1, flood_rate=1.0)
    box.add(b"one")
    box.add(b"two")
    assert box.take(lambda: None) == b"one"
    assert box.take(lambda: None) is None
    assert clock.getDelayedCalls()
    assert box.close() == (0.0, 100.0)
    assert not clock.getDelayedCalls() and box.waiting == (0, 0)
