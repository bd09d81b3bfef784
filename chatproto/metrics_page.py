"""The web site of C{--metrics}: C{/metrics}, in the Prometheus text format.

Apart from L{chatproto.metrics} (the counters the room keeps) so that the
room imports no web server: this module, twisted.web and prometheus-client
are loaded only by a server started with C{--metrics}."""

from __future__ import annotations

from typing import cast

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from chatproto.metrics import RoomCollector, Watched


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


def metrics_site(room: Watched) -> Site:
    """The web site of C{--metrics}: C{/metrics}, and nothing else."""
    root = _Root()
    root.putChild(b"metrics", MetricsPage(room))
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site
