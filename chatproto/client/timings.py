"""Every delay of the client, in one L{Timings}, and how a delay is said
to the user (L{seconds}). What each delay is for is told in
L{chatproto.client.protocol}'s docstring."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Timings", "seconds"]


@dataclass(frozen=True)
class Timings:
    """Every delay of the protocol, in seconds (see the module docstring of
    L{chatproto.client.protocol})."""

    quiet: float = 0.3
    timeout: float = 10.0
    missed_pings: int = 3
    send_interval: float = 0.05
    linger: float = 2.0
    #: chatproto's server takes 5 lines at once, then 2 a second: the client
    #: keeps a margin under both (a clock that runs a little fast, a server
    #: that remembers what an earlier connection from the address spent).
    burst: int = 4
    rate: float = 1.9
    #: The first wait before trying a nickname again after a cluster outage;
    #: it doubles with each try, up to C{retry_max}.
    retry_first: float = 0.5
    retry_max: float = 4.0


def seconds(duration: float) -> str:
    """C{1 second}, C{2.5 seconds}."""
    return f"{duration:g} second{'' if duration == 1 else 's'}"
