"""A node's place in its cluster: its life, its lease, and coming back.

L{Membership} is the node's state machine: one attribute, C{state}, changed
in one place, with the lease renewed and the dead nodes reaped every
heartbeat, and the check after a stall. L{Rejoin} registers the node's
users again after an outage. Neither carries what users say: the node's
roles (chatproto/cluster_roles.py) do, and hear from the membership through
L{Roles} when it changes what they may do.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import wire
from chatproto._redis import MAX_RETRY_DELAY, Commands, Subscription
from chatproto.cluster_redis import RedisRegistry, Renewal, Synced
from chatproto.config import ClusterConfig
from chatproto.registry import ClusterUnreachable, Reach, nick_key

if TYPE_CHECKING:
    from chatproto.cluster_messages import Kick
    from chatproto.moderation import Moderation

log = Logger()

UNREACHABLE = "the cluster cannot be reached"


class LocalUser(Protocol):
    """What a node uses of a user of its chat."""

    @property
    def nick(self) -> str | None: ...

    def say_goodbye(
        self, *lines: bytes, reach: Reach = Reach.EVERYWHERE, reason: str = "quit"
    ) -> None: ...


class Chat(Protocol):
    """What a node uses of its chat (the server's factory), and nothing more:
    the node delivers lines from the other nodes to it, and reads its users."""

    @property
    def sessions(self) -> Mapping[str, LocalUser]:
        """The registered users, by nickname key."""

    @property
    def stopping(self) -> bool: ...

    def stamp(self) -> str:
        """The time as departure lines show it: C{[H.M.S]}."""

    def deliver(self, line: bytes) -> None:
        """Give a public line to every user here."""

    def deliver_private(self, target: str, line: bytes) -> bool:
        """Give a private line to C{target} if it is here."""

    def heard_kick(self, kick: Kick) -> None:
        """An operator of another node kicked a user, if it is here."""

    @property
    def moderation(self) -> Moderation:
        """Its bans, which the cluster's hold here too."""


def grace(config: ClusterConfig) -> float:
    """Seconds nobody is reaped after an outage (Redis's grace, and a node's
    own after it was cut off): the time for the other nodes, alive, to
    reconnect (within MAX_RETRY_DELAY) and register again (within a lease).
    A persistent Redis away longer than a lease comes back with every lease
    run out: their expiry is a time of day."""
    return config.node_timeout + MAX_RETRY_DELAY


def departures(gone: list[str], stamp: str) -> list[bytes]:
    """The departure lines of C{gone}, at C{stamp}."""
    start = wire.departure_prefix(stamp)
    return [start + nick.encode() + b"\n" for nick in gone]


class NodeState(enum.Enum):
    """The life of a node: see L{Membership}, whose docstring draws it."""

    STOPPED = "stopped"  # not started, or stopped: no connection to Redis
    JOINING = "joining"  # started, never in the cluster yet: claims wait
    SERVING = "serving"  # in the cluster: lease held, users registered, subscribed
    CHECKING = "checking"  # renewed no lease for a lease's length: reaped?
    CUT_OFF = "cut off"  # Redis, the lease or the subscription lost
    REAPED = "reaped"  # taken for dead: its users dropped, joining with none
    STOPPING = "stopping"  # announcing its users gone, giving its lease back


# The lease is held and this node's users are registered in Redis.
INSIDE = frozenset({NodeState.SERVING, NodeState.CHECKING})
# Started, and not in the cluster: registering the users (again) is the way in.
OUTSIDE = frozenset({NodeState.JOINING, NodeState.CUT_OFF, NodeState.REAPED})

TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.STOPPED: frozenset({NodeState.JOINING}),
    NodeState.JOINING: frozenset({NodeState.SERVING, NodeState.STOPPING}),
    NodeState.SERVING: frozenset(
        {NodeState.CHECKING, NodeState.CUT_OFF, NodeState.REAPED, NodeState.STOPPING}
    ),
    NodeState.CHECKING: frozenset(
        {NodeState.SERVING, NodeState.CUT_OFF, NodeState.REAPED, NodeState.STOPPING}
    ),
    NodeState.CUT_OFF: frozenset(
        {NodeState.SERVING, NodeState.REAPED, NodeState.STOPPING}
    ),
    NodeState.REAPED: frozenset({NodeState.SERVING, NodeState.STOPPING}),
    NodeState.STOPPING: frozenset({NodeState.STOPPED}),
}

# What the log says of each transition, by the state entered (and, into
# SERVING, by the state left).
_SAID: dict[NodeState | tuple[NodeState, NodeState], str] = {
    NodeState.JOINING: "node {node} joining cluster {cluster} through {redis}",
    (
        NodeState.JOINING,
        NodeState.SERVING,
    ): "node {node} is in cluster {cluster} ({redis})",
    (
        NodeState.CHECKING,
        NodeState.SERVING,
    ): "node {node} was not taken for dead: it goes on",
    (NodeState.CUT_OFF, NodeState.SERVING): (
        "Redis is back: the {here} users here are registered again, new "
        "registrations are accepted"
    ),
    (NodeState.REAPED, NodeState.SERVING): (
        "node {node} is in cluster {cluster} again, with no users: new "
        "registrations are accepted"
    ),
    NodeState.CHECKING: (
        "node {node} renewed no lease for {silent:.1f} s (stalled?): asking "
        "Redis whether the other nodes took it for dead"
    ),
    NodeState.CUT_OFF: (
        "Redis unreachable ({why}): new registrations are refused; the "
        "{here} users here chat among themselves until it is back"
    ),
    NodeState.REAPED: (
        "node {node} was taken for dead by the other nodes, which announced "
        "its {here} users gone: they are disconnected"
    ),
    NodeState.STOPPING: "node {node} leaving cluster {cluster}",
    NodeState.STOPPED: "node {node} left cluster {cluster}",
}
_WARNINGS = frozenset({NodeState.CHECKING, NodeState.CUT_OFF, NodeState.REAPED})


class ImpossibleTransition(RuntimeError):
    """A node was asked to move between two states the diagram does not
    join: a bug, said at once rather than run in a state nobody designed."""


class Roles(Protocol):
    """What the membership tells the node's roles of its life
    (L{chatproto.cluster.ClusterNode} passes each call to the role)."""

    def joined(self) -> None:
        """In the cluster (again): read what may have changed meanwhile."""

    def admit(self) -> None:
        """Serving: the claims that waited for the node go to Redis."""

    def send(self) -> None:
        """Send what waits to be sent to Redis, unless it must wait still."""

    def send_now(self) -> None:
        """Send what waits to be sent to Redis, now (the node stops)."""

    def dropped(self) -> None:
        """Taken for dead: what waited to be sent goes nowhere."""

    def refuse_waiting(self) -> None:
        """Stopping: the claims that waited for the node fail."""

    def keep_published(self, lines: list[bytes]) -> Deferred[None]:
        """Keep in the history departures a Redis script published."""

    def heard_late(self, entry: bytes, origin: bytes, line: bytes) -> None:
        """A departure another node announced late, read back on joining."""


class Membership:
    """The node's life in the cluster: its state machine, lease and heartbeat.

    Its life is one attribute, C{state} (a L{NodeState}), changed in one place
    (L{become}), which logs each change and refuses one that is not among
    these (L{TRANSITIONS}; a test holds the two to each other)::

        STOPPED --started--> JOINING
        JOINING --its users registered, and subscribed--> SERVING
        SERVING --a lease's length without a renewal (a stall?)--> CHECKING
        CHECKING --not reaped--> SERVING
        SERVING, CHECKING --Redis, the lease or the subscription lost--> CUT_OFF
        CUT_OFF --its users registered again, and subscribed--> SERVING
        SERVING, CHECKING, CUT_OFF --the other nodes reaped it--> REAPED
        REAPED --joined again, with no users--> SERVING
        JOINING, SERVING, CHECKING, CUT_OFF, REAPED --stopped--> STOPPING
        STOPPING --its connections closed--> STOPPED

    A failure while JOINING, CUT_OFF or REAPED changes nothing: the node is
    out of the cluster already, and the heartbeat tries again.

    JOINING: a claim waits for the join, up to C{redis_timeout}: a node
    listens before it has joined, and a rolling restart must not turn its
    first users away. SERVING: claims go to Redis, public lines out through
    it. CUT_OFF (Redis away, or until this node registered its users there
    again) and REAPED: C{claim} fails with L{ClusterUnreachable}, C{names}
    answers with the users of this node, and lines stay on this node;
    departures in that time are announced to the other nodes once Redis is
    back (L{Rejoin}).

    CHECKING: a node that went a lease's length without renewing it (a GC
    pause, a VM migration, SIGSTOP) may have been reaped meanwhile: the
    other nodes then told everyone its users left. On waking, the reactor
    hands it client lines, messages from Redis and timers in any order, so
    whichever comes first notices (L{holding}); until Redis says whether
    the node was reaped, nothing is relayed, delivered from Redis, or
    claimed. REAPED: every user here is told, gets C{Deconnexion}, and is
    not announced again (the reaper did it, once); the lines they typed
    meanwhile go nowhere else. Not reaped: what was held goes on, and nobody
    sees a thing.
    """

    def __init__(
        self,
        config: ClusterConfig,
        chat: Chat,
        clock: IReactorTime,
        node_id: str,
        connections: tuple[Commands, Subscription, RedisRegistry],
        roles: Roles,
    ) -> None:
        self.config = config
        self.chat = chat
        self.clock = clock
        self.id = node_id
        self.commands, self.subscription, self.registry = connections
        self.roles = roles
        self.state = NodeState.STOPPED
        self.down_reason = ""
        # The epoch this node's users are registered in ("": none, a new node).
        self.epoch = ""
        self.rejoin = Rejoin(self)
        # In-flight guards: one call of each at a time (not the node's life).
        self._renewing = False
        self._reaping = False
        # What the log says: since when the node is out of the cluster, and
        # whether it said it was out long.
        self._down_since = 0.0
        self._warned = False
        # When the last lease renewal that succeeded was sent (the lease runs
        # from a little later): past config.lease, the node may be reaped.
        # Meaningful while the node is in the cluster (INSIDE).
        self.renewed_at = 0.0
        # Back from an outage, the node reaps no one until then (see
        # grace()). Redis holds a grace of its own, for every node (a node
        # that starts knows nothing of the outage): see RedisRegistry.
        self.reap_from = 0.0
        self._held: list[Callable[[bool], None]] = []  # run when it knows
        # The loop that renews the lease every tick: a process that stalls
        # (or a test that stops it) looks to the other nodes like a dead one.
        self.heartbeat = LoopingCall(self._beat)
        self.heartbeat.clock = clock

    @property
    def inside(self) -> bool:
        """Whether the lease is held and this node's users are registered."""
        return self.state in INSIDE

    # NodeState, and what the log says of it

    def become(self, state: NodeState) -> None:
        """Move to C{state}, and say so in the log; refuse (with
        L{ImpossibleTransition}) a move that is not in L{TRANSITIONS}."""
        old = self.state
        if state not in TRANSITIONS[old]:
            raise ImpossibleTransition(
                f"cluster node {self.id}: no transition from {old.name} to {state.name}"
            )
        now = self.clock.seconds()
        silent = now - self.renewed_at
        self.state = state
        if state is NodeState.JOINING or (state in OUTSIDE and old in INSIDE):
            self._down_since = now
            self._warned = False
        if state is NodeState.SERVING:  # joined, or back: the bans may have changed
            self.roles.joined()
        if old is NodeState.CUT_OFF and state is NodeState.SERVING:
            self.reap_from = now + grace(self.config)
        said = _SAID[(old, state)] if state is NodeState.SERVING else _SAID[state]
        emit = log.warn if state in _WARNINGS else log.info
        emit(
            said,
            act="cluster",
            node=self.id,
            cluster=self.config.name,
            redis=str(self.config.redis),
            old=old,
            new=state,
            here=len(self.chat.sessions),
            why=self.down_reason,
            silent=silent,
        )

    def lost(self, why: str) -> None:
        """A Redis call failed, or the lease or the subscription is gone:
        the node is cut off, and registers its users again (L{Rejoin}).
        What waited on a check runs now, here: as when Redis is away,
        registering again will find out whether the node was reaped."""
        self.down_reason = why
        if self.state in INSIDE:
            checking = self.state is NodeState.CHECKING
            self.become(NodeState.CUT_OFF)
            if checking:
                self._release_held(True)

    def failed(self, failure: Failure) -> None:
        """The errback of a call to Redis: cut off if Redis was the cause."""
        failure.trap(ClusterUnreachable)
        self.lost(failure.getErrorMessage())

    def refused(self, failure: Failure) -> NoReturn:
        """The errback of a call to Redis made for a user: cut off if Redis
        was the cause, and fail as the cluster cannot be reached."""
        self.failed(failure)
        raise ClusterUnreachable(UNREACHABLE)

    def heard(self, listening: bool, why: str) -> None:
        """The subscription started or stopped: lines published while it was
        down are lost to this node, so it registers again (and catches up
        with the late departures) once it hears again."""
        if listening:
            self.rejoin.resync()
        else:
            self.lost(f"subscription lost: {why}")

    # Life

    def start(self) -> None:
        self.become(NodeState.JOINING)
        self.commands.first_connected.addCallback(lambda _: self.rejoin.resync())
        self.commands.start()
        self.subscription.start()
        self.heartbeat.start(self.config.tick, now=True)

    def stop(self) -> Deferred[None]:
        """Announce the users still registered here, give the lease back,
        and close the connections: the other nodes need not wait for the
        lease to expire."""
        if self.heartbeat.running:
            self.heartbeat.stop()
        was = self.state
        self.become(NodeState.STOPPING)
        self.roles.refuse_waiting()
        self._release_held(True)
        d: Deferred[object] = succeed(None)
        if was is NodeState.SERVING:  # checking: maybe reaped, they go nowhere
            self.roles.send_now()
        if was in INSIDE:
            stamp = self.chat.stamp()
            left = self.registry.leave(stamp)
            d = left.addCallback(
                lambda gone: self.roles.keep_published(departures(gone, stamp))
            )
            d.addErrback(self.failed)
        d.addCallback(lambda _: self.subscription.close())
        d.addCallback(lambda _: self.commands.close())
        return d.addCallback(lambda _: self.become(NodeState.STOPPED))

    def _beat(self) -> None:
        try:
            if self.state in OUTSIDE:
                self.rejoin.resync()
                self._warn_if_long()
                return
            if self.holding():
                return  # the check renews the lease
            if not self._renewing:
                self._renewing = True
                renewed = self.registry.renew(self.epoch)
                renewed.addCallbacks(
                    self._renewed, self.failed, callbackArgs=(self.clock.seconds(),)
                )
                renewed.addErrback(self.bug, "renewing the lease")
                renewed.addBoth(self._set, "_renewing", False)
            if not self._reaping and self.clock.seconds() >= self.reap_from:
                self._reaping = True
                stamp = self.chat.stamp()
                reaped = self.registry.reap(stamp)
                reaped.addCallbacks(self._reaped, self.failed, callbackArgs=(stamp,))
                reaped.addErrback(self.bug, "reaping dead nodes")
                reaped.addBoth(self._set, "_reaping", False)
        except Exception:
            log.failure("cluster heartbeat")

    def _warn_if_long(self) -> None:
        if self._warned:
            return
        waited = self.clock.seconds() - self._down_since
        if waited > self.config.node_timeout:
            self._warned = True
            log.warn(
                "still no cluster after {waited:.0f} s: is Redis up at {redis}? "
                "({why})",
                act="cluster",
                waited=waited,
                redis=str(self.config.redis),
                why=self.down_reason or "no answer",
            )

    def bug(self, failure: Failure, doing: str) -> None:
        log.failure("cluster: {doing}", failure, doing=doing)

    def _set(self, result: object, name: str, value: object) -> None:
        setattr(self, name, value)

    def _renewed(self, renewal: Renewal, sent: float) -> None:
        if self.state not in INSIDE:  # registering again: its answer decides
            return
        if renewal is Renewal.FIRST:
            self.grace_began()
        if renewal.held:
            self.renewed_at = max(self.renewed_at, sent)
        elif renewal is Renewal.REAPED:
            self.taken_for_dead()
        else:
            log.warn(
                "node {node} has no lease in Redis any more (Redis lost its "
                "data): registering its users again",
                node=self.id,
            )
            self.lost("no lease in Redis")
            self.rejoin.resync()

    def grace_began(self) -> None:
        """This node's renewal was the cluster's first after a silence of
        every node: Redis reaps nobody for a while (L{grace})."""
        log.warn(
            "no node of cluster {cluster} renewed its lease for {silence:.1f} s "
            "or more (Redis away, or out of every node's reach): no node is "
            "reaped for {grace:.1f} s, the time for the others to come back",
            act="cluster",
            node=self.id,
            cluster=self.config.name,
            silence=self.registry.silence_ms / 1000,
            grace=self.registry.grace_ms / 1000,
        )

    def _reaped(self, gone: list[str], stamp: str) -> None:
        """C{stamp}: that of the departures the reaping published."""
        if not gone:
            return
        if self.holding():
            self.hold(lambda known: self._reaped(gone, stamp) if known else None)
            return
        log.info("a node died; gone with it: {nicks}", nicks=", ".join(gone))
        for line in departures(gone, self.chat.stamp()):
            self.chat.deliver(line)
        # This node reaped them: the one node that keeps their departures,
        # as the reaping published them.
        self.roles.keep_published(departures(gone, stamp))

    # After a stall

    def holding(self) -> bool:
        """Whether what this node delivers or relays must wait, because it
        may have been reaped: it went a lease's length without renewing its
        lease. The first call that finds so asks Redis (L{_check})."""
        if self.state is NodeState.CHECKING:
            return True
        if self.state is not NodeState.SERVING:
            return False
        if self.clock.seconds() - self.renewed_at < self.config.lease:
            return False
        self._check()
        return self.state is NodeState.CHECKING  # unless Redis answered at once

    def hold(self, run: Callable[[bool], None]) -> None:
        """Run C{run} once the check knows whether this node's users are
        still in the cluster (the argument: if not, nothing is delivered)."""
        self._held.append(run)

    def _check(self) -> None:
        self.become(NodeState.CHECKING)
        d = self.registry.renew(self.epoch)
        d.addCallbacks(
            self._checked, self._check_failed, callbackArgs=(self.clock.seconds(),)
        )
        d.addErrback(self.bug, "asking whether this node was reaped")

    def _checked(self, renewal: Renewal, sent: float) -> None:
        if self.state is not NodeState.CHECKING:
            return  # decided meanwhile (stopping, or the heartbeat's renewal)
        if renewal is Renewal.FIRST:
            self.grace_began()
        if renewal.held:
            self.renewed_at = sent
            self.become(NodeState.SERVING)
            self._release_held(True)
            self.roles.send()
            self.roles.admit()
            return
        if renewal is Renewal.REAPED:
            self.taken_for_dead()
        else:  # nobody can have announced anything: the users stay
            self.lost("no lease in Redis (Redis lost its data)")
            self._release_held(True)
            self.rejoin.resync()

    def _check_failed(self, failure: Failure) -> None:
        """Redis cannot say now. The node is cut off, as when Redis is away:
        registering its users again will find out whether it was reaped."""
        if self.state is not NodeState.CHECKING:
            failure.trap(ClusterUnreachable)
            return  # decided meanwhile
        try:
            self.failed(failure)  # cut off first: what was held stays here
        finally:
            self._release_held(True)

    def _release_held(self, known: bool) -> None:
        """Run what waited on the check: C{known} is whether this node's
        users are still in the cluster (if not, nothing is delivered)."""
        held, self._held = self._held, []
        for run in held:
            run(known)

    def taken_for_dead(self) -> None:
        """The other nodes reaped this node: they told everyone its users
        left, once, and freed their nicknames. So the users here are gone:
        each is told why and gets Deconnexion, without a second departure
        line (and none to themselves); what they typed meanwhile, and the
        lines waiting for Redis, go nowhere. The node then joins again with
        no users (its epoch forgotten: it is a new node)."""
        self.roles.dropped()
        self.down_reason = "the other nodes took this node for dead"
        self.epoch = ""
        self.become(NodeState.REAPED)
        lost = wire.notice(wire.CLUSTER_LOST)
        for member in list(self.chat.sessions.values()):
            member.say_goodbye(lost, wire.BYE, reach=Reach.NOWHERE, reason="cluster")
        self.rejoin.pending = {}  # the reaper released and announced them
        self._release_held(False)  # if it was checking: nothing goes on
        self.clock.callLater(0, self.rejoin.resync)  # with no users now: joins


class Rejoin:
    """Registering the node's users again in Redis, to join or come back.

    A node out of the cluster (joining, cut off, reaped) registers its users
    again each heartbeat until it is in. The users who left meanwhile
    (L{left}) are announced to the other nodes then, once."""

    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self._syncing = False
        self.pending: dict[str, tuple[str, bytes]] = {}  # left while cut off

    def left(self, nick: str, line: bytes) -> None:
        """C{nick} left while the node was out: C{line} is announced once
        the node is back, if the other nodes still had it."""
        self.pending[nick_key(nick)] = (nick, line)

    def resync(self) -> None:
        membership = self.membership
        if self._syncing or membership.state not in OUTSIDE:
            return
        if not membership.subscription.listening:  # what it announces goes unheard
            return
        if not membership.commands.connected:
            membership.down_reason = membership.down_reason or "no connection to Redis"
            return
        self._syncing = True
        pending, self.pending = self.pending, {}
        sessions = [m.nick for m in membership.chat.sessions.values() if m.nick]
        d = membership.registry.sync(sessions, membership.epoch)
        d.addCallbacks(
            self._synced_again,
            self._sync_failed,
            callbackArgs=(pending, membership.clock.seconds()),
            errbackArgs=(pending,),
        )
        d.addErrback(membership.bug, "registering the users again")
        d.addBoth(self._done)

    def _done(self, result: object) -> None:
        self._syncing = False

    def _sync_failed(self, failure: Failure, pending: dict[str, Any]) -> None:
        pending.update(self.pending)
        self.pending = pending
        self.membership.failed(failure)

    def _synced_again(
        self, synced: Synced, pending: dict[str, tuple[str, bytes]], sent: float
    ) -> None:
        membership = self.membership
        if membership.state not in OUTSIDE:  # stopping meanwhile
            return
        if synced.reaped:
            # The users who left meanwhile were reaped, and announced, too.
            membership.taken_for_dead()
            return
        data_lost = membership.epoch != "" and synced.epoch != membership.epoch
        if data_lost:
            log.warn(
                "Redis lost the cluster's data: the users here are registered again"
            )
        if synced.grace:
            membership.grace_began()
        membership.epoch = synced.epoch
        membership.renewed_at = sent
        registry, chat, roles = membership.registry, membership.chat, membership.roles
        # Who left this node while it was cut off: the other nodes still had
        # them (dropped now), or, if Redis lost its data, never heard of it.
        # If another node reaped them meanwhile, it announced them already.
        dropped = {nick_key(nick) for nick in synced.dropped}
        late = [
            line for key, (_, line) in pending.items() if data_lost or key in dropped
        ]
        if late:
            d = registry.announce(late, membership.config.retention)
            d.addCallback(lambda _: roles.keep_published(late)).addErrback(
                membership.failed
            )
        # And what the others announced late while this node was not listening.
        for entry, origin, line in synced.announced:
            roles.heard_late(entry, origin, line)
        for key in synced.conflicts:
            member = chat.sessions.get(key)
            if member is not None:
                self._evict(member)
        if not membership.subscription.listening:
            # Deaf again while registering: what it did stands, but lines
            # published meanwhile were lost to it; it registers again once
            # it hears (the departures meanwhile wait for that).
            return
        membership.become(NodeState.SERVING)
        # Who left while the registration was under way: registered by it.
        left, self.pending = self.pending, {}
        for nick, line in left.values():
            registry.release(nick, line).addErrback(membership.failed)
        roles.admit()

    def _evict(self, member: LocalUser) -> None:
        """Somebody else took this user's nickname while this node was cut
        off: tell the user, say goodbye, and announce it here only. The
        other nodes know that nickname as someone who is present: announcing
        it there would announce the wrong person gone."""
        log.info("{nick} lost its nickname during the outage", nick=member.nick)
        notice = wire.notice(wire.NICK_LOST.format(member.nick))
        member.say_goodbye(notice, wire.BYE, reach=Reach.HERE, reason="cluster")
