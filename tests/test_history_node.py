"""What a cluster node keeps in the history, over a fake clock: the real
ClusterNode with the Redis double of tests/test_cluster_stall.py, given its
history as tap.py does. The history holds what the other nodes were given:
no more, no less."""

from __future__ import annotations

from chatproto.history import KEEP, LAST
from chatproto.registry import ClusterUnreachable
from chatproto.testing import START
from tests.test_cluster_stall import CONFIG, PUBLIC, RENEW, Cluster


def with_history() -> Cluster:
    return Cluster(history=True)


def kept(cluster: Cluster) -> list[bytes]:
    """Every line the node asked Redis to keep, in order."""
    return [line for args in cluster.redis.arguments(KEEP) for line in args[6:]]


def test_a_line_is_kept_in_the_same_script_as_it_is_published() -> None:
    cluster = with_history()
    alice = cluster.user("alice")
    cluster.redis.calls.clear()
    alice.send(b"bonjour\n")
    cluster.clock.advance(0)
    line = cluster.factory.stamp().encode() + b"-alice: bonjour\n"
    assert cluster.redis.arguments(KEEP) == [
        (
            "chatproto:test:",
            PUBLIC,
            b"here " + line,
            100,
            256 * 1024,
            12 * 3600 * 1000,
            line,
        )
    ]
    assert cluster.redis.published == []  # no second PUBLISH of it


def test_a_line_from_another_node_is_not_kept_here() -> None:
    cluster = with_history()
    cluster.user("alice")
    cluster.redis.calls.clear()
    cluster.heard(b"there [1.2.3]-bob: bonjour\n")
    cluster.clock.advance(0)
    assert kept(cluster) == []


def test_a_node_reaped_during_a_stall_keeps_nothing_typed_in_it() -> None:
    cluster = with_history()
    alice = cluster.user("alice")
    redis = cluster.redis
    redis.held.add(RENEW)
    redis.calls.clear()
    cluster.stall(CONFIG.node_timeout + 4)
    alice.send(b"pendant la pause\n")
    cluster.clock.advance(0)
    redis.answer(RENEW, 0)  # reaped
    cluster.clock.advance(0)
    assert cluster.node.accepting  # joined again, with no users
    carol = cluster.user("carol")  # her arrival is kept: nothing from before
    carol.send(b"me voici\n")
    cluster.clock.advance(0)
    assert [line[line.index(b"]-") + 2 :] for line in kept(cluster)] == [
        b"Connexion de carol\n",
        b"carol: me voici\n",
    ]


def test_a_node_not_reaped_during_a_stall_keeps_what_waited_once() -> None:
    cluster = with_history()
    alice = cluster.user("alice")
    redis = cluster.redis
    redis.held.add(RENEW)
    redis.calls.clear()
    cluster.stall(CONFIG.node_timeout + 4)
    alice.send(b"pendant la pause\n")
    cluster.clock.advance(0)
    assert kept(cluster) == []  # held until Redis says
    redis.answer(RENEW, 1)
    cluster.clock.advance(0)
    assert [line for line in kept(cluster) if b"pendant la pause" in line] == [
        cluster.factory.stamp().encode() + b"-alice: pendant la pause\n"
    ]


def test_a_line_made_while_cut_off_stays_here_and_is_not_kept() -> None:
    cluster = with_history()
    alice, ann = cluster.user("alice"), cluster.user("ann")
    cluster.node.membership.lost("no connection to Redis")  # as a failed call does
    cluster.redis.calls.clear()
    alice.send(b"entre nous\n")
    cluster.clock.advance(0)
    assert b"-alice: entre nous\n" in ann.take()
    assert kept(cluster) == []


def test_history_reads_redis_and_a_failure_cuts_the_node_off() -> None:
    """The answer of the LAST script is the block; Redis away is one line,
    and the node counts itself cut off, as after any failed call."""
    cluster = with_history()
    alice = cluster.user("alice")
    redis = cluster.redis
    redis.answers[LAST] = [b"%d [1.2.3]-bob: avant\n" % (START * 1000)]
    alice.take()
    alice.send(b"/history 5\n")
    assert redis.last(LAST) == ("chatproto:test:", 5, 12 * 3600 * 1000)
    assert alice.take() == (
        b"--- historique (1 ligne) ---\n[1.2.3]-bob: avant\n"
        b"--- fin de l'historique ---\n"
    )
    redis.answers[LAST] = ClusterUnreachable("Redis did not answer in time")
    alice.send(b"/history\n")
    assert alice.take() == (
        "Erreur : historique impossible à lire pour le moment, réessayez plus "
        "tard\n".encode()
    )
    assert not cluster.node.accepting


def test_search_reads_the_kept_lines_and_a_failure_cuts_the_node_off() -> None:
    """/search reads the lines Redis keeps (--history-lines of them) and
    looks in them here; Redis away is one line, the node cut off."""
    cluster = with_history()
    alice = cluster.user("alice")
    redis = cluster.redis
    ms = START * 1000
    redis.answers[LAST] = [
        b"%d [1.2.3]-bob: un chat\n" % ms,
        b"%d [1.2.4]-bob: un chien\n" % ms,
    ]
    alice.take()
    alice.send(b"/search CHAT\n")
    assert redis.last(LAST) == ("chatproto:test:", 100, 12 * 3600 * 1000)
    assert alice.take() == (
        "--- recherche « CHAT » (1 ligne) ---\n".encode()
        + b"[1.2.3]-bob: un chat\n--- fin de la recherche ---\n"
    )
    redis.answers[LAST] = ClusterUnreachable("Redis did not answer in time")
    alice.send(b"/search chat\n")
    assert (
        alice.take()
        == (
            "Erreur : recherche impossible pour le moment, réessayez plus tard\n"
        ).encode()
    )
    assert not cluster.node.accepting


def test_a_line_of_a_turn_the_node_was_cut_off_in_is_never_kept() -> None:
    """Made while serving, but the node was cut off before the end of the
    turn: it stayed here, so the history must not get it once Redis is back."""
    cluster = with_history()
    alice = cluster.user("alice")
    cluster.redis.calls.clear()
    alice.send(b"juste avant\n")
    cluster.node.membership.lost("no connection to Redis")
    cluster.clock.advance(0)
    # Redis is back: the users are registered again
    cluster.node.membership.rejoin.resync()
    assert cluster.node.accepting
    alice.send(b"apres\n")
    cluster.clock.advance(0)
    assert [line[line.index(b"]-") + 2 :] for line in kept(cluster)] == [
        b"alice: apres\n"
    ]
