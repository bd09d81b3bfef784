"""Who gets in: the connection limits, the time a connection has to
register, and the flood memory per address.

An L{Admission} counts connections of any kind that say where they come
from and can be closed to make room (an L{Entrant}): the chat's sessions
(TCP and WebSocket alike), and the HTTP connections a site holds before
they become sessions (chatproto/sites.py), each site its own."""

from __future__ import annotations

import collections
import functools
import ipaddress
import socket
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatproto import wire

if TYPE_CHECKING:
    from chatproto.config import ServerConfig
    from chatproto.metrics import Metrics

# An unregistered connection makes room for a newcomer only once it has been
# connected this long. A herd of honest clients reconnecting at once (a
# restart) must not evict each other before they had time to register, which
# takes them a round trip or two; a squatter, which never registers, is old.
EVICTION_GRACE = 10.0

# A deadline is past when the clock is this close to it: a call scheduled
# for it may run a rounding error before it (the delay is computed from
# the time now).
ROUNDING = 1e-6


def source(host: str | None) -> str | None:
    """Where a connection comes from, for the per-address limits: its IPv4
    address, or the /64 of its IPv6 address (what one subscriber is usually
    given: 2**64 addresses to pick from, one at a time)."""
    if host is None or ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


@functools.lru_cache(maxsize=4096)
def network(host: str | None, prefix: int, prefix6: int) -> str | None:
    """The network a source() is in, for the per-network limit: its IPv4
    /C{prefix}, or its IPv6 /C{prefix6} (at most the /64 source() keeps),
    as C{192.0.2.0/24} or C{2001:db8:1::/48}. A host that is not an address
    (a test's; a UNIX socket's None) is its own network.

    Called when a connection comes and when it goes, for hosts that come
    back: cached. Computed with the socket module's functions rather than
    ipaddress's objects (measured: 2-5 us a call, against 13 for IPv4 and
    42 for IPv6)."""
    if host is None:
        return None
    address, _, length = host.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        packed = socket.inet_pton(family, address)
        given = int(length) if length else 128
    except (OSError, ValueError):
        return host
    width = 8 * len(packed)
    bits = max(0, min(prefix if family == socket.AF_INET else prefix6, given, width))
    number = int.from_bytes(packed, "big") >> (width - bits) << (width - bits)
    return f"{socket.inet_ntop(family, number.to_bytes(len(packed), 'big'))}/{bits}"


class Entrant(Protocol):
    """A connection as an L{Admission} counts it (a L{chatproto.session.Session}
    is one)."""

    host: str | None  # its source(): what the per-address limits count

    def make_room(self) -> None:
        """Close, as the oldest unregistered connection, for a newcomer."""

    def registration_expired(self) -> None:
        """Close: it did not register within the admission's deadline."""


E = TypeVar("E", bound=Entrant)


class Admission(Generic[E]):
    """The connections of one server, counted against its limits.

    Invariants: C{connections} is every connection admitted and not yet
    forgotten; C{per_host} and C{per_network} count them by source() and
    network() (no zero entries); C{unregistered} is those of them that have
    no nickname yet, oldest first, with when they came; C{expired} those of
    them told their time to register is up (see below). Each limit is a
    counter: O(1) per connection. C{spent_tokens} remembers, per address,
    what closed connections left of their flood burst, until it refilled.

    With a C{deadline} (seconds; 0: none), a connection still unregistered
    that long after it came is told so (L{Entrant.registration_expired});
    it stays among the unregistered until it is gone, the first to make
    room meanwhile. One timer serves them all, set
    for the oldest's deadline while any waits: a herd of 10,000 sets one,
    not 10,000 that are cancelled a round trip later.
    """

    def __init__(
        self,
        config: ServerConfig,
        clock: IReactorTime,
        metrics: Metrics | None = None,
        deadline: float = 0.0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.deadline = deadline
        self._expiry: IDelayedCall | None = None  # at the oldest's deadline
        self.expired: set[E] = set()  # unregistered, told their time is up
        if metrics is None:
            from chatproto.metrics import Metrics

            metrics = Metrics()
        self.metrics = metrics  # the room's: refusals are counted there
        self.connections: set[E] = set()
        self.per_host: collections.Counter[str] = collections.Counter()
        self.per_network: collections.Counter[str] = collections.Counter()
        # An OrderedDict, not a dict: taking the first of a dict whose first
        # entries were deleted walks over their holes (measured with 5,000
        # entries, evicting the oldest and adding one: 4 us a step against
        # 0.17 for an OrderedDict).
        self.unregistered: collections.OrderedDict[E, float] = collections.OrderedDict()
        self.spent_tokens: dict[str, tuple[float, float]] = {}
        self.closed = False  # the server stops: nobody new gets in

    def admit(self, session: E) -> bytes | None:
        """Count a new connection in, or say why it is refused.

        Connections that never register must not keep others out: when the
        server is full, or the unregistered ones are at their share, the
        oldest unregistered one makes room for the newcomer, if it has been
        connected for EVICTION_GRACE (squatters are old; a herd of honest
        clients connecting at once is young, and the share does not bind
        against it). A newcomer refused for its address or its network
        evicts nobody."""
        config = self.config
        if self.closed:
            self.metrics.refused("stopping", session.host)
            return wire.notice(wire.STOPPING)
        now = self.clock.seconds()
        full = len(self.connections) >= config.max_connections
        victim = None
        if full or len(self.unregistered) >= config.unregistered_limit:
            victim = self._oldest_unregistered(now)
            if victim is None and full:
                self.metrics.refused("full", session.host)
                return wire.notice(wire.SERVER_FULL)
        host = session.host if config.max_per_ip > 0 else None
        if host is not None and self.per_host[host] >= config.max_per_ip:
            self.metrics.refused("per_address", session.host)
            return wire.notice(wire.TOO_MANY_FROM_HOST)
        net = self._network(session.host)
        if net is not None and self.per_network[net] >= config.network_limit:
            self.metrics.refused("per_network", session.host)
            return wire.notice(wire.TOO_MANY_FROM_NETWORK)
        if victim is not None:
            victim.make_room()
            self.forget(victim)  # closing: its slot is the newcomer's now
        if host is not None:
            self.per_host[host] += 1
        if net is not None:
            self.per_network[net] += 1
        self.connections.add(session)
        self.unregistered[session] = now
        if self._expiry is None and self.deadline > 0:
            self._expiry = self.clock.callLater(self.deadline, self._expire)
        return None

    def _expire(self) -> None:
        """Tell the unregistered connections past the deadline, oldest
        first, and wait for the next one's. Those told stay unregistered
        (and the first to make room) until they are closed and forgotten."""
        self._expiry = None
        now = self.clock.seconds()
        due = []
        for session, since in self.unregistered.items():
            if session in self.expired:
                continue
            wait = since + self.deadline - now
            if wait > ROUNDING:
                self._expiry = self.clock.callLater(wait, self._expire)
                break
            due.append(session)
        for session in due:
            self.expired.add(session)
            session.registration_expired()

    def _stop_expiry(self) -> None:
        """Nobody is unregistered: no deadline to wait for."""
        if self._expiry is not None:
            if self._expiry.active():
                self._expiry.cancel()
            self._expiry = None

    def _oldest_unregistered(self, now: float) -> E | None:
        """The unregistered connection that came first, if it has been
        connected for EVICTION_GRACE (if it has not, none has)."""
        for session, since in self.unregistered.items():
            return session if now - since >= EVICTION_GRACE else None
        return None

    def _network(self, host: str | None) -> str | None:
        """What the per-network limit counts C{host} in; None: no limit."""
        config = self.config
        if host is None or config.network_limit <= 0:
            return None
        return network(host, config.network_prefix, config.network_prefix6)

    def registered(self, session: E) -> None:
        """A connection registered its nickname: it is no squatter."""
        self.unregistered.pop(session, None)
        self.expired.discard(session)
        if not self.unregistered:
            self._stop_expiry()

    def forget(self, session: E) -> None:
        """A connection is closed: it no longer counts against any limit."""
        if session not in self.connections:
            return
        self.connections.discard(session)
        self.unregistered.pop(session, None)
        self.expired.discard(session)
        if not self.unregistered:
            self._stop_expiry()
        host = session.host
        if host is not None and self.config.max_per_ip > 0:
            self.per_host[host] -= 1
            if self.per_host[host] <= 0:
                del self.per_host[host]
        net = self._network(host)
        if net is not None:
            self.per_network[net] -= 1
            if self.per_network[net] <= 0:
                del self.per_network[net]

    def tokens_for(self, host: str | None, now: float) -> float:
        """The flood tokens a new connection from C{host} starts with: a full
        burst, unless connections from there spent them lately (reconnecting
        does not refill the burst)."""
        burst = float(self.config.flood_burst)
        spent = self.spent_tokens.get(host) if host is not None else None
        if spent is None:
            return burst
        tokens, at = spent
        return min(burst, tokens + (now - at) * self.config.flood_rate)

    def remember_tokens(self, host: str | None, tokens: float, at: float) -> None:
        """Keep what a closing connection left of its burst, until it would
        have refilled (hosts are forgotten lazily, when there are many)."""
        config = self.config
        if host is None or config.flood_rate <= 0:
            return
        now = self.clock.seconds()
        left = min(self.tokens_for(host, now), tokens + (now - at) * config.flood_rate)
        if left >= config.flood_burst:
            self.spent_tokens.pop(host, None)
            return
        self.spent_tokens[host] = (left, now)
        if len(self.spent_tokens) > 2 * config.max_connections:
            full = [
                h
                for h in self.spent_tokens
                if self.tokens_for(h, now) >= config.flood_burst
            ]
            for h in full:
                del self.spent_tokens[h]
