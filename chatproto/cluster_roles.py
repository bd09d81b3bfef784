"""What a cluster node does for its chat: one class per seam of the factory.

The factory (L{chatproto.server.ChatFactory}) has seams that a single
server fills in memory: its registry of nicknames, its relay, its history;
and moderation has its cluster. A node fills each with one role:

    ClusterNicknames    the registry: nicknames claimed in Redis
    ClusterAccounts     the protected nicknames' book: RedisAccounts, read
                        once the node has joined
    ClusterRelay        the relay: public and private lines, and what the
                        other nodes publish, sorted
    ClusterHistory      the history: kept in Redis, and read from the
                        node's store when it has one (StoreFeed copies
                        Redis's window into it)
    ClusterModeration   moderation's cluster: kicks, answers, the bans copy
    ClusterRooms        the rooms' seam: rooms that span the nodes, their
                        members in Redis, their lines on a channel each

A public line is kept in the history and published in one Redis call, at
the end of the reactor turn (L{Outbox}): the factory's C{broadcast} calls
C{history.record} then C{relay.publish}, and both land in the outbox. Every
role asks the node's L{Membership} whether it may go to Redis now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import wire
from chatproto.accounts import Unavailable
from chatproto.bans import Ban
from chatproto.cluster_membership import UNREACHABLE, Membership, NodeState
from chatproto.cluster_messages import (
    Answer,
    BanLifted,
    BanShared,
    Joined,
    Kick,
    LateDeparture,
    MalformedMessage,
    Private,
    Public,
    ReapedDeparture,
    RoomLines,
    decode,
    encode,
)
from chatproto.cluster_redis import LeaseLost
from chatproto.history import Kept, RedisHistory
from chatproto.registry import ClusterUnreachable, Reach
from chatproto.rooms import Gathered
from chatproto.store import StoreHistory

if TYPE_CHECKING:
    from chatproto.accounts import Account, RedisAccounts
    from chatproto.rooms import Rooms


class Listener(Protocol):
    """The node's subscription, as the rooms use it (L{chatproto._redis.
    Subscription}): channels that come and go."""

    def subscribe(self, channel: bytes) -> Deferred[None]: ...
    def unsubscribe(self, channel: bytes) -> Deferred[None]: ...


log = Logger()
T = TypeVar("T")


class ClusterNicknames:
    """The factory's registry in a cluster: nicknames claimed in Redis.

    The interface of L{chatproto.registry.MemoryRegistry}. A claim made
    while the node joins, or checks whether it was reaped, waits for it up
    to C{redis_timeout} (a rolling restart must not turn its first users
    away); one made while the node is out of the cluster fails with
    L{ClusterUnreachable}."""

    def __init__(self, membership: Membership, outbox: Outbox) -> None:
        self.membership = membership
        self.outbox = outbox
        # What waits for the node to join (claims, and the book's reads):
        # each call, made again once the node serves, and its answer.
        self._waiting: list[
            tuple[Callable[[], Deferred[Any]], Deferred[Any], IDelayedCall]
        ] = []

    def claim(self, nick: str) -> Deferred[str]:
        membership = self.membership
        if membership.state is NodeState.JOINING or membership.holding():
            return self.when_serving(lambda: self.claim(nick))
        if membership.state is not NodeState.SERVING:
            return fail(
                ClusterUnreachable(membership.down_reason or "not in the cluster yet")
            )
        d = membership.registry.claim(nick)
        d.addErrback(self._claim_failed)
        return d

    def _claim_failed(self, failure: Failure) -> Failure:
        if failure.check(ClusterUnreachable):
            self.membership.lost(failure.getErrorMessage())
            if failure.check(LeaseLost):
                self.membership.rejoin.resync()
        return failure

    def release(self, nick: str, reach: Reach = Reach.EVERYWHERE) -> Deferred[None]:
        """Release a departing user's nickname in Redis, unless C{reach}
        says the other nodes must not hear of the departure (HERE: the
        nickname is someone else's there now) or have (NOWHERE: they reaped
        this node and released it)."""
        if reach is not Reach.EVERYWHERE:
            return succeed(None)
        membership = self.membership
        if membership.holding():  # if this node was reaped, the reaper released it

            def then(known: bool) -> None:
                if known:
                    self.release(nick)

            membership.hold(then)
            return succeed(None)
        chat = membership.chat
        line = wire.departure_prefix(chat.stamp()) + nick.encode() + b"\n"
        if membership.state is not NodeState.SERVING:
            membership.rejoin.left(nick, line)
            return succeed(None)
        # A stopping factory does not announce departures: its users are told
        # it stops. The users of the other nodes must hear of them.
        if chat.stopping:
            self.outbox.send()
        d = membership.registry.release(nick, line if chat.stopping else None)
        if chat.stopping:  # announced by Redis, not broadcast: kept here
            d.addCallback(lambda _: self.outbox.keep_published([line]))

        def failed(failure: Failure) -> None:
            failure.trap(ClusterUnreachable)
            membership.rejoin.left(nick, line)
            membership.lost(failure.getErrorMessage())

        return d.addErrback(failed)

    def names(self, limit: int | None = None) -> Deferred[tuple[list[str], int]]:
        here = self._names_here(limit)
        if not self.membership.inside:
            return succeed(here)

        def failed(failure: Failure) -> tuple[list[str], int]:
            failure.trap(ClusterUnreachable)
            self.membership.lost(failure.getErrorMessage())
            return here

        return self.membership.registry.names(limit).addErrback(failed)

    def _names_here(self, limit: int | None) -> tuple[list[str], int]:
        nicks = [m.nick for m in self.membership.chat.sessions.values() if m.nick]
        return nicks[:limit] if limit is not None else nicks, len(nicks)

    # Calls that wait for the node

    def when_serving(self, call: Callable[[], Deferred[T]]) -> Deferred[T]:
        """A call made while the node joins, or checks whether it was
        reaped (a claim, a read of the protected nicknames): made again once
        it serves, after waiting up to redis_timeout; then it fails as a
        call made while Redis is away."""
        membership = self.membership
        waiting: Deferred[T] = Deferred()
        entry: tuple[Callable[[], Deferred[Any]], Deferred[Any], IDelayedCall]

        def give_up() -> None:
            self._waiting.remove(entry)
            waiting.errback(
                ClusterUnreachable(membership.down_reason or "not in the cluster yet")
            )

        entry = (
            call,
            waiting,
            membership.clock.callLater(membership.config.redis_timeout, give_up),
        )
        self._waiting.append(entry)
        return waiting

    def admit_waiting(self) -> None:
        if self.membership.state is not NodeState.SERVING:
            return
        waiting, self._waiting = self._waiting, []
        for call, d, timer in waiting:
            timer.cancel()
            call().chainDeferred(d)

    def refuse_waiting(self) -> None:
        """The node stops: the calls that wait fail."""
        for _, waiting, timer in self._waiting:
            timer.cancel()
            waiting.errback(ClusterUnreachable("the server is stopping"))
        self._waiting = []


class ClusterAccounts:
    """The book of protected nicknames in a cluster: L{RedisAccounts}'s,
    whose reads made while the node joins wait for it as claims do.

    A registration looks its nickname up before it claims it
    (chatproto/session.py, so that nobody holds a protected nickname before
    its password is checked): that read must not fail where the claim after
    it would have waited (a rolling restart's first users), and fails at
    once where the claim would (the node out of the cluster). Changes go to
    Redis at once: only a registered user makes them."""

    def __init__(
        self, membership: Membership, nicknames: ClusterNicknames, book: RedisAccounts
    ) -> None:
        self.membership = membership
        self.nicknames = nicknames
        self.book = book

    def find(self, nick: str) -> Deferred[Account | None]:
        membership = self.membership
        if membership.state is NodeState.JOINING:
            joined = self.nicknames.when_serving(lambda: succeed(None))
            # Not joined in time, or stopping: refused as a claim would be,
            # without a warning per user.
            joined.addErrback(_refused)
            return joined.addCallback(lambda _: self.find(nick))
        if not membership.inside:
            # Cut off, reaped or stopping: refused at once, as claims are,
            # and not logged again for each user (the node said it is out).
            return fail(Unavailable())
        return self.book.find(nick)

    def protect(self, account: Account) -> Deferred[None]:
        return self.book.protect(account)

    def look_alike(self, nick: str) -> str | None:
        return self.book.look_alike(nick)

    def surely_free(self, nick: str) -> bool:
        return self.book.surely_free(nick)

    def unprotect(self, nick: str) -> Deferred[None]:
        return self.book.unprotect(nick)

    def touch(self, nick: str, when: float, seen: int | None = None) -> Deferred[None]:
        return self.book.touch(nick, when, seen)


def _refused(failure: Failure) -> None:
    failure.trap(ClusterUnreachable)
    raise Unavailable()


# Seconds between a line kept in Redis (here, or heard of from another
# node) and its copy into this node's store: the lines of a busy moment go
# in one read. A read of the history copies what waits first.
FEED_DELAY = 0.2
# Lines copied from Redis in one read, at most (a node that joins may lack
# a whole window: it reads it in such slices).
FEED_LINES = 1000


class StoreFeed:
    """Keeps a node's store up with the cluster's history in Redis.

    Every public line of the cluster is kept in Redis's window
    (L{RedisHistory}), stamped. The node copies into its own store the
    lines stamped after the newest it has (L{RedisHistory.since}): soon
    after a line is kept (its own, or one it hears another node made), when
    it joins (those said while it was away, as far as the window reaches),
    and before each read of the history. The store then answers /history,
    /search and /unread at the single server's scale, even while Redis is
    away (with what it has). A window that forgot lines the store lacks
    is logged: the node was away longer than the window holds."""

    def __init__(
        self, membership: Membership, redis: RedisHistory, store: StoreHistory
    ) -> None:
        self.membership = membership
        self.redis = redis
        self.store = store
        self._call: IDelayedCall | None = None
        self._reading = False
        self._again = False  # one more read once this one is done
        self._waiting: list[Deferred[None]] = []  # for a read not yet asked

    def soon(self) -> None:
        """Lines were kept in Redis: copy them in a moment."""
        if self._call is None and not self._reading:
            self._call = self.membership.clock.callLater(FEED_DELAY, self._read)
        elif self._reading:
            self._again = True

    def now(self) -> Deferred[None]:
        """Copy what Redis has now; fires once done (or once it failed, or
        at once out of the cluster: the store answers with what it has)."""
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        if self._reading:
            self._again = True
        else:
            self._read()
        return d

    def _read(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._again = False
        if not self.membership.inside:
            waiting, self._waiting = self._waiting, []
            self._answer(waiting)
            return
        self._reading = True
        waiting, self._waiting = self._waiting, []
        d = self.redis.since(self.store.newest, FEED_LINES)
        d.addCallbacks(self._copy, self._failed)
        d.addBoth(lambda more: self._done(waiting, more is True))

    def _copy(self, answer: tuple[int, list[Kept]]) -> bool:
        """Keep what Redis answered: whether more waits there."""
        cut, lines = answer
        newest = self.store.newest
        if 0 < newest < cut:
            log.warn(
                "cluster: this node's store lacks public lines said while it "
                "was away: Redis's window (--history-lines, --history-bytes, "
                "--history-age) no longer holds them",
                act="cluster",
            )
        self.store.keep(lines)
        return len(lines) == FEED_LINES

    def _failed(self, failure: Failure) -> None:
        if failure.check(ClusterUnreachable):
            self.membership.lost(failure.getErrorMessage())
        else:
            log.failure("cluster: copying the history into the store", failure)

    def _done(self, waiting: list[Deferred[None]], more: bool) -> None:
        self._reading = False
        if more:  # those waiting want every line: they wait for the next
            self._waiting[:0] = waiting
            self._read()
            return
        self._answer(waiting)
        if self._waiting or self._again:
            self._read()

    @staticmethod
    def _answer(waiting: list[Deferred[None]]) -> None:
        for d in waiting:
            d.callback(None)


_NO_RUN = object()  # Outbox._channel when no line waits


class Outbox:
    """What a reactor turn sends to Redis: its public lines, and the lines
    the history keeps, together at the turn's end in one call (one message
    for the other nodes, whatever their number; and the history holds
    exactly the lines the other nodes were given).

    The lobby's lines and the rooms' go out in the order they were made:
    each run of lines of one channel is one call, on the one connection
    for commands (Redis runs them in the order they are sent, and a node
    hears every channel on its one subscription: so a user gets the
    lobby's and its rooms' lines in the order they were made)."""

    def __init__(
        self,
        membership: Membership,
        history: RedisHistory | None,
        feed: StoreFeed | None = None,
    ) -> None:
        self.membership = membership
        self.history = history  # None: the cluster keeps no history
        self.feed = feed  # None: the node has no store
        # Runs of lines, oldest first: (channel, lines published, lines
        # kept); None: the lobby's channel. The last run's are also kept
        # apart: a turn's lines are mostly of one channel.
        self._runs: list[tuple[bytes | None, list[bytes], list[bytes]]] = []
        self._channel: bytes | object | None = _NO_RUN
        self._lines: list[bytes] = []
        self._kept: list[bytes] = []
        self._call: IDelayedCall | None = None

    def _run(self, channel: bytes | None) -> None:
        """Make the last run one of C{channel}, a new one if need be."""
        if self._channel is not channel and self._channel != channel:
            self._channel = channel
            self._lines, self._kept = [], []
            self._runs.append((channel, self._lines, self._kept))

    def publish(self, line: bytes) -> None:
        """Send C{line} to every other node at the end of this turn."""
        if not self.membership.inside:
            return
        if self._channel is not None:
            self._run(None)
        self._lines.append(line)
        self._soon()

    def keep(self, line: bytes) -> None:
        """Keep C{line} in the history at the end of this turn, in the same
        script as the turn's lines are published."""
        if self.history is None or not self.membership.inside:
            return
        if self._channel is not None:
            self._run(None)
        self._kept.append(line)
        self._soon()

    def publish_room(self, channel: bytes, line: bytes) -> None:
        """Send a room's C{line} to the nodes that hear its C{channel}, and
        keep it in the history, at the end of this turn."""
        if not self.membership.inside:
            return
        self._run(channel)
        self._lines.append(line)
        if self.history is not None:
            self._kept.append(line)
        self._soon()

    def _soon(self) -> None:
        if self._call is None:
            self._call = self.membership.clock.callLater(0, self.send)

    def send(self) -> None:
        """Send what waits, unless the node may have been reaped (then once
        it knows it was not); out of the cluster, it is dropped."""
        self._cancel()
        if any(lines for _, lines, _ in self._runs) and self.membership.holding():
            return  # sent once the node knows it was not reaped
        if self.membership.inside:
            self.send_now()
        else:  # cut off: the lines stayed here
            self.drop()

    def send_now(self) -> None:
        self._cancel()
        runs = self._forget()
        for channel, lines, kept in runs:
            self._send(channel, lines, kept)

    def _send(
        self, channel: bytes | None, lines: list[bytes], kept: list[bytes]
    ) -> None:
        registry, failed = self.membership.registry, self.membership.failed
        message: Public | RoomLines
        if channel is None:
            channel = registry.public_channel
            message = Public(registry.origin, b"".join(lines))
        else:
            message = RoomLines(registry.origin, b"".join(lines))
        if kept and self.history is not None:
            payload = encode(message) if lines else None
            d = self.history.keep(kept, channel, payload)
            d.addCallbacks(self._in_window, failed)
        elif lines and channel == registry.public_channel:
            registry.publish(message.lines).addErrback(failed)
        elif lines:
            registry.publish_room(channel, message.lines).addErrback(failed)

    def drop(self) -> None:
        """What waits goes nowhere."""
        self._cancel()
        self._forget()

    def _forget(self) -> list[tuple[bytes | None, list[bytes], list[bytes]]]:
        """The runs waiting, no longer waiting."""
        runs, self._runs = self._runs, []
        self._channel = _NO_RUN
        self._lines, self._kept = [], []
        return runs

    def _cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def keep_published(self, lines: list[bytes]) -> Deferred[None]:
        """Keep departures that a Redis script published rather than the
        chat (a stopping node's, a reaped node's, late ones), after it."""
        if self.history is None or not lines:
            return succeed(None)
        d = self.history.keep(lines, self.membership.registry.public_channel, None)
        return d.addCallbacks(self._in_window, self.membership.failed)

    def _in_window(self, _: object) -> None:
        """Lines are in Redis's window: the node's store copies them."""
        if self.feed is not None:
            self.feed.soon()


class ClusterHistory:
    """The factory's history in a cluster: every node's lines, kept in
    Redis; read from the node's store when it has one (C{outbox.feed}),
    from Redis's window otherwise."""

    def __init__(self, membership: Membership, outbox: Outbox) -> None:
        self.membership = membership
        self.outbox = outbox
        history, feed = outbox.history, outbox.feed
        if feed is not None:
            self.limit = feed.store.limit
        else:
            self.limit = 0 if history is None else history.limit

    def record(self, line: bytes, room: str | None = None) -> None:
        """Keep a public line made here in the cluster's history, in the
        same Redis script as it is published (L{Outbox}). A line made while
        this node is out of the cluster stays here, and is not kept. (A
        room's lines are kept as they are published: L{ClusterRooms}.)"""
        self.outbox.keep(line)

    @property
    def newest(self) -> int:
        """The newest line this node knows kept in Redis (lines of other
        nodes since, and its own still in the outbox, are not counted: a
        read position taken from it gives more lines, never fewer)."""
        if self.outbox.feed is not None:
            return self.outbox.feed.store.newest
        history = self.outbox.history
        return 0 if history is None else history.newest

    def _store(self) -> Deferred[StoreHistory] | None:
        """The node's store once it holds every line kept before this
        question (the lines made here before it go first); None: no store."""
        feed = self.outbox.feed
        if feed is None:
            return None
        self.outbox.send()
        return feed.now().addCallback(lambda _: feed.store)

    def last(self, count: int, room: str | None = None) -> Deferred[list[Kept]]:
        """The last lines of the cluster's history (every node's, this
        one's up to those still in its outbox) of C{room} (None: the
        lobby)."""
        store = self._store()
        if store is not None:
            return store.addCallback(lambda store: store.last(count, room))
        history = self.outbox.history
        if history is None:
            return succeed([])
        self.outbox.send()  # the lines made before the question go first
        return history.last(count, room).addErrback(self._failed)

    def after(
        self, number: int, count: int, until: int | None = None
    ) -> Deferred[tuple[int, list[Kept]]]:
        """The lines after C{number}, as L{last} reads them. Without a
        store, C{until} is not applied: this node learns the numbers of
        other nodes' lines late (see L{newest}), so a bound taken from it
        could leave out lines it had not yet heard of; more lines, never
        fewer. (A store has every line up to its newest: the bound holds.)"""
        store = self._store()
        if store is not None:
            return store.addCallback(lambda store: store.after(number, count, until))
        history = self.outbox.history
        if history is None:
            return succeed((0, []))
        self.outbox.send()
        return history.after(number, count).addErrback(self._failed)

    def before(
        self, number: int | None, count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        """The lines before C{number}, as L{last} reads them."""
        store = self._store()
        if store is not None:
            return store.addCallback(lambda store: store.before(number, count, room))
        history = self.outbox.history
        if history is None:
            return succeed([])
        self.outbox.send()
        return history.before(number, count, room).addErrback(self._failed)

    def search(
        self, words: Sequence[str], count: int, room: str | None = None
    ) -> Deferred[list[Kept]]:
        """The last lines of the cluster's history holding C{words}, as
        L{last} reads them."""
        store = self._store()
        if store is not None:
            return store.addCallback(lambda store: store.search(words, count, room))
        history = self.outbox.history
        if history is None:
            return succeed([])
        self.outbox.send()  # the lines made before the question go first
        return history.search(words, count, room).addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        """Redis could not be read: the node is cut off from the cluster."""
        failure.trap(ClusterUnreachable)
        self.membership.lost(failure.getErrorMessage())
        return failure


class ClusterRelay:
    """The factory's relay: its lines to the other nodes, theirs to it.

    Sorts what the node hears on its channels (L{heard}): public lines and
    departures to the chat, a room's lines to its members here
    (L{ClusterRooms}), private lines to their user, kicks, answers and
    bans to L{ClusterModeration}."""

    def __init__(
        self,
        membership: Membership,
        outbox: Outbox,
        moderation: ClusterModeration,
        rooms: ClusterRooms | None = None,
    ) -> None:
        self.membership = membership
        self.outbox = outbox
        self.moderation = moderation
        self.rooms = rooms
        self._seen: dict[bytes, float] = {}  # late departures delivered here

    def publish(self, line: bytes) -> None:
        """Public lines made during one reactor turn go to Redis together at
        its end (L{Outbox})."""
        self.outbox.publish(line)

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        membership = self.membership
        if not membership.inside:
            return fail(ClusterUnreachable(UNREACHABLE))
        if membership.holding():
            later: Deferred[bool] = Deferred()

            def then(known: bool) -> None:
                if known:
                    self.whisper(target, line).chainDeferred(later)
                else:
                    later.errback(ClusterUnreachable("this node was taken for dead"))

            membership.hold(then)
            return later
        self.outbox.send()  # the public lines made before go first
        return membership.registry.whisper(target, line).addErrback(membership.refused)

    def heard(self, channel: bytes, data: bytes) -> None:
        """A message on one of the node's channels."""
        membership = self.membership
        if membership.holding():
            membership.hold(lambda known: self.heard(channel, data) if known else None)
            return
        registry = membership.registry
        kind = registry.kind(channel)
        if kind is None:
            log.warn(
                "cluster: a message on an unknown channel {channel!r}", channel=channel
            )
            return
        try:
            message = decode(kind, data)
        except MalformedMessage as e:
            log.warn("cluster: a message that does not parse: {why}", why=str(e))
            return
        origin = registry.origin
        chat = membership.chat
        feed = self.outbox.feed
        if feed is not None and isinstance(
            message, Public | LateDeparture | ReapedDeparture | RoomLines
        ):
            feed.soon()  # another node kept a line in Redis's window
        match message:
            case Public() if message.origin != origin:
                chat.deliver(message.lines)
            case RoomLines() if message.origin != origin and self.rooms is not None:
                self.rooms.heard(registry.room_of(channel), message.lines)
            case LateDeparture():
                self.heard_late(message.entry, message.origin, message.line)
            case ReapedDeparture() if origin not in (message.origin, message.node):
                # (This node reaped while it stalled: its users are told so
                # by the node itself, never that they left.)
                chat.deliver(message.line)
            case Private():
                chat.deliver_private(message.target, message.line)
            case Joined() if self.rooms is not None:
                self.rooms.joined(message)
            case Kick() | Answer() | BanShared() | BanLifted():
                self.moderation.heard(message)

    def heard_late(self, entry: bytes, origin: bytes, line: bytes) -> None:
        """A departure another node announced late: delivered here once (it
        may come both published and read back when registering again)."""
        if origin == self.membership.registry.origin:
            return
        now = self.membership.clock.seconds()
        if entry in self._seen:
            return
        horizon = now - 2 * self.membership.config.retention
        for old in [e for e, at in self._seen.items() if at < horizon]:
            del self._seen[old]
        self._seen[entry] = now
        self.membership.chat.deliver(line)


class ClusterRooms:
    """The rooms' seam in a cluster (L{chatproto.rooms.Cluster}): rooms
    span the nodes.

    Redis holds each room's members on every node, in the order they
    joined, its topic, and which rooms exist (--max-rooms counts them
    there); each node holds its own members (L{Rooms}). A room's lines go
    on its own channel, which a node hears while it has members in the
    room, or a join under way (L{listen}, L{quiet}): a room's line costs
    nothing on a node without members in it. Out of the cluster, the
    members here come and go here only: the node registers them again
    when it is back (L{resync})."""

    def __init__(
        self, membership: Membership, outbox: Outbox, subscription: Listener
    ) -> None:
        self.membership = membership
        self.outbox = outbox
        self.subscription = subscription
        self.rooms: Rooms | None = None
        self._here: dict[str, int] = {}  # members here (or joining), by room
        # Rooms whose subscription Redis has not confirmed yet: the joins
        # waiting for it.
        self._subscribing: dict[str, list[Deferred[None]]] = {}
        # Joins under way, by (room, Nick): until their Joined message (or
        # the script's answer, if it was not heard).
        self._joins: dict[tuple[str, str], Deferred[Gathered]] = {}
        self._timers: dict[tuple[str, str], IDelayedCall] = {}

    def attach(self, rooms: Rooms) -> None:
        self.rooms = rooms

    # Hearing a room

    def listen(self, name: str) -> None:
        count = self._here.get(name, 0)
        self._here[name] = count + 1
        if count:
            return
        self._subscribing[name] = []
        channel = self.membership.registry.room_channel(name)
        d = self.subscription.subscribe(channel)
        d.addErrback(self.membership.failed)
        d.addBoth(lambda _: self._heard(name))

    def _heard(self, name: str) -> None:
        for waiting in self._subscribing.pop(name, []):
            waiting.callback(None)

    def _when_heard(self, name: str) -> Deferred[None]:
        """Fires once Redis confirmed the room's subscription."""
        waiting = self._subscribing.get(name)
        if waiting is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        waiting.append(d)
        return d

    def quiet(self, name: str) -> None:
        count = self._here.get(name, 0) - 1
        if count > 0:
            self._here[name] = count
            return
        self._here.pop(name, None)
        channel = self.membership.registry.room_channel(name)
        self.subscription.unsubscribe(channel).addErrback(self.membership.failed)

    def heard(self, name: str, lines: bytes) -> None:
        """Lines of room C{name} from another node."""
        if self.rooms is not None:
            self.rooms.deliver(name, lines)

    # Members

    def join(self, name: str, nick: str, most: int) -> Deferred[Gathered]:
        """Fires where the member comes in among the room's lines: when the
        L{Joined} message the join script published on this node's channel
        is heard (the lines heard after it are the member's, those before
        are not: Redis gives one subscriber its messages in the order it
        published them, whatever the channel). If the subscription did not
        hear it (down), from the script's answer, at once or after
        redis_timeout."""
        membership = self.membership
        if not membership.inside or membership.holding():
            return fail(ClusterUnreachable(UNREACHABLE))
        key = (name, nick)
        if key in self._joins:  # not for one session: its lines wait
            return fail(ClusterUnreachable(UNREACHABLE))
        waiting: Deferred[Gathered] = Deferred()
        self._joins[key] = waiting
        heard = self._when_heard(name)  # its lines reach the user from now on
        d = heard.addCallback(lambda _: membership.registry.room_join(name, nick, most))
        d.addCallbacks(
            self._answered, self._failed, callbackArgs=(key,), errbackArgs=(key,)
        )
        return waiting

    def _answered(self, answer: tuple[Gathered, bool], key: tuple[str, str]) -> None:
        gathered, heard = answer
        if self._joins.get(key) is None:
            return  # its Joined message came first
        if not heard:
            self._complete(key, gathered)
            return
        call = self.membership.clock.callLater(
            self.membership.config.redis_timeout, self._complete, key, gathered
        )
        self._timers[key] = call

    def _failed(self, failure: Failure, key: tuple[str, str]) -> None:
        waiting = self._joins.pop(key, None)
        if failure.check(ClusterUnreachable):
            try:
                self.membership.refused(failure)
            except ClusterUnreachable:
                failure = Failure()
        if waiting is not None:
            waiting.errback(failure)

    def _complete(self, key: tuple[str, str], gathered: Gathered) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        waiting = self._joins.pop(key, None)
        if waiting is not None:
            waiting.callback(gathered)

    def joined(self, message: Joined) -> None:
        """The L{Joined} message of a join of this node: the member is in
        from here on."""
        gathered = Gathered(message.members, message.topic)
        self._complete((message.room, message.nick), gathered)

    def part(self, nick: str, names: list[str]) -> None:
        """Out of the cluster: nothing now (L{resync} will); after a stall,
        once the node knows it was not reaped (if it was, the reaper took
        its members out of their rooms)."""
        membership = self.membership
        if not membership.inside:
            return
        if membership.holding():
            membership.hold(lambda known: self.part(nick, names) if known else None)
            return
        membership.registry.room_part(nick, names).addErrback(membership.failed)

    def read(self, name: str) -> Deferred[Gathered]:
        if not self.membership.inside:
            return fail(ClusterUnreachable(UNREACHABLE))
        return self.membership.registry.room_read(name).addErrback(self._refused)

    def counts(self) -> Deferred[tuple[int, list[tuple[str, int]]]]:
        if not self.membership.inside:
            return fail(ClusterUnreachable(UNREACHABLE))
        return self.membership.registry.room_counts().addErrback(self._refused)

    def set_topic(self, name: str, topic: str) -> Deferred[None]:
        membership = self.membership
        if membership.state is not NodeState.SERVING or membership.holding():
            return fail(ClusterUnreachable(UNREACHABLE))
        d = membership.registry.room_topic(name, topic)
        return d.addCallbacks(lambda _: None, self._refused)

    def publish(self, name: str, line: bytes) -> None:
        self.outbox.publish_room(self.membership.registry.room_channel(name), line)

    def resync(self) -> None:
        """In the cluster (again): Redis gets this node's members of rooms
        as they are now (those who left meanwhile leave, and, if Redis lost
        its data, those it lacks come back, last)."""
        if self.rooms is None:
            return
        d = self.membership.registry.room_sync(self.rooms.here())
        d.addErrback(self.membership.failed)
        d.addErrback(self.membership.bug, "registering the rooms' members again")

    def _refused(self, failure: Failure) -> Failure:
        """A call for a user failed: cut off if Redis was the cause."""
        if failure.check(ClusterUnreachable):
            self.membership.refused(failure)
        return failure


class ClusterModeration:
    """Moderation between nodes: kicks and answers carried, the bans copied.

    Every node keeps a copy of the cluster's bans, kept up to date by the
    bans channel, so that admitting a connection costs no Redis round trip
    (admission is synchronous, and a herd of 10,000 reconnecting clients
    would be 10,000 of them). The copy is read whole each time the node
    joins or comes back (L{load}), as bans made (or lifted) meanwhile may
    have been missed: Redis's replaces it. Bans and unbans are refused
    while the node is not serving (moderation.py, _cut_off)."""

    def __init__(self, membership: Membership, outbox: Outbox) -> None:
        self.membership = membership
        self.outbox = outbox

    @property
    def accepting(self) -> bool:
        """Whether the node is in the cluster now: bans are refused if not."""
        return self.membership.state is NodeState.SERVING

    def kick(self, kick: Kick) -> Deferred[bool]:
        """Carry a kick (a ban, if it has minutes) to the node that holds
        its target (moderation.py)."""
        membership = self.membership
        if not membership.inside or membership.holding():
            return fail(ClusterUnreachable(UNREACHABLE))
        return membership.registry.kick(kick).addErrback(membership.refused)

    def answer(self, operator: str, target: str, line: bytes) -> Deferred[bool]:
        """Carry the answer to C{operator}'s ban of C{target} to the node
        that holds C{operator} (moderation.py)."""
        membership = self.membership
        if not membership.inside or membership.holding():
            return fail(ClusterUnreachable(UNREACHABLE))
        d = membership.registry.answer(operator, target, line)
        return d.addErrback(membership.refused)

    def share_ban(self, ban: Ban) -> Deferred[None]:
        """Make the ban hold on every node; fails while the node is not
        serving (moderation refuses bans then: they would hold here only)."""
        return self._share(self.membership.registry.ban, ban)

    def share_unban(self, address: str) -> Deferred[None]:
        """Lift the ban on every node; fails while the node is not serving."""
        return self._share(self.membership.registry.unban, address)

    def _share(
        self, change: Callable[[Any], Deferred[None]], what: Any
    ) -> Deferred[None]:
        if self.membership.state is not NodeState.SERVING:
            return fail(ClusterUnreachable(UNREACHABLE))
        return change(what).addErrback(self.membership.refused)

    def load(self) -> None:
        """Read the cluster's bans whole (the node joined, or came back)."""
        membership = self.membership
        moderation = membership.chat.moderation
        moderation.reading_bans()
        d = membership.registry.bans(membership.clock.seconds())
        d.addCallbacks(moderation.heard_bans, membership.failed)
        d.addErrback(membership.bug, "reading the bans")

    def heard(self, message: Kick | Answer | BanShared | BanLifted) -> None:
        """What another node's moderation told this node."""
        membership = self.membership
        moderation = membership.chat.moderation
        match message:
            case Kick():
                membership.chat.heard_kick(message)
            case Answer():
                moderation.heard_answer(message.operator, message.target, message.line)
            case BanShared() if message.origin != membership.registry.origin:
                ban = Ban.from_shared(message.address, message.value)
                if ban is not None:
                    moderation.heard_ban(ban)
            case BanLifted() if message.origin != membership.registry.origin:
                moderation.heard_unban(message.address)
