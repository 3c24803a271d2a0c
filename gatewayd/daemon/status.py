"""The status listener: ``/metrics``, ``/status`` and ``/status/ready``, as Kong's Status API.

It is a second :class:`~twisted.web.server.Site` on its own endpoint (off unless
``--status-listen`` is given), so probes and scrapers never share a port, a
route table or a key-auth plugin with client traffic.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

from attrs import define, field
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.exposition import generate_latest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gatewayd.plugins import prometheus

# Kong's exporter has no ``_created`` series; gatewayd's own families follow it.
disable_created_metrics()

#: After the last request finished, a moment for its last bytes to leave the socket: the
#: reactor's shutdown drops connections without flushing them.
FLUSH_GRACE = 0.1


@define
class Stats:
    """What the node is doing now; the gateway and its Site update it."""

    connections_accepted: int = 0
    connections_active: int = 0
    requests_total: int = 0
    requests_in_flight: int = 0
    generation: int = 0
    loaded_at: float | None = None  # wall clock
    config_hash: str | None = None
    ready: bool = False
    #: Each Redis of ai-rate-limiting-advanced (host:port): whether it answers.
    redis: dict[str, bool] = field(factory=dict)

    def request_started(self) -> None:
        self.requests_total += 1
        self.requests_in_flight += 1

    def request_finished(self) -> None:
        self.requests_in_flight -= 1

    def loaded(self, config_hash: str) -> None:
        self.generation += 1
        self.loaded_at = time.time()
        self.config_hash = config_hash


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json; charset=utf-8")
    return json.dumps(body).encode("utf-8")


class MetricsPage(Resource):
    """Kong's families in Kong's text (the prometheus plugin's), then gatewayd's own."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("content-type", "text/plain; charset=UTF-8")  # as Kong's collect()
        return prometheus.exposition(self.registry).encode("utf-8") + generate_latest(self.registry)


class StatusPage(Resource):
    """Kong's ``/status`` shape (``server`` counters), plus the configuration's generation."""

    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self.stats = stats
        self.putChild(b"ready", ReadyPage(stats))

    def render_GET(self, request: Request) -> bytes:
        s = self.stats
        loaded = (datetime.fromtimestamp(s.loaded_at, timezone.utc).isoformat()
                  if s.loaded_at is not None else None)
        return _json(request, 200, {
            "server": {
                "connections_accepted": s.connections_accepted,
                "connections_active": s.connections_active,
                "total_requests": s.requests_total,
                "requests_in_flight": s.requests_in_flight,
            },
            "configuration": {"generation": s.generation, "loaded_at": loaded,
                              "hash": s.config_hash},
            "configuration_hash": s.config_hash,
            "ready": s.ready,
            "redis": {address: {"reachable": up} for address, up in sorted(s.redis.items())},
        })


class ReadyPage(Resource):
    """200 once the configuration is loaded and the listeners are up; 503 otherwise."""

    isLeaf = True

    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self.stats = stats

    def render_GET(self, request: Request) -> bytes:
        if self.stats.ready:
            return _json(request, 200, {"message": "ready"})
        reason = "draining" if self.stats.generation else "configuration not loaded"
        return _json(request, 503, {"message": f"not ready: {reason}"})


def status_root(stats: Stats, registry: CollectorRegistry) -> Resource:
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    root.putChild(b"status", StatusPage(stats))
    return root


class Readiness(StreamServerEndpointService):
    """The status listener's service: ready once every client listener listens; on stop,
    not ready at once, and this listener stays up until requests drain.

    ``drained`` is the gateway's wait for its requests in flight (it fires
    when they are done or the grace period is over).
    """

    def __init__(self, endpoint: Any, site: Site, stats: Stats, listeners: list[Any],
                 clock: IReactorTime, drained: Callable[[], Deferred[Any]]) -> None:
        super().__init__(endpoint, site)
        self.stats = stats
        self.listeners = listeners
        self.clock = clock
        self.drained = drained

    def startService(self) -> None:
        super().startService()
        waiting = [listener._waitingForPort for listener in self.listeners]
        gatherResults([*waiting, self._waitingForPort]).addCallbacks(
            self._listening, lambda failure: None)  # twistd reports a listener that failed

    def _listening(self, _: object) -> None:
        if self.running:
            self.stats.ready = True

    def stopService(self) -> Deferred[None]:
        self.stats.ready = False
        stopping = self.drained()
        stopping.addCallback(lambda _: deferLater(self.clock, FLUSH_GRACE, lambda: None))
        stop: Callable[[object], Any] = lambda _: StreamServerEndpointService.stopService(self)
        return stopping.addCallback(stop)
