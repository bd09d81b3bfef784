"""What an operator watches: counters kept by the room, read at scrape time.

The server (L{chatproto.server.ChatFactory}) owns one L{Metrics}; the few
places where an event happens add to a plain int there (a public line said,
a private line delivered, the users a public line is for, a departure, a
refused connection), so that the broadcast path pays an integer
addition and nothing more. Gauges (users, connections) are not kept at all:
they are the lengths of the room's own tables, read when Prometheus scrapes.

With C{--metrics ENDPOINT} (chatproto/tap.py), the site of
L{chatproto.metrics_page} serves C{/metrics} in the Prometheus text format:
L{RoomCollector}, on its own registry, turns these numbers into metric
families at each scrape. Only that part needs prometheus-client (the
C{metrics} extra) and twisted.web, imported when it is built: the room
imports this module, and a server without C{--metrics} or C{--web} loads no
web server (twisted.web and what it imports: 2.4 MiB resident).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

# Why a user left the chat (chatproto_departures_total{reason}); the caller
# says it, never inferred from the lines sent.
DEPARTURES = (
    "quit",  # /quit, or its input ended (a half-closed connection)
    "lost",  # the connection was lost
    "ping",  # it stopped answering pings
    "flood",  # too many lines waiting their turn
    "slow_reader",  # it stopped reading what is sent
    "kicked",  # an operator's /kick
    "banned",  # an operator's /ban (of it, or of its address)
    "shutdown",  # the server stops
    "cluster",  # the cluster took its nickname or this node away
)

# Why a connection (or a nickname) was refused (chatproto_refused_total).
REFUSALS = (
    "per_address",  # --max-per-ip
    "per_network",  # --max-per-network
    "full",  # --max-connections, and nobody to make room
    "banned",  # a banned address
    "stopping",  # the server is stopping
    "nickname_taken",  # the nickname is someone else's
    "nickname_invalid",  # not a nickname (see registry.valid_nickname)
    "host_not_served",  # a web request for a host name not served (--web-host)
    "origin_not_allowed",  # a WebSocket from an origin not allowed (--web-origin)
)

FRONT_ENDS = ("tcp", "web")

# The log of refusals (RefusalLog): the first refusal of an (address,
# reason) is logged at once, the next ones in one summary event per
# REFUSAL_INTERVAL seconds; at most REFUSAL_ADDRESSES are tracked at once.
REFUSAL_INTERVAL = 10.0
REFUSAL_ADDRESSES = 10_000

# The upper bounds of the fan-out latency buckets, in seconds: a pass is
# usually well under a millisecond; batching (--batch-delay) makes tens.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    """The counters of one room. Every field only grows.

    C{deliveries} is the public lines given to users, one per line per user
    (a write of five lines to one user: five), counted by the fan-out as
    each line is queued: every member but its sender, as the fan-out's
    invariants give each of them that line once, by the end of the next
    pass (one addition per line, rather than one per user per write:
    measured, the latter cost a pass over 2,000 users 10 to 20%). The
    fan-out latency is one observation per pass over the members (or
    flush): from when the oldest line that pass started on was queued
    (FanOut.publish) to the pass's last write, the longest wait of that
    pass's lines (see L{observe_latency})."""

    __slots__ = (
        "deliveries",
        "departures",
        "latency_buckets",
        "latency_sum",
        "private_lines",
        "public_lines",
        "refusal_log",
        "refusals",
        "store_lines_dropped",
        "store_write_failures",
    )

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.public_lines = 0
        self.private_lines = 0
        self.deliveries = 0
        self.departures: dict[str, int] = dict.fromkeys(DEPARTURES, 0)
        self.refusals: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        # One count per bucket (not cumulative), the last one past them all.
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        # The SQLite store (chatproto/store.py): public lines it could not
        # keep (its unsaved lines full), and its writes that failed.
        self.store_lines_dropped = 0
        self.store_write_failures = 0
        # Without a clock (a Metrics built alone), each refusal is logged.
        self.refusal_log = None if clock is None else RefusalLog(clock)

    def departed(self, reason: str) -> None:
        self.departures[reason] = self.departures.get(reason, 0) + 1

    def refused(self, reason: str, address: str | None, logged: bool = True) -> None:
        """Count a refusal, and log it (unless the caller logged it, with its
        own details, and the same C{act} and C{reason} fields): every one
        is counted, the log is rate-limited (L{RefusalLog})."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        if not logged:
            return
        if self.refusal_log is not None:
            self.refusal_log.refused(reason, address)
            return
        log.info(
            "refused {address}: {reason}",
            act="refused",
            reason=reason,
            address=address,
            count=1,
        )

    def observe_latency(self, seconds: float) -> None:
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class RefusalLog:
    """The log of refused connections, rate-limited: a herd (or an
    attacker) reconnecting a thousand times a second must not write a
    thousand lines a second.

    The first refusal of a (reason, address) is one event at once
    (C{count} 1); the next ones are counted, and every C{interval} seconds
    one summary event per (reason, address) says how many there were
    (C{count}, C{seconds}); a pair quiet for a whole interval is
    forgotten, and its next refusal logged at once again. At most C{cap}
    pairs are tracked: past that, the refusals of the pairs not tracked
    are added up by reason and summed in one event per reason and interval
    (C{address} None), until the table has room again. Every event has
    C{act} (C{refused}, or another refusal's: moderation's C{op-failed}),
    C{reason}, C{address} and C{count}."""

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = REFUSAL_INTERVAL,
        cap: int = REFUSAL_ADDRESSES,
        act: str = "refused",
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.cap = cap
        self.act = act
        # (reason, address) -> refusals not logged yet
        self.pending: dict[tuple[str, str | None], int] = {}
        self.overflow: dict[str, int] = {}  # reason -> refusals past the cap
        self._call: IDelayedCall | None = None

    def refused(self, reason: str, address: str | None) -> None:
        key = (reason, address)
        pending = self.pending.get(key)
        if pending is not None:
            self.pending[key] = pending + 1
        elif len(self.pending) >= self.cap:
            self.overflow[reason] = self.overflow.get(reason, 0) + 1
        else:
            self.pending[key] = 0
            log.info(
                "{act} {address}: {reason}",
                act=self.act,
                reason=reason,
                address=address,
                count=1,
            )
        if self._call is None:
            self._call = self.clock.callLater(self.interval, self._summarize)

    def _summarize(self) -> None:
        """Log what the last interval refused without saying it; forget the
        pairs it did not refuse at all."""
        self._call = None
        seconds = self.interval
        for (reason, address), count in list(self.pending.items()):
            if not count:
                del self.pending[(reason, address)]
                continue
            self.pending[(reason, address)] = 0
            log.info(
                "{act} {address}: {reason}, {count} more times in {seconds} s",
                act=self.act,
                reason=reason,
                address=address,
                count=count,
                seconds=seconds,
            )
        overflow, self.overflow = self.overflow, {}
        for reason, count in overflow.items():
            log.warn(
                "{act} {count} more times in {seconds} s: {reason} "
                "(from too many addresses to log each)",
                act=self.act,
                reason=reason,
                address=None,
                count=count,
                seconds=seconds,
            )
        if self.pending:
            self._call = self.clock.callLater(self.interval, self._summarize)


# Reading them: the collector, and the web resource that serves it


class Counted(Protocol):
    """What the collector reads of the room's admission."""

    @property
    def connections(self) -> set[Any]: ...


class Watched(Protocol):
    """What the collector reads of the room (L{ChatFactory} is one): its
    sessions and connections have a C{front_end} (Session.front_end)."""

    metrics: Metrics

    @property
    def sessions(self) -> Mapping[str, Any]: ...

    @property
    def admission(self) -> Counted: ...


def by_front_end(sessions: Any) -> dict[str, int]:
    """How many of C{sessions} each front end carries (every one named)."""
    counts = dict.fromkeys(FRONT_ENDS, 0)
    for session in sessions:
        front_end = session.front_end
        counts[front_end] = counts.get(front_end, 0) + 1
    return counts


class RoomCollector:
    """A prometheus-client collector that reads the room at each scrape."""

    def __init__(self, room: Watched) -> None:
        self.room = room

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        room, metrics = self.room, self.room.metrics
        users = GaugeMetricFamily(
            "chatproto_users",
            "Registered users in the chat of this server, by front end.",
            labels=["front_end"],
        )
        for front_end, n in by_front_end(room.sessions.values()).items():
            users.add_metric([front_end], n)
        yield users
        connections = GaugeMetricFamily(
            "chatproto_connections",
            "Open connections to this server (registered or not), by front end.",
            labels=["front_end"],
        )
        for front_end, n in by_front_end(room.admission.connections).items():
            connections.add_metric([front_end], n)
        yield connections
        lines = CounterMetricFamily(
            "chatproto_lines",
            "Lines said: public (by users of this server), private (delivered "
            "to users of this server).",
            labels=["kind"],
        )
        lines.add_metric(["public"], metrics.public_lines)
        lines.add_metric(["private"], metrics.private_lines)
        yield lines
        yield CounterMetricFamily(
            "chatproto_deliveries",
            "Public lines given to users of this server, one per line per user.",
            value=metrics.deliveries,
        )
        departures = CounterMetricFamily(
            "chatproto_departures",
            "Users who left the chat, by reason.",
            labels=["reason"],
        )
        for reason, n in metrics.departures.items():
            departures.add_metric([reason], n)
        yield departures
        refused = CounterMetricFamily(
            "chatproto_refused",
            "Connections (and nicknames) refused, by reason.",
            labels=["reason"],
        )
        for reason, n in metrics.refusals.items():
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily(
            "chatproto_store_lines_dropped",
            "Public lines the store could not keep: too many waited to be "
            "written (its writes failing or lagging).",
            value=metrics.store_lines_dropped,
        )
        yield CounterMetricFamily(
            "chatproto_store_write_failures",
            "Writes of the store that failed (a full disk, a read-only file), "
            "each retried.",
            value=metrics.store_write_failures,
        )
        cumulative, buckets = 0, []
        bounds = [repr(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
        for bound, n in zip(bounds, metrics.latency_buckets, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "chatproto_fanout_latency_seconds",
            "For each pass of the fan-out over the users, the wait of its "
            "oldest public line: from when it was queued to the pass's last write.",
            buckets=buckets,
            sum_value=metrics.latency_sum,
        )
