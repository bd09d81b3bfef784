"""The web site of C{--metrics}: C{/metrics}, in the Prometheus text format.

Apart from L{chatproto.metrics} (the counters the room keeps) so that the
room imports no web server: this module, twisted.web and prometheus-client
are loaded only by a server started with C{--metrics}.

The site holds at most L{CONNECTIONS} connections, each for at most
chatproto.sites.DEADLINE seconds (a scrape takes one, briefly): the
bounds of chatproto/sites.py, so that idle or slow connections cannot hold
descriptors or keep the scraper out."""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from chatproto.config import ServerConfig
from chatproto.metrics import Metrics, RoomCollector, Watched
from chatproto.sites import BoundedSite, admission

# Connections the site holds at once, from any address: a scraper or two
# need one each, for a moment.
CONNECTIONS = 16


class MetricsPage(Resource):
    """C{/metrics}: the room's numbers in the Prometheus text format."""

    isLeaf = True

    def __init__(self, room: Watched) -> None:
        super().__init__()
        from prometheus_client import CollectorRegistry

        # Its own registry: not the process-wide one, whose default
        # collectors (and whatever else registered there) are not ours.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RoomCollector(room))

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _Root(Resource):
    """Everything but /metrics: not found."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        from twisted.web.pages import notFound

        return cast(Resource, notFound())


def metrics_site(room: Watched, clock: IReactorTime) -> BoundedSite:
    """The web site of C{--metrics}: C{/metrics}, and nothing else; at most
    L{CONNECTIONS} connections (a refusal is logged, not counted in the
    room's metrics), timed on C{clock}."""
    root = _Root()
    root.putChild(b"metrics", MetricsPage(room))
    bounds = ServerConfig(max_per_ip=0, max_per_network=0)
    connections = admission(bounds, CONNECTIONS, clock, Metrics(clock))
    return BoundedSite(root, clock, connections)
