"""The server's configuration, in one place: what the twistd options set
(see tap.py) and what the server and the cluster read."""

from __future__ import annotations

from dataclasses import dataclass


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
