"""gatewayd's own facts about what it depends on: log files and counter stores.

Kong has no metrics for these, so they carry a ``gatewayd_`` prefix; they live in
the node's one registry (served at ``/metrics``) beside Kong's, and the Redis
states also show in ``/status``.  Plugins report through the ``health`` facility
they are compiled with.
"""

from __future__ import annotations

from attrs import define, field
from prometheus_client import CollectorRegistry, Counter, Gauge

from gatewayd.daemon.status import Stats


@define
class Health:
    registry: CollectorRegistry
    stats: Stats
    file_log_lost: Counter = field(init=False)
    file_log_backlog: Gauge = field(init=False)
    redis_reachable: Gauge = field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.file_log_lost = Counter(
            "gatewayd_file_log_records_lost", "file-log records that could not be written "
            "(disk full past the in-memory backlog, or still unwritten at stop)", ("path",),
            registry=r)
        self.file_log_backlog = Gauge(
            "gatewayd_file_log_backlog_records", "file-log records waiting in memory for the "
            "file to take writes again", ("path",), registry=r)
        self.redis_reachable = Gauge(
            "gatewayd_redis_reachable", "Whether the Redis of ai-rate-limiting-advanced "
            "(strategy redis) answers, 0 is unreachable (like kong_datastore_reachable)",
            ("redis",), registry=r)

    def file_log_report(self, path: str, lost: int, backlog: int) -> None:
        """What a file-log file says of its lost records and its backlog."""
        if lost:
            self.file_log_lost.labels(path).inc(lost)
        self.file_log_backlog.labels(path).set(backlog)

    def redis_state(self, address: str, reachable: bool) -> None:
        """A counter store's Redis came or went: ``/status`` and ``gatewayd_redis_reachable``."""
        self.stats.redis[address] = reachable
        self.redis_reachable.labels(address).set(1 if reachable else 0)
