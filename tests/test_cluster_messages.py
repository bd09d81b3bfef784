"""The messages nodes tell each other (chatproto/cluster_messages.py):
every kind survives encode then decode, whatever it holds, and bytes that
are no message raise MalformedMessage, never anything else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatproto.cluster_messages import (
    Answer,
    BanLifted,
    BanShared,
    Channel,
    Joined,
    Kick,
    LateDeparture,
    MalformedMessage,
    Message,
    Private,
    Public,
    ReapedDeparture,
    RoomLines,
    decode,
    encode,
)

ids = st.text("0123456789abcdefxyz", min_size=1, max_size=12).map(str.encode)
keys = st.from_regex(r"[a-z0-9_-]{2,12}", fullmatch=True)
lines = st.binary(max_size=200)
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=60)
addresses = st.from_regex(r"[0-9a-f.:/]{1,43}", fullmatch=True)
nicks = st.from_regex(r"[A-Za-z0-9_-]{2,12}", fullmatch=True)

public = st.one_of(
    st.builds(Public, ids, lines),
    st.builds(
        LateDeparture,
        ids,
        st.from_regex(rb"[0-9]{1,13}-[0-9]{1,3}", fullmatch=True),
        lines,
    ),
    st.builds(ReapedDeparture, ids, ids, lines),
)
node = st.one_of(
    st.builds(Private, keys, lines),
    st.builds(
        Kick,
        keys,
        st.integers(0, 10**6),
        keys,
        st.none() | addresses,
        texts,
    ),
    st.builds(Answer, keys, keys, lines),
    st.builds(
        Joined,
        st.from_regex(r"[a-z0-9_-]{1,24}", fullmatch=True),
        nicks,
        st.lists(nicks, min_size=1, max_size=5),
        st.none() | texts.filter(lambda t: t != "" and "\n" not in t),
    ),
)
bans = st.one_of(
    st.builds(BanShared, ids, addresses, lines),
    st.builds(BanLifted, ids, addresses),
)


@given(public)
def test_public_round_trip(message: Message) -> None:
    assert decode(Channel.PUBLIC, encode(message)) == message


@given(node)
def test_node_round_trip(message: Message) -> None:
    assert decode(Channel.NODE, encode(message)) == message


@given(st.builds(RoomLines, ids, lines))
def test_room_round_trip(message: Message) -> None:
    assert decode(Channel.ROOM, encode(message)) == message


@given(bans)
def test_bans_round_trip(message: Message) -> None:
    assert decode(Channel.BANS, encode(message)) == message


@given(st.sampled_from(Channel), st.binary(max_size=100))
def test_any_bytes_decode_or_raise_malformed(channel: Channel, data: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode(channel, data)


def test_the_bytes_stay_those_of_before() -> None:
    """No byte on the wire changed: nodes of the version before read these."""
    assert encode(Public(b"n1", b"a\nb\n")) == b"n1 a\nb\n"
    assert encode(Private("bob", b"hi\n")) == b"bob hi\n"
    kick = Kick("bob", 10, "alice", "192.0.2.1", "spam spam")
    assert encode(kick) == b"!bob+10 alice 192.0.2.1 spam spam"
    assert encode(Kick("bob", 0, "alice", None, "")) == b"!bob alice - "
    assert encode(Answer("alice", "bob", b"done\n")) == b"?alice+bob done\n"
    assert (
        encode(BanShared(b"n1", "1.2.3.4", b"9.5\ta\tb")) == b"n1 +1.2.3.4\t9.5\ta\tb"
    )
    assert encode(BanLifted(b"n1", "1.2.3.4")) == b"n1 -1.2.3.4"
    assert decode(Channel.PUBLIC, b"n1#17-0 x\n") == LateDeparture(
        b"n1", b"17-0", b"x\n"
    )
    assert decode(Channel.PUBLIC, b"n1@n2 x\n") == ReapedDeparture(b"n1", b"n2", b"x\n")


@pytest.mark.parametrize(
    ("channel", "data"),
    [
        (Channel.PUBLIC, b"n1"),
        (Channel.PUBLIC, b" line"),
        (Channel.NODE, b"!bob+x alice - spam"),
        (Channel.NODE, b"?alice done"),
        (Channel.BANS, b"n1 *1.2.3.4"),
        (Channel.BANS, b"n1 +1.2.3.4"),
    ],
)
def test_malformed(channel: Channel, data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(channel, data)
