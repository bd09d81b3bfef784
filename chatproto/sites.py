"""The chat's HTTP sites (the page of --web, and /metrics): their connections.

Twisted's HTTP channel keeps a connection for its idle timeout, which every
byte it reads restarts (a request sent a byte every 20 s is never done), and
writes a request's body, of any size, to a temporary file before the
resource answers. The chat's sites serve a few small files, a WebSocket
handshake and /metrics, and take no body. So a connection to one (a
L{Channel} of a L{BoundedSite}):

 - is counted by the site's own L{Admission} (L{admission}): at most so
   many open in all, and the chat's --max-per-ip and --max-per-network
   bounds; when the site is full, the oldest of them makes room for a
   newcomer once it has been open for EVICTION_GRACE, as an unregistered
   TCP connection does; a connection refused is closed at once, unanswered;
 - has DEADLINE seconds from its accept, on the site's clock, and is then
   aborted, whatever it sent meanwhile;
 - is answered 413 and closed as soon as a request's headers announce a body
   (C{Content-Length} above 0, or C{Transfer-Encoding}), before any of the
   body is read;
 - leaves the site's count when it closes, or when it becomes a chat session
   (L{Channel.upgraded}): the chat's own Admission counts it from then on.

A site speaks HTTP/1.1 only (no HTTP/2, which Twisted would offer over TLS
with the h2 package): its channel is Twisted's L{HTTPChannel} itself, not
the wrapper that switches protocols. What this relies on of that channel
beyond its documented interface (C{allHeadersReceived} is called once a
request's headers are in, before its body, with C{length} set from them;
the upgrade to a WebSocket replaces C{connectionLost}) is exercised against
the real channel by tests/test_web_site.py and tests/test_web_site_sockets.py.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site

from chatproto.admission import Admission, source

if TYPE_CHECKING:
    from chatproto.config import ServerConfig
    from chatproto.metrics import Metrics

# Seconds a connection to a site has, from its accept, to be done (or to
# become a WebSocket): a page load or a handshake takes a few round trips.
# Longer than EVICTION_GRACE, so that a full site makes room before then.
DEADLINE = 20.0

TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class Channel(HTTPChannel):
    """One connection to a L{BoundedSite}, until it closes or is upgraded."""

    site: BoundedSite
    transport: Any  # the TCP (or TLS) connection
    host: str | None = None  # its source(), for the per-address bounds

    def allHeadersReceived(self) -> None:
        """A request's headers are in: one announcing a body gets 413 now,
        before its body is read (Twisted would spool it to a file first)."""
        if self.length != 0:  # a Content-Length above 0, or chunked (None)
            self.transport.write(TOO_LARGE)
            self.loseConnection()
            return
        super().allHeadersReceived()

    def make_room(self) -> None:
        """The oldest of a full site: aborted."""
        self.transport.abortConnection()

    def registration_expired(self) -> None:
        """Past the DEADLINE (the site's Admission keeps the time): aborted."""
        self.transport.abortConnection()

    def upgraded(self) -> None:
        """It becomes a WebSocket, a chat session the chat counts: it leaves
        the site's count and has no deadline any more. (Twisted's upgrade
        replaces this channel's connectionLost: not called again.)"""
        self.site.admission.forget(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.admission.forget(self)
        super().connectionLost(reason)


def admission(
    config: ServerConfig, limit: int, clock: IReactorTime, metrics: Metrics
) -> Admission[Channel]:
    """What counts a site's connections: at most C{limit} in all, the
    per-address and per-network bounds of C{config} (by default a quarter
    of C{limit} per network); the oldest makes room only when it is full."""
    bounds = dataclasses.replace(config, max_connections=limit, max_unregistered=limit)
    return Admission(bounds, clock, metrics, deadline=DEADLINE)


class BoundedSite(Site):
    """A site whose connections are L{Channel}s, admitted by C{admission};
    its timeouts run on C{clock}."""

    protocol = Channel  # type: ignore[assignment]

    def __init__(
        self,
        resource: Resource,
        clock: IReactorTime,
        admission: Admission[Channel],
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, reactor=clock, **kwargs)
        self.clock = clock
        self.admission = admission
        self.noisy = False
        self.displayTracebacks = False

    def buildProtocol(self, addr: Any) -> Any:
        channel = cast(Channel, super().buildProtocol(addr))
        channel.host = source(getattr(addr, "host", None))
        if self.admission.admit(channel) is not None:
            return None
        return channel
