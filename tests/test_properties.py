"""Property: whatever bytes clients send, split however, the server holds.

Several clients send arbitrary bytes, mixed with pieces of the protocol so
that they register, chat and quit, cut at arbitrary points, while time
passes; readers stall, and with a small output bound they are cut in the
middle of a pass, while lines and departures join it. After every step:
nothing raised, no control character reached any client, nicknames are
unique whatever their case, each departure was announced once to each user
present, and each connection's memory is bounded.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatproto.metrics import REFUSAL_INTERVAL
from chatproto.registry import Reach
from chatproto.server import ChatFactory
from chatproto.session import Session
from chatproto.testing import Chat, Client

CONFIG: dict[str, Any] = dict(
    max_line=64,
    flood_burst=3,
    flood_rate=2,
    flood_queue=8,
    flood_queue_bytes=256,
    max_per_ip=0,
    ping_interval=10,
    max_missed_pings=2,
    registration_timeout=30,
    max_output=4096,
)

PIECES = [
    b"/pseudo ",
    b"/pseudo\n",
    b"alice",
    b"Alice",
    b"bob",
    b"BOB",
    b"x",
    b"msg ",
    b"msg alice ",
    b"msg bob ",
    b"/list\n",
    b"/quit\n",
    b"/help\n",
    b"/nope\n",
    b"pong\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"\x1b[2J",
    b"\x1b]0;t\x07",
    b"\xc2\x9b",
    b"\xe2\x80\xae",
    b"\xff\xfe",
    b"\xc3",
    b"\x00",
    b"\x7f",
    b"salut",
    b" ",
    b"\t",
    b"A" * 70,
]

chunks = st.lists(
    st.one_of(st.sampled_from(PIECES), st.binary(max_size=12)), min_size=1, max_size=6
).map(b"".join)

nicknames = st.sampled_from(
    [b"alice", b"Alice", b"bob", b"carol", b"dave", b"eve", b"x", b"bad nick"]
)

CLIENTS = 6
who = st.integers(0, CLIENTS - 1)

events = st.lists(
    st.one_of(
        st.tuples(st.just("register"), who, nicknames),
        st.tuples(st.just("register"), who, nicknames),
        st.tuples(st.just("send"), who, chunks),
        st.tuples(st.just("send"), who, chunks.map(lambda c: c + b"\n")),
        # a paste: many lines in one read, most of them past the burst
        st.tuples(st.just("send"), who, st.integers(2, 12).map(b"line\n".__mul__)),
        st.tuples(st.just("advance"), st.sampled_from([0.2, 1.0, 5.0, 10.0, 31.0])),
        st.tuples(st.just("turn"), st.just(0)),
        st.tuples(st.just("drop"), who),
        st.tuples(st.just("slow"), who),
        st.tuples(st.just("slow"), who),
    ),
    max_size=50,
)

ANNOUNCED = re.compile(rb"^\[\d+\.\d+\.\d+\]-D\xc3\xa9connection de (\S+)$")
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class World:
    def __init__(self, **config: Any) -> None:
        self.chat = Chat(**{**CONFIG, **config})
        self.clients = [self.chat.connect() for _ in range(CLIENTS)]
        self.expected: dict[int, Counter[bytes]] = {}
        self.seen: dict[int, Counter[bytes]] = {}
        self.pending: dict[int, bytes] = {}
        factory: ChatFactory = self.chat.factory
        depart = factory.depart

        def recording_depart(
            session: Session, reach: Reach = Reach.EVERYWHERE, reason: str = "lost"
        ) -> None:
            assert session.nick is not None
            for other in factory.sessions.values():
                if other is not session:
                    self.expected.setdefault(id(other), Counter())[
                        session.nick.encode()
                    ] += 1
            depart(session, reach, reason)

        factory.depart = recording_depart  # type: ignore[method-assign]

    def step(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "register":
            self.client(event[1]).send(b"/pseudo " + event[2] + b"\n")
        elif kind == "send":
            client = self.client(event[1])
            client.send(event[2])
        elif kind == "advance":
            self.chat.advance(event[1])
        elif kind == "turn":  # one reactor turn: a pass may be half done
            self.chat.turn()
        elif kind == "drop":
            self.client(event[1]).transport.loseConnection()
        elif kind == "slow":
            client = self.client(event[1])
            if client.connected:
                client.buffer_full()

    def client(self, index: int) -> Client:
        if not self.clients[index].connected:
            self.read(self.clients[index])
            self.clients[index] = self.chat.connect()
        return self.clients[index]

    def read(self, client: Client) -> None:
        """Check everything this client was sent since the last look."""
        data = self.pending.pop(id(client.proto), b"") + client.transport.value()
        client.transport.clear()
        *lines, rest = data.split(b"\n")
        self.pending[id(client.proto)] = rest
        for line in lines:
            text = line.decode("utf-8")  # raises if invalid UTF-8 got through
            assert not FORBIDDEN.search(text), repr(text)
            match = ANNOUNCED.match(line)
            if match:
                self.seen.setdefault(id(client.session), Counter())[match[1]] += 1

    def check(self, final: bool = False) -> None:
        """The invariants; a departure line may still be on its way, unless
        this is the final check: then each was seen exactly once."""
        factory = self.chat.factory
        for client in self.clients:
            self.read(client)
            assert client.proto.buffered <= CONFIG["max_line"] + 1
            lines, size = client.session.waiting
            assert lines <= CONFIG["flood_queue"]
            assert size <= CONFIG["flood_queue_bytes"]
        nicks = [p.nick for p in factory.sessions.values()]
        assert all(n is not None for n in nicks)
        keys = [n.lower() for n in nicks if n is not None]
        assert len(keys) == len(set(keys)) == len(factory.sessions)
        assert set(keys) == set(factory.sessions)
        registry: Any = factory.registry
        assert len(registry) == len(keys)
        for session in factory.sessions.values():
            output: Any = session.connection
            assert output.transport.connected
        for key, seen in self.seen.items():
            assert seen <= self.expected.get(key, Counter()), "announced twice"
        if final:
            for key, counts in self.expected.items():
                assert self.seen.get(key, Counter()) == counts


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(events, st.sampled_from([1, 2, 512]), st.sampled_from([4096, 20]))
def test_the_server_holds_whatever_clients_send(
    script: list[tuple[Any, ...]], chunk: int, max_output: int
) -> None:
    """Also with passes of 1 and 2 users per reactor turn (pass_size), so
    that lines come while a pass is half done, and with an output bound of
    less than a line, so that stalled readers are cut in the middle of a
    pass (their departures join it): each departure still reaches each user
    present once."""
    world = World(pass_size=chunk, max_output=max_output)
    for event in script:
        world.step(event)
        world.check()
    world.chat.advance(0)
    world.check(final=True)
    for client in world.clients:
        client.transport.loseConnection()
    world.check(final=True)
    assert world.chat.factory.sessions == {}
    # the log of refused nicknames says its last summary, then stops
    for _ in range(2):
        world.chat.advance(REFUSAL_INTERVAL)
    assert world.chat.clock.getDelayedCalls() == []
