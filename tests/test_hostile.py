"""A hostile user against the single-process server: regressions for the
defects a security review found. Each drives the real factory over in-memory
transports and a fake clock, as chatproto.testing does.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address

from chatproto.server import ChatServerProtocol
from chatproto.testing import Chat, Client, RecordingTransport, nick_registered

LINE = b"y" * 3999 + b"\n"  # a legal line: under max_line (4096)


class KernelTransport(RecordingTransport):
    """A TCP transport whose peer reads at full speed: the kernel takes up to
    C{window} bytes per reactor turn, the rest waits in C{dataBuffer} as in
    Twisted's own transports (so that C{unsent} can measure it), and the
    producer is paused past 64 KiB and resumed when the buffer empties."""

    def __init__(self, window: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = window
        self.in_kernel = 0
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0

    def write(self, data: bytes) -> None:
        take = max(0, min(len(data), self.window - self.in_kernel))
        self.in_kernel += take
        self.dataBuffer += data[take:]
        super().write(data)
        if len(self.dataBuffer) > 65536 and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The peer read what the kernel held; the kernel takes more."""
        take = min(len(self.dataBuffer), self.window)
        self.dataBuffer = self.dataBuffer[take:]
        self.in_kernel = take
        if not self.dataBuffer and self.producer is not None:
            self.producer.resumeProducing()


def connect_with(chat: Chat, transport: RecordingTransport, host: str) -> Client:
    peer = IPv4Address("TCP", host, 50000)
    proto = chat.factory.buildProtocol(peer)
    assert isinstance(proto, ChatServerProtocol)
    transport.protocol = proto
    proto.makeConnection(transport)
    return Client(proto, transport, chat.clock)


def test_reconnecting_does_not_refill_the_flood_burst() -> None:
    """One address that connects, sends its burst and leaves, forty times in
    the same second, gets no more lines to others than the flood limits allow
    one address (16 connections of 5 lines): on a real server, one address
    did this at 1,200 public lines per second, and cut every user whose
    link carried less than that as a slow reader."""
    chat = Chat(flood_burst=5, flood_rate=2, max_per_ip=16, ping_interval=0)
    bob = chat.user("bob", host="192.0.2.1")
    bob.take()
    for n in range(40):
        attacker = chat.connect("203.0.113.9")
        attacker.send(b"/pseudo m%d\n" % n + LINE * 5)
        attacker.transport.loseConnection()
        chat.clock.advance(0.01)
    public = [line for line in bob.lines() if b": yyy" in line]
    assert len(public) <= 16 * 5, len(public)


def test_a_reader_that_keeps_up_is_not_cut_by_one_busy_turn() -> None:
    """Eighty users send one legal burst each in the same reactor turn (1.6 MB).
    A reader whose kernel takes 256 KiB per turn and who reads everything is
    no slow reader: it must stay, and get every line. (On the real server,
    300 bursts in one turn cut 20 of 20 readers reading at full speed on
    loopback, and took the process from 50 to 485 MB.)"""
    chat = Chat(max_per_ip=0, join_notice_limit=0, ping_interval=0)
    transport = KernelTransport(window=256 * 1024)
    reader = connect_with(chat, transport, "192.0.2.7")
    reader.send(b"/pseudo reader\n")
    assert nick_registered(reader.take(), "reader")
    senders = [chat.user(f"s{i}", host=f"198.51.100.{i}") for i in range(80)]
    chat.advance(5)
    transport.drain()
    reader.take()
    for sender in senders:
        sender.send(LINE * 5)
    for _ in range(20):  # turns go by; the reader reads all it can each time
        chat.clock.advance(0)
        transport.drain()
    assert reader.connected
    assert reader.take().count(b": yyy") == 80 * 5


def test_no_write_after_goodbye_when_the_registration_timer_fires() -> None:
    """An unregistered client sends /quit but its close takes time (it does
    not read): when the registration timer fires, nothing follows
    Deconnexion, and no second abort timer is left behind."""
    chat = Chat(registration_timeout=5, close_timeout=60)
    client = chat.connect()
    client.take()
    client.transport.loseConnection = lambda: None  # type: ignore[method-assign]
    client.send(b"/quit\n")
    assert client.take() == b"Deconnexion\n"
    chat.advance(5)
    assert client.take() == b""
    assert len(chat.clock.getDelayedCalls()) == 1, "one close timer"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_unicode_line_separators_never_reach_another_user(
    chat: Chat, separator: str
) -> None:
    """A line separator would let bob show alice a line that seems to come
    from carol: [H.M.S]-bob: hi<LS>[H.M.S]-carol: give me your password."""
    alice, bob = chat.user("alice"), chat.user("bob")
    chat.user("carol")
    alice.take()
    forged = f"hi{separator}[1.2.3]-carol: donne-moi ton mot de passe".encode()
    bob.send(forged + b"\n")
    bob.send(b"msg alice " + forged + b"\n")
    received = alice.take().decode()
    assert received.count("\n") == 2
    assert len(received.splitlines()) == 2, repr(received)


def test_a_pong_flood_counts_as_flooding() -> None:
    """An answer to a ping is one pong, not thousands a second: a client
    that sends far more pongs than it got pings is a flooder, registered or
    not."""
    chat = Chat(flood_burst=5, flood_rate=2, flood_queue=20)
    stranger = chat.connect()
    alice = chat.user("alice")
    stranger.send(b"pong\n" * 10_000)
    alice.send(b"pong\n" * 10_000)
    assert not stranger.connected
    assert not alice.connected


@pytest.mark.parametrize("last_words", [b"salut\n/quit\n", b"/quit\n"])
def test_who_quits_still_gets_the_lines_made_before(last_words: bytes) -> None:
    """Lines made before a user left still reach it (ChatFactory.depart),
    whether or not it also spoke in that turn."""
    chat = Chat(flood_rate=0)
    alice, bob = chat.user("alice"), chat.user("bob")
    chat.advance(0)
    alice.take()
    bob.send(b"avant ton depart\n")
    alice.send(last_words)
    assert alice.take() == chat.stamp() + b"-bob: avant ton depart\nDeconnexion\n"


@pytest.mark.parametrize(
    "nick",
    [b"ALICE", b"alice ", b"\talice", b"alice\xc2\xa0", b"al\x00ice", "аlice".encode()],
)
def test_nobody_passes_for_alice(chat: Chat, nick: bytes) -> None:
    """Case, surrounding white space and look-alike letters do not give
    anybody alice's name."""
    chat.user("alice")
    mallory = chat.connect()
    mallory.take()
    mallory.send(b"/pseudo " + nick + b"\n")
    answer = mallory.take()
    assert answer in (
        b"Attention ce pseudo existe deja\n",
        b"Rentrez un pseudo correct\n",
    )


def test_no_user_line_equals_a_line_the_ruby_client_exits_on(chat: Chat) -> None:
    """A user named like an exit line, and a user typing exit lines, never
    make the server send another user one of them as a whole line."""
    alice = chat.user("alice")
    mallory = chat.user("Deconnexion")
    alice.take()
    for line in (
        b"Deconnexion",
        b"Rentrez un pseudo correct",
        b"msg alice Deconnexion",
        b"/Deconnexion",
        b"msg Deconnexion x",
    ):
        chat.advance(1)
        mallory.send(line + b"\n")
    mallory.send(b"/quit\n")
    exits = {b"Rentrez un pseudo correct", b"Attention ce pseudo existe deja"}
    exits.add(b"Deconnexion")
    received = alice.take().split(b"\n")
    assert not exits.intersection(received), received
