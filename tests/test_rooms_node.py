"""Rooms on one node of a cluster, over a fake clock: the real ClusterNode,
RedisRegistry, ChatFactory and Rooms, with tests/test_cluster_stall.py's
double of the Redis connections (its answers the test gives). What the node
sends to Redis for its rooms, which rooms' channels it hears, the order of
its lines, and what it does out of the cluster, after a stall, and back."""

from __future__ import annotations

from typing import Any

from chatproto import wire
from chatproto.cluster_membership import NodeState
from chatproto.cluster_redis import (
    RENEW,
    ROOM_COUNTS,
    ROOM_JOIN,
    ROOM_PART,
    ROOM_READ,
    ROOM_SYNC,
    ROOM_TOPIC,
)
from chatproto.registry import ClusterUnreachable
from chatproto.testing import Client
from tests.test_cluster_stall import CONFIG, NODE, PUBLIC, Cluster

ROOM = b"chatproto:test:0:room:r"
UNAVAILABLE = wire.notice(wire.ROOMS_UNAVAILABLE)


class Rooms:
    """What Redis holds of the rooms, as the scripts would keep it, for the
    node "here" and the members of other nodes the test adds."""

    def __init__(self, cluster: Cluster) -> None:
        self.members: dict[str, list[bytes]] = {}
        self.topics: dict[str, bytes] = {}
        self.heard = 0  # whether the node's subscription hears Joined
        answers = cluster.redis.answers
        answers[ROOM_JOIN] = self.join
        answers[ROOM_PART] = self.part
        answers[ROOM_READ] = lambda args: self.read(args[1])
        answers[ROOM_TOPIC] = self.topic
        answers[ROOM_SYNC] = 0

    def join(self, args: Any) -> list[Any]:
        _, node, name, nick, most, channel = args
        assert channel == NODE
        if name not in self.members and len(self.members) >= most:
            return [-2]
        self.members.setdefault(name, []).append(f"{node}\t{nick}".encode())
        return [*self.read(name), self.heard]

    def part(self, args: Any) -> int:
        _, node, nick, *names = args
        for name in names:
            self.members[name].remove(f"{node}\t{nick}".encode())
            if not self.members[name]:
                del self.members[name]
                self.topics.pop(name, None)
        return 0

    def read(self, name: str) -> list[Any]:
        return [list(self.members.get(name, [])), self.topics.get(name, b"")]

    def topic(self, args: Any) -> int:
        self.topics[args[1]] = args[2].encode()
        return 1


def joined(user: Client, room: str = "r") -> bytes:
    user.send(f"/join #{room}\n".encode())
    return user.take()


def names(*nicks: str) -> bytes:
    return wire.user_list(list(nicks), len(nicks))


def current(room: str) -> bytes:
    return wire.notice(wire.ROOM_CURRENT.format(room))


def cut_off(cluster: Cluster) -> None:
    cluster.redis.answers[RENEW] = ClusterUnreachable("no connection to Redis")
    cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.CUT_OFF


def back(cluster: Cluster) -> None:
    cluster.redis.answers[RENEW] = 1
    cluster.clock.advance(CONFIG.tick)
    assert cluster.node.state is NodeState.SERVING


def test_a_node_hears_a_room_while_it_has_members_in_it() -> None:
    """One subscription for the room's members here, made before the join
    script runs; the last to leave ends it; a join refused (--max-rooms,
    counted in Redis) leaves it as it was."""
    cluster = Cluster()
    redis = Rooms(cluster)
    redis.members["full"] = [b"there\tbob"]
    alice, ann = cluster.user("alice"), cluster.user("ann")
    alice.take()
    assert cluster.subscription.channels == []
    assert joined(alice) == current("r") + names("alice")
    assert cluster.subscription.channels == [ROOM]
    assert joined(ann) == current("r") + names("alice", "ann")
    assert cluster.subscription.channels == [ROOM]
    assert cluster.redis.last(ROOM_JOIN)[1:] == ("here", "r", "ann", 1000, NODE)
    alice.send(b"/part\n")
    assert cluster.redis.last(ROOM_PART)[1:] == ("here", "alice", "r")
    assert cluster.subscription.channels == [ROOM]
    ann.send(b"/quit\n")
    assert cluster.redis.last(ROOM_PART)[1:] == ("here", "ann", "r")
    assert cluster.subscription.channels == []
    assert redis.members == {"full": [b"there\tbob"]}


def test_a_member_comes_in_where_its_joined_message_falls_among_the_lines() -> None:
    """The join script publishes Joined on the node's channel: the room's
    lines heard before it are not the new member's, those after it are,
    whether the script's answer comes before it or after; the answer to
    /join comes at that point, with the room as the message says."""
    cluster = Cluster()
    redis = Rooms(cluster)
    redis.heard = 1
    alice, bob = cluster.user("alice"), cluster.user("bob")
    alice.take()
    joined(alice)
    assert alice.take() == b""  # the answer waits for Joined
    cluster.node.heard(ROOM, b"there [1.2.3]-#r zoe: avant\n")
    cluster.node.heard(NODE, b"#r+alice sujet\nzoe\nalice")
    cluster.node.heard(ROOM, b"there [1.2.3]-#r zoe: apres\n")
    cluster.clock.advance(0)
    topic = wire.notice(wire.ROOM_TOPIC.format("r", "sujet"))
    assert alice.take() == current("r") + names("zoe", "alice") + topic + (
        b"[1.2.3]-#r zoe: apres\n"
    )
    # Joined before the script's answer: the same.
    redis.heard = 0
    cluster.redis.held.add(ROOM_JOIN)
    joined(bob)
    cluster.node.heard(NODE, b"#r+bob \nzoe\nalice\nbob")
    cluster.node.heard(ROOM, b"there [1.2.3]-#r zoe: encore\n")
    cluster.redis.answer(ROOM_JOIN, [[b"there\tzoe"], b"", 1])
    cluster.clock.advance(0)
    assert bob.take() == current("r") + names("zoe", "alice", "bob") + (
        b"[1.2.3]-#r zoe: encore\n"
    )
    assert cluster.clock.getDelayedCalls() == [cluster.node.heartbeat.call]


def test_a_join_whose_message_is_not_heard_completes_from_the_answer() -> None:
    """The subscription dropped the Joined message: the script's answer
    completes the join after redis_timeout."""
    cluster = Cluster()
    redis = Rooms(cluster)
    redis.heard = 1
    alice = cluster.user("alice")
    alice.take()
    joined(alice)
    cluster.clock.advance(CONFIG.redis_timeout - 0.1)
    assert alice.take() == b""
    cluster.clock.advance(0.1)
    assert alice.take() == current("r") + names("alice")


def test_a_new_room_past_max_rooms_in_the_cluster_is_refused() -> None:
    cluster = Cluster()
    redis = Rooms(cluster)
    cluster.redis.answers[ROOM_JOIN] = [-2]
    alice = cluster.user("alice")
    alice.take()
    assert joined(alice, "new") == wire.notice(wire.TOO_MANY_ROOMS.format(1000))
    assert cluster.subscription.channels == []  # heard while it was tried only
    assert redis.members == {}
    alice.send(b"/list\n")  # still in the lobby
    assert alice.take().startswith(wire.RULE)


def test_lobby_and_room_lines_of_one_turn_go_out_in_the_order_made() -> None:
    """Each run of lines of one channel is one publish, in the order the
    lines were made: the other nodes hear them in that order."""
    cluster = Cluster()
    Rooms(cluster)
    alice, ann = cluster.user("alice"), cluster.user("ann")
    joined(alice)
    cluster.clock.advance(0)
    sent = cluster.redis.sent
    sent.clear()
    ann.send(b"one\n")
    ann.send(b"two\n")
    alice.send(b"three\n")
    ann.send(b"four\n")
    assert sent == []  # at the end of the turn
    cluster.clock.advance(0)
    stamp = cluster.factory.stamp().encode()
    assert sent == [
        (PUBLIC, b"here " + stamp + b"-ann: one\n" + stamp + b"-ann: two\n"),
        (ROOM, b"here " + stamp + b"-#r alice: three\n"),
        (PUBLIC, b"here " + stamp + b"-ann: four\n"),
    ]


def test_room_lines_heard_reach_the_members_here_after_the_lobby_lines_before() -> None:
    """A room's lines from another node go to its members here only, after
    the lobby's lines heard before them; lines of a room without members
    here, and this node's own lines coming back, go nowhere."""
    cluster = Cluster()
    Rooms(cluster)
    alice, ann = cluster.user("alice"), cluster.user("ann")
    joined(alice)
    ann.take()
    cluster.node.heard(PUBLIC, b"there [1.2.3]-bob: au hall\n")
    cluster.node.heard(ROOM, b"there [1.2.3]-#r bob: en salle\n")
    cluster.node.heard(ROOM, b"here [1.2.3]-#r alice: mon retour\n")
    cluster.node.heard(b"chatproto:test:0:room:other", b"there [1.2.3]-#other x\n")
    cluster.clock.advance(0)
    assert alice.take() == b"[1.2.3]-bob: au hall\n[1.2.3]-#r bob: en salle\n"
    assert ann.take() == b"[1.2.3]-bob: au hall\n"


def test_a_topic_is_kept_in_redis_and_read_from_it() -> None:
    cluster = Cluster()
    redis = Rooms(cluster)
    alice, bob = cluster.user("alice"), cluster.user("bob")
    cluster.factory.moderation.op_check.operating.add(alice.proto.session)
    joined(alice)
    joined(bob)
    cluster.clock.advance(0)
    alice.take()
    alice.send(b"/topic un sujet\n")
    assert cluster.redis.last(ROOM_TOPIC)[1:] == ("r", "un sujet")
    cluster.clock.advance(0)
    line = cluster.factory.stamp().encode() + b"-#r Sujet : un sujet (par alice)\n"
    assert alice.take() == line
    assert bob.take() == line
    redis.topics["r"] = b"un autre"  # set on another node
    bob.send(b"/topic\n")
    assert bob.take() == wire.notice(wire.ROOM_TOPIC.format("r", "un autre"))


def test_out_of_the_cluster_rooms_work_here_and_are_registered_again_once_back() -> (
    None
):
    """Cut off: the members here talk among themselves, /list and /rooms
    show this node's, a new room or a topic cannot be made, and a /part
    goes nowhere; back: Redis gets the node's members of rooms as they are
    now, in the order they came."""
    cluster = Cluster()
    Rooms(cluster)
    alice, ann, amy = cluster.user("alice"), cluster.user("ann"), cluster.user("amy")
    cluster.factory.moderation.op_check.operating.add(alice.proto.session)
    for user in (alice, ann, amy):
        joined(user)
    cluster.clock.advance(0)
    for user in (alice, ann, amy):
        user.take()
    cut_off(cluster)
    parts = cluster.redis.count(ROOM_PART)
    assert joined(alice, "new") == UNAVAILABLE
    alice.send(b"/topic x\n")
    assert alice.take() == UNAVAILABLE
    ann.send(b"/part\n")
    assert cluster.redis.count(ROOM_PART) == parts
    assert cluster.subscription.channels == [ROOM]  # alice, amy
    alice.send(b"entre nous\n")
    cluster.clock.advance(0)
    assert amy.take().endswith(b"-#r alice: entre nous\n")
    alice.take()
    alice.send(b"/list\n")
    assert alice.take() == names("alice", "amy")
    alice.send(b"/rooms\n")
    assert alice.take() == wire.rooms_block([("accueil", 3), ("r", 2)])
    back(cluster)
    assert cluster.redis.last(ROOM_SYNC)[1:] == ("here", "r", "alice", "r", "amy")


def test_after_a_stall_room_lines_and_parts_wait_until_the_node_knows() -> None:
    """A node that may have been reaped delivers no room line heard and
    sends no /part until Redis says it was not; then both go on, once."""
    cluster = Cluster()
    Rooms(cluster)
    alice, ann = cluster.user("alice"), cluster.user("ann")
    joined(alice)
    joined(ann)
    cluster.clock.advance(0)
    alice.take()
    cluster.redis.held.add(RENEW)
    cluster.stall(CONFIG.node_timeout + 4)
    cluster.node.heard(ROOM, b"there [1.2.3]-#r bob: pendant\n")
    parts = cluster.redis.count(ROOM_PART)
    ann.send(b"/part\n")
    assert cluster.redis.count(ROOM_PART) == parts
    cluster.clock.advance(0)
    assert alice.take().endswith("-#r Départ de ann\n".encode())  # here: at once
    cluster.redis.answer(RENEW, 1)
    cluster.clock.advance(0)
    assert alice.take() == b"[1.2.3]-#r bob: pendant\n"
    assert cluster.redis.count(ROOM_PART) == parts + 1


def test_rooms_counts_the_cluster() -> None:
    cluster = Cluster()
    Rooms(cluster)
    cluster.redis.answers[ROOM_COUNTS] = [7, [b"r", 3, b"b", 1]]
    alice = cluster.user("alice")
    alice.take()
    alice.send(b"/rooms\n")
    assert alice.take() == wire.rooms_block([("accueil", 7), ("b", 1), ("r", 3)])
