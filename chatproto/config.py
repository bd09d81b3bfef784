"""The server's configuration, in one place: what the twistd options set
(see tap.py) and what the server and the cluster read.

It imports nothing of chatproto, and nothing optional (no Redis client):
tap.py reads it to build the options, the cluster (cluster.py, _redis.py)
to run, and neither needs the other for it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

# A cluster whose nodes have stores (--redis with --store): the defaults of
# history_lines and history_bytes, which bound Redis's window. Each node
# copies the window into its store (chatproto/cluster_roles.py, StoreFeed)
# a fraction of a second after a line is kept, and the lines said while it
# was away when it joins: the window must hold what the busiest moment says
# meanwhile (10,000 lines: two seconds at 5,000 lines a second).
CLUSTER_WINDOW_LINES = 10_000
CLUSTER_WINDOW_BYTES = 8 << 20


@dataclass(frozen=True)
class ServerConfig:
    """Every limit of the server; the twistd options set them (see tap.py)."""

    ping_interval: float = 10.0
    max_missed_pings: int = 3
    max_line: int = 4096
    registration_timeout: float = 60.0
    list_limit: int = 100
    join_notice_limit: int = 100
    flood_burst: int = 5
    flood_rate: float = 2.0
    # Lines waiting their turn (past the burst, at flood_rate), bounded in
    # number and in bytes: a pasted stack trace waits and goes out paced; a
    # client that sends beyond both bounds is a flooder, and is cut.
    flood_queue: int = 100
    flood_queue_bytes: int = 16 * 1024
    max_output: int = 1 << 20
    max_per_ip: int = 16
    max_connections: int = 10_000
    # Connections from one network: an IPv4 /network_prefix, an IPv6
    # /network_prefix6 (None: a quarter of max_connections; 0: no limit).
    max_per_network: int | None = None
    network_prefix: int = 24
    network_prefix6: int = 48
    # Connections that have not registered a nickname yet, past which the
    # oldest makes room for a newcomer (None: half of max_connections).
    max_unregistered: int | None = None
    close_timeout: float = 10.0
    shutdown_timeout: float = 5.0
    batch_delay: float = 0.02
    batch_threshold: int = 200_000  # deliveries per second
    # A pass writes the public lines to this many users per reactor turn and
    # lets the reactor read between two: a line made during a long pass
    # (10,000 users: about 80 ms) reaches the users the pass has yet to serve
    # in this pass, and the others in the next, rather than after the pass.
    pass_size: int = 128
    nodelay: str = "talkers"  # TCP_NODELAY for: "talkers", "all" or "none"
    # The history without a store (chatproto/history.py: --store none, and
    # a cluster's in Redis): the last public lines, bounded in lines and in
    # bytes; lines older than history_age (seconds) are forgotten.
    history_lines: int = 100
    history_bytes: int = 256 * 1024
    history_age: float = 12 * 3600.0
    # The SQLite store (chatproto/store.py, --store): it forgets lines older
    # than history_days, and the oldest past history_max_bytes of lines.
    history_days: float = 30.0
    history_max_bytes: int = 1 << 30
    # Protected nicknames (chatproto/accounts.py): one unused for longer
    # than this many days is free again.
    nick_days: float = 90.0
    # Rooms (chatproto/rooms.py): named rooms at once on the server (the
    # lobby not counted), and rooms one user is in besides the lobby.
    max_rooms: int = 1000
    rooms_per_user: int = 20

    @property
    def network_limit(self) -> int:
        """max_per_network, or by default a quarter of max_connections: one
        network never holds more than a quarter of the server, and a herd
        spread over four networks (a benchmark's) still fits. 0: no limit
        (so also the default below 4 connections in all)."""
        if self.max_per_network is None:
            return self.max_connections // 4
        return self.max_per_network

    @property
    def unregistered_limit(self) -> int:
        """max_unregistered, or by default half of max_connections."""
        if self.max_unregistered is None:
            return self.max_connections // 2
        return self.max_unregistered


# The cluster mode: how a node reaches its cluster.

CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


def valid_cluster_name(name: str) -> bool:
    """Whether C{name} can name a cluster: it goes into every Redis key and
    channel name of the cluster, so 1 to 64 letters, digits, C{_ . -}."""
    return CLUSTER_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is: C{redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]}."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Read a C{redis://} URL; raise ValueError with a sentence a user
        understands when it is not one."""
        example = "redis://127.0.0.1:6379/0"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r} is not a Redis URL such as {example}.") from None
        if parts.scheme != "redis":
            raise ValueError(
                f"{url!r} is not a Redis URL: it must start with redis:// "
                f"(for example {example})."
            )
        if not parts.hostname:
            raise ValueError(f"{url!r} names no host; for example {example}.")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r}: a Redis URL takes no ?query or #fragment.")
        db_text = parts.path.lstrip("/")
        if not db_text:
            db = 0
        elif db_text.isascii() and db_text.isdigit():
            db = int(db_text)
        else:
            raise ValueError(
                f"{url!r}: the database after the / must be a number, as in {example}."
            )
        return cls(
            host=parts.hostname,
            port=6379 if port is None else port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        """The URL without its password, for logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def _option(name: str, help: str, least: float | None = None) -> dict[str, Any]:
    """A field's twistd option: its name, its help, and for a number the
    smallest value allowed. tap.py builds the options from these, so that a
    default or a description is written once, here."""
    option: dict[str, Any] = {"option": name, "help": help}
    if least is not None:
        option["least"] = least
    return option


@dataclass(frozen=True)
class ClusterConfig:
    """How a node reaches its cluster; the twistd options set it (tap.py,
    from the metadata of these fields)."""

    redis: RedisAddress = field(
        metadata=_option(
            "redis",
            "Cluster mode: serve one chat with every node started with this "
            "Redis, redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (for example "
            "redis://127.0.0.1:6379/0). Without it, the chat is this process "
            "alone.",
        )
    )
    name: str = field(
        default="chat",
        metadata=_option(
            "cluster",
            "With --redis: the cluster's name, so that several chats can share "
            "one Redis (letters, digits, _ . -).",
        ),
    )
    node_timeout: float = field(
        default=30.0,
        metadata=_option(
            "node-timeout",
            "With --redis: when a node dies, its users are announced gone and "
            "their nicknames freed by the others within this many seconds.",
            least=0.5,
        ),
    )
    redis_timeout: float = field(
        default=2.0,
        metadata=_option(
            "redis-timeout",
            "With --redis: seconds every Redis call may take; past that, Redis "
            "counts as unreachable.",
            least=0.05,
        ),
    )

    @property
    def tick(self) -> float:
        """Seconds between two heartbeats: renew the lease, reap the dead."""
        return min(1.0, self.node_timeout / 4)

    @property
    def retention(self) -> float:
        """Seconds a departure announced late (after an outage) is kept for
        the nodes that come back later still."""
        return max(60.0, 2 * self.node_timeout)

    @property
    def lease(self) -> float:
        """A node that stopped renewing its lease is dead this long after its
        last renewal; reaped at most one tick later: node_timeout in all."""
        return self.node_timeout - self.tick
