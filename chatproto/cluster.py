"""Cluster mode: several server processes serve one chat through one Redis.

Each process is a node. L{ClusterNode} makes one process a node: a twisted
Service that builds the node's parts, each with one job, and starts and
stops them:

    chatproto/cluster_redis.py      the data in Redis, its scripts, and
                                    RedisRegistry, which runs them
    chatproto/cluster_messages.py   what the nodes tell each other
    chatproto/cluster_membership.py the node's life: its state machine,
                                    lease, heartbeat, reaping, the check
                                    after a stall, registering again
    chatproto/cluster_roles.py      what the node does for its chat: the
                                    factory's registry, relay and history,
                                    moderation's cluster, and the rooms
                                    across the nodes

tap.py gives each role to the seam of the factory it fills.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, cast

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

# At module level: the cluster mode is Redis. txredisapi, which _redis needs,
# is an optional extra; tap.py imports this module only for --redis, so a
# server without it runs without txredisapi.
from chatproto._redis import Commands, Subscription
from chatproto.accounts import RedisAccounts, RedisTries
from chatproto.cluster_membership import Chat, Membership, NodeState, grace
from chatproto.cluster_redis import RedisRegistry
from chatproto.cluster_roles import (
    ClusterAccounts,
    ClusterHistory,
    ClusterModeration,
    ClusterNicknames,
    ClusterRelay,
    ClusterRooms,
    Outbox,
    StoreFeed,
)
from chatproto.config import ClusterConfig, ServerConfig
from chatproto.history import RedisHistory
from chatproto.store import StoreHistory

Connect = Callable[["ClusterNode"], tuple[Commands, Subscription, RedisRegistry]]


def _connect_to_redis(
    node: ClusterNode,
) -> tuple[Commands, Subscription, RedisRegistry]:
    """The node's connections to Redis, not connected yet: one for commands,
    one subscribed to its channels. (A test passes a function that returns
    doubles.)"""
    config = node.config
    commands = Commands(config.redis, node.clock, config.redis_timeout, node.reactor)
    registry = RedisRegistry(
        commands, config.name, node.id, config.lease, grace(config)
    )
    subscription = Subscription(
        config.redis,
        tuple(registry.channels),
        node.heard,
        node.listening,
        node.clock,
        config.redis_timeout,
        node.reactor,
    )
    return commands, subscription, registry


class ClusterNode(service.Service):
    """One server process of a cluster: builds its parts, starts and stops them.

    Build the chat, then the node with it; then give each role to its seam
    (tap.py): C{nicknames} is the factory's registry, C{relay} its relay,
    C{rooms} the cluster of its rooms (L{chatproto.rooms.Rooms.attach}),
    C{history} (if the node keeps one: C{history} given) its history (read
    from C{store}, the node's own, when given), C{moderation} moderation's
    cluster, C{accounts} the book of its protected nicknames and C{tries}
    the count of their password tries (shared by the nodes). The node's
    life is its
    C{membership}'s (L{Membership}, whose docstring draws its states); the
    node passes what the membership says to the roles (L{Roles}).
    """

    def __init__(
        self,
        config: ClusterConfig,
        chat: Chat,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        node_id: str | None = None,
        connect: Connect = _connect_to_redis,
        history: ServerConfig | None = None,
        store: StoreHistory | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as default

            clock = cast(IReactorTime, default)
        self.config = config
        self.chat = chat
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.id = node_id or secrets.token_hex(6)
        # Its two connections to Redis, built now, connected when the service
        # starts, and the registry that runs on them.
        connections = connect(self)
        self.commands, self.subscription, self.registry = connections
        self.membership = Membership(
            config, chat, clock, self.id, connections, roles=self
        )
        kept = (
            None
            if history is None
            else RedisHistory(self.commands, config.name, history)
        )
        # The node's own store, fed from Redis's window (None: none).
        self.feed = (
            None
            if kept is None or store is None
            else StoreFeed(self.membership, kept, store)
        )
        self.outbox = Outbox(self.membership, kept, self.feed)
        self.nicknames = ClusterNicknames(self.membership, self.outbox)
        self.moderation = ClusterModeration(self.membership, self.outbox)
        self.rooms = ClusterRooms(self.membership, self.outbox, self.subscription)
        self.relay = ClusterRelay(
            self.membership, self.outbox, self.moderation, self.rooms
        )
        self.history = (
            None if kept is None else ClusterHistory(self.membership, self.outbox)
        )
        self.accounts = ClusterAccounts(
            self.membership, self.nicknames, RedisAccounts(self.commands, config.name)
        )
        self.tries = RedisTries(self.commands, config.name, "nick")

    @property
    def state(self) -> NodeState:
        return self.membership.state

    @property
    def accepting(self) -> bool:
        """Whether new nicknames are taken now."""
        return self.membership.state is NodeState.SERVING

    @property
    def heartbeat(self) -> LoopingCall:
        return self.membership.heartbeat

    # Life

    def startService(self) -> None:
        super().startService()
        self.membership.start()

    def stopService(self) -> Deferred[None]:
        """Announce the users still registered here, give the lease back,
        and close the connections: the other nodes need not wait for the
        lease to expire."""
        if self.membership.state in (NodeState.STOPPED, NodeState.STOPPING):
            return succeed(None)
        super().stopService()
        return self.membership.stop()

    # What the subscription hears

    def heard(self, channel: bytes, data: bytes) -> None:
        self.relay.heard(channel, data)

    def listening(self, listening: bool, why: str) -> None:
        self.membership.heard(listening, why)

    # What the membership tells the roles (Roles)

    def joined(self) -> None:
        self.moderation.load()
        self.rooms.resync()
        if self.feed is not None:  # the lines said while it was away
            self.feed.soon()

    def admit(self) -> None:
        self.nicknames.admit_waiting()

    def send(self) -> None:
        self.outbox.send()

    def send_now(self) -> None:
        self.outbox.send_now()

    def dropped(self) -> None:
        self.outbox.drop()

    def refuse_waiting(self) -> None:
        self.nicknames.refuse_waiting()

    def keep_published(self, lines: list[bytes]) -> Deferred[None]:
        return self.outbox.keep_published(lines)

    def heard_late(self, entry: bytes, origin: bytes, line: bytes) -> None:
        self.relay.heard_late(entry, origin, line)
