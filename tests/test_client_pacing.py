"""The client never loses what the user sent: pacing, flood cuts, cluster
outages and error lines.

Most tests join a client L{ClientSession} to chatproto's real server factory
(chatproto.testing's Chat, default flood control) over two StringTransports,
on one task.Clock: L{Loopback.run} lets the clock go in small steps and
carries the bytes both ways after each.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from chatproto.client.events import Disconnected, Event
from chatproto.client.protocol import (
    ChatClientFactory,
    ChatClientProtocol,
    Timings,
    TokenBucket,
)
from chatproto.client.servers import Dialect
from chatproto.client.session import ClientSession
from chatproto.registry import ClusterUnreachable, MemoryRegistry
from chatproto.testing import Chat, Client
from tests.test_client_session import UI

RUBY_WELCOME = (
    b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
)
RUBY_PROMPT = b"Entrez votre pseudo: \n"
RUBY_LIST = (
    b"----------------------\nUtilisateurs en ligne:\n=>bob\n----------------------\n"
)
STEP = 0.1


class Loopback:
    """An endpoint whose connections reach chatproto's real server factory
    in memory; it keeps every line the client wrote, with the time."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.clock = chat.clock
        self.pairs: list[
            tuple[Client, ChatClientProtocol, StringTransportWithDisconnection]
        ] = []
        self.written: list[tuple[float, bytes]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Protocol]:
        server = self.chat.connect("192.0.2.50")
        proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 7000))
        assert isinstance(proto, ChatClientProtocol)
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
        self.pairs.append((server, proto, transport))
        self.pump()
        return succeed(proto)

    def pump(self) -> None:
        """Carry bytes both ways, and each close, until nothing moves."""
        moved = True
        while moved:
            moved = False
            for server, proto, transport in self.pairs:
                down = server.take()
                if down and transport.connected:
                    proto.dataReceived(down)
                    moved = True
                if not server.connected and transport.connected:
                    transport.loseConnection()  # after the last bytes
                    moved = True
                up = transport.value()
                transport.clear()
                if up and server.connected:
                    now = self.clock.seconds()
                    self.written += [(now, line) for line in up.splitlines()]
                    server.send(up)
                    moved = True
                if not transport.connected and server.connected:
                    server.transport.loseConnection()
                    moved = True

    def run(self, seconds: float, peers: tuple[Client, ...] = ()) -> None:
        """Let C{seconds} pass, stopping at each timer that falls due (and
        at least every STEP); C{peers} answer pings."""
        end = self.clock.seconds() + seconds
        while (now := self.clock.seconds()) < end:
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            until = min([end, now + STEP, *(t for t in due if t > now)])
            self.clock.advance(max(until - now, 1e-6))
            self.pump()
            for peer in peers:
                if b"ping\n" in peer.transport.value():
                    peer.send(b"pong\n")

    def user_lines(self) -> list[bytes]:
        return [line for _, line in self.written if line != b"pong"]


class Outage(MemoryRegistry):
    """A registry that cannot answer a claim while C{down}."""

    down = False

    def claim(self, nick: str) -> Deferred[str]:
        if self.down:
            return fail(ClusterUnreachable("store unreachable"))
        return super().claim(nick)


def pipe_session(
    chat: Chat, lines: list[str], timings: Timings | None = None
) -> tuple[ClientSession, Loopback, list[tuple[int, str | None]]]:
    """What the pipe mode does with C{lines}: each one, then /quit."""
    loopback = Loopback(chat)
    session = ClientSession(
        chat.clock,
        cast(IStreamClientEndpoint, loopback),
        "loopback",
        timings=timings or Timings(),
    )
    session.ui = UI()
    ended: list[tuple[int, str | None]] = []
    session.done.addCallback(ended.append)
    session.start()
    for line in lines:
        session.user_line(line)
    session.user_quit()
    loopback.pump()
    return session, loopback, ended


def connected(
    view: UI,
) -> tuple[ChatClientProtocol, StringTransportWithDisconnection]:
    """A client protocol alone on a StringTransport, for scripted bytes."""
    proto = ChatClientFactory(view, Clock()).buildProtocol(None)
    transport = StringTransportWithDisconnection()
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto, transport


def public_texts(data: bytes) -> list[str]:
    return [
        line.split(b"-bob: ", 1)[1].decode()
        for line in data.splitlines()
        if b"-bob: " in line
    ]


# -- Pacing ---------------------------------------------------------------------------


def test_forty_piped_lines_reach_the_others_at_burst_then_rate(chat: Chat) -> None:
    """The issue's example, '/pseudo', 'bob', then 1 to 40, against the
    server's default flood control: carol gets all 40 in order, the client
    leaves with status 0, and it wrote its first 4 lines at once, then one
    every 1/1.9 s, never sooner."""
    carol = chat.user("carol", host="192.0.2.9")
    lines = ["/pseudo", "bob", *map(str, range(1, 41))]
    _, loopback, ended = pipe_session(chat, lines)
    received = b""
    for _ in range(30):
        loopback.run(1, peers=(carol,))
        received += carol.take()
        if ended:
            break
    assert ended == [(0, None)]
    assert public_texts(received) == [str(n) for n in range(1, 41)]
    assert "Trop de messages" not in received.decode()
    assert loopback.user_lines() == [line.encode() for line in lines] + [b"/quit"]
    times = [at for at, line in loopback.written if line != b"pong"]
    start = times[0]
    assert times[:4] == [start] * 4
    for i, at in enumerate(times[4:], start=4):
        earliest = start + (i - 3) / 1.9
        assert earliest - 1e-6 <= at <= earliest + STEP + 1e-6


def test_a_paste_is_split_into_lines_and_each_is_paced() -> None:
    """A terminal paste arrives as one text with newlines: each line is
    its own line to the server, so the bucket counts it, and the prompt can
    say how many wait."""
    chat = Chat()
    carol = chat.user("carol", host="192.0.2.9")
    loopback = Loopback(chat)
    session = ClientSession(
        chat.clock, cast(IStreamClientEndpoint, loopback), "loopback"
    )
    session.ui = UI()
    session.start()
    session.user_line("/pseudo bob")
    loopback.pump()
    session.user_line("\n".join(f"line {n}" for n in range(1, 9)) + "\r")
    loopback.pump()
    assert session.waiting == 5  # 4 lines at once, and '/pseudo bob' was one
    loopback.run(3, peers=(carol,))
    assert session.waiting == 0
    assert public_texts(carol.take()) == [f"line {n}" for n in range(1, 9)]


def test_pongs_are_never_paced() -> None:
    """A ping is answered at once even when the user's lines wait their
    turn: the server does not count the pong."""
    view = UI()
    proto, transport = connected(view)
    proto.dataReceived(RUBY_WELCOME)
    proto.register("bob")
    proto.dataReceived(RUBY_PROMPT)
    proto.dataReceived(b"Bienvenue bob\n" + RUBY_LIST)
    for n in range(10):
        proto.send(f"line {n}")
    transport.clear()
    assert proto.waiting == 8
    proto.dataReceived(b"ping\n")
    assert transport.value() == b"pong\n"
    assert proto.dialect is Dialect.CHATPROTO


def test_no_pacing_once_the_server_shows_it_is_the_ruby_one() -> None:
    """The Ruby server registers with the user list alone (no 'Bienvenue
    NICK') and has no flood control: the client then sends at once."""
    proto, transport = connected(UI())
    proto.dataReceived(RUBY_WELCOME)
    proto.register("bob")
    proto.dataReceived(RUBY_PROMPT)
    proto.dataReceived(RUBY_LIST)
    transport.clear()
    for n in range(30):
        proto.send(f"line {n}")
    assert transport.value().count(b"\n") == 30
    assert proto.dialect is Dialect.RUBY


def test_token_bucket_burst_then_rate() -> None:
    """4 lines at once, then one every 1/1.9 s."""
    bucket = TokenBucket(4, 1.9)
    for _ in range(4):
        assert bucket.wait(0.0) == 0.0
        bucket.spend(0.0)
    assert abs(bucket.wait(0.0) - 1 / 1.9) < 1e-9
    assert bucket.wait(1 / 1.9) == 0.0


# -- What was not delivered -----------------------------------------------------------


def test_cut_for_flooding_is_status_1_with_the_lines_never_sent() -> None:
    """A server stricter than the client's pacing (1 line at once, 1 waiting
    at most) cuts it: status 1, and the sentence counts the lines that were
    still waiting in the client."""
    chat = Chat(flood_burst=1, flood_rate=0.5, flood_queue=1)
    lines = ["/pseudo", "bob", *map(str, range(1, 11))]
    _, loopback, ended = pipe_session(chat, lines)
    loopback.run(5)
    assert ended == [
        (
            1,
            "The server disconnected the client for sending too fast: 6 lines"
            " never sent, and the last lines sent may be lost too.",
        )
    ]
    assert b"/quit" not in loopback.user_lines()


def test_error_lines_make_the_status_1_and_the_session_goes_on(chat: Chat) -> None:
    """A private line to an absent user and an unknown command are
    answered with error lines: the session goes on (the public line after
    them arrives), and the end says 2 lines were not delivered."""
    carol = chat.user("carol", host="192.0.2.9")
    lines = ["/pseudo bob", "msg zoe hello", "/frob", "still here"]
    session, loopback, ended = pipe_session(chat, lines)
    loopback.run(3)
    assert public_texts(carol.take()) == ["still here"]
    assert ended == [
        (
            1,
            "Left the chat, but 2 lines were not delivered (the server refused them).",
        )
    ]
    assert isinstance(session.ui, UI)
    shown = [line for event in session.ui.events for line in event.lines]
    assert "Erreur : zoe n'est pas connecté" in shown


# -- Cluster outages ------------------------------------------------------------------


def test_outage_the_nickname_is_tried_again_until_it_is_taken(chat: Chat) -> None:
    """While the registry is down the nickname is refused as unavailable;
    the client tries it again after 0.5 s, then 1 s more, holding the
    user's lines; once the registry is back it registers and every line
    goes, status 0."""
    outage = Outage()
    chat.factory.room.registry = outage
    carol = chat.user("carol", host="192.0.2.9")
    outage.down = True
    _, loopback, ended = pipe_session(chat, ["/pseudo", "bob", "one", "two"])
    start = loopback.clock.seconds()
    loopback.run(2)
    outage.down = False
    loopback.run(5, peers=(carol,))
    tries = [at - start for at, line in loopback.written if line == b"bob"]
    assert [round(t, 1) for t in tries] == [0.0, 0.5, 1.5, 3.5]
    assert public_texts(carol.take()) == ["one", "two"]
    assert loopback.user_lines() == [b"/pseudo"] + [b"bob"] * 4 + [
        b"one",
        b"two",
        b"/quit",
    ]
    assert ended == [(0, None)]


def test_outage_longer_than_the_timeout_is_status_1(chat: Chat) -> None:
    """A registry down for longer than --timeout: the client stops trying
    before the next wait would pass it, says so, and has sent none of the
    user's lines (not one was taken for a nickname)."""
    outage = Outage()
    outage.down = True
    chat.factory.room.registry = outage
    _, loopback, ended = pipe_session(
        chat, ["/pseudo", "bob", "one"], Timings(timeout=10)
    )
    loopback.run(15)
    assert ended == [
        (
            1,
            "The server could not register the nickname 'bob': registration"
            " stayed unavailable for 7.5 seconds (5 tries).",
        )
    ]
    assert loopback.user_lines() == [b"/pseudo"] + [b"bob"] * 5


def test_events_are_shown_during_an_outage(chat: Chat) -> None:
    """Each refusal is shown as the server wrote it."""
    chat.factory.room.registry = outage = Outage()
    outage.down = True
    session, loopback, _ = pipe_session(chat, ["/pseudo bob"], Timings(timeout=1))
    loopback.run(2)
    assert isinstance(session.ui, UI)
    events: list[Event] = session.ui.events
    refusals = [
        e
        for e in events
        if e.lines
        == ("Erreur : inscription impossible pour le moment, réessayez plus tard",)
    ]
    assert len(refusals) == 2


def test_a_line_sent_before_registering_is_not_delivered(chat: Chat) -> None:
    """The server answers a line sent before registering with its welcome
    again: nobody got it, so the end says so, status 1."""
    _, loopback, ended = pipe_session(chat, ["hello", "/pseudo bob", "fine"])
    loopback.run(2)
    assert ended == [
        (
            1,
            "Left the chat, but 1 line was not delivered (the server refused it).",
        )
    ]
    _, loopback, ended = pipe_session(Chat(), ["hello"])
    loopback.run(2)
    assert ended == [
        (
            1,
            "Left the chat, but 1 line was not delivered (the server refused it).",
        )
    ]


def test_the_ruby_welcome_after_an_early_line_then_after_quit() -> None:
    """The Ruby server answers both a line and /quit before registration
    with its welcome: the first is the lost line, the second the goodbye."""
    view = UI()
    proto, transport = connected(view)
    proto.dataReceived(RUBY_WELCOME)
    proto.send("hello")
    proto.quit()
    assert transport.value() == b"hello\n/quit\n"
    proto.dataReceived(RUBY_WELCOME)
    assert transport.connected
    proto.dataReceived(RUBY_WELCOME)
    assert not transport.connected
    assert view.events[-1] == Disconnected(
        ok=False,
        reason="Left the chat before registering, but 1 line was not delivered"
        " (the server refused it).",
    )


def test_cut_for_flooding_with_nothing_waiting_still_says_so() -> None:
    """Cut while no line waits here: status 1 all the same, and the
    sentence says the last lines may be lost."""
    view = UI()
    proto, transport = connected(view)
    proto.dataReceived(RUBY_WELCOME)
    proto.send("/pseudo bob")
    proto.dataReceived(b"Bienvenue bob\n" + RUBY_LIST)
    proto.send("hello")
    proto.quit()
    proto.dataReceived("Trop de messages trop vite : vous êtes déconnecté\n".encode())
    assert not transport.connected
    assert view.events[-1] == Disconnected(
        ok=False,
        reason="The server disconnected the client for sending too fast: the"
        " last lines sent may not have been delivered.",
    )
