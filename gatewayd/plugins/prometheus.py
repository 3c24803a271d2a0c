"""The prometheus plugin: Kong's metric names and labels, kept by the official client library.

Metrics are per node, as in Kong: every prometheus plugin instance records into
the gateway's one :class:`Metrics` registry, which the status listener serves
at ``/metrics``.  HTTP metrics follow Kong 3.x's exporter (``kong_`` prefix,
``service``/``route``/``workspace`` labels); AI metrics follow its AI exporter
(``ai_llm_*``), filled from the same record the file-log writes, so the two
always agree.
"""

from __future__ import annotations

from typing import Any, Mapping
from weakref import WeakKeyDictionary

from attrs import define, field, frozen
from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.web.server import Request

from gatewayd.config import Plugin
from gatewayd.config.schema import PluginSchema, boolean, record
from gatewayd.exchange import Exchange
from gatewayd.plugins import CompileContext, KongPlugin

#: Kong's DEFAULT_BUCKETS, in milliseconds.
LATENCY_BUCKETS = (1, 2, 5, 7, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 200, 300, 400,
                   500, 1000, 2000, 5000, 10000, 30000, 60000, float("inf"))
WORKSPACE = "default"
AI_LABELS = ("ai_provider", "ai_model", "cache_status", "vector_db", "embeddings_provider",
             "embeddings_model", "workspace", "request_mode", "consumer")
ROUTE_LABELS = ("service", "route", "workspace")

# Kong 3.15, Prometheus.json (unchanged since 3.13).  upstream_health_metrics and
# wasm_metrics export Kong's upstream targets and proxy-wasm filters; gatewayd refuses
# upstreams and filter_chains at load, so, as in a Kong without them, there is nothing to export.
PROMETHEUS_CONFIG = record({
    "ai_metrics": boolean(default=False),
    "bandwidth_metrics": boolean(default=False),
    "latency_metrics": boolean(default=False),
    "per_consumer": boolean(default=False),
    "status_code_metrics": boolean(default=False),
    "upstream_health_metrics": boolean(default=False),
    "wasm_metrics": boolean(),
})

PROMETHEUS = PluginSchema(
    name="prometheus",
    config=PROMETHEUS_CONFIG,
    protocols_allowed=("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough",
                       "udp", "ws", "wss"),
    protocols_default=("grpc", "grpcs", "http", "https"),
)


@define
class Metrics:
    """The gateway's collectors, in a registry of its own (not the library's global one)."""

    registry: CollectorRegistry = field(factory=CollectorRegistry)
    http_requests: Counter = field(init=False)
    request_latency: Histogram = field(init=False)
    upstream_latency: Histogram = field(init=False)
    kong_latency: Histogram = field(init=False)
    bandwidth: Counter = field(init=False)
    ai_requests: Counter = field(init=False)
    ai_cost: Counter = field(init=False)
    ai_tokens: Counter = field(init=False)
    ai_latency: Histogram = field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.http_requests = Counter(
            "kong_http_requests_total", "HTTP status codes per consumer/service/route in Kong",
            ("service", "route", "code", "source", "workspace", "consumer"), registry=r)
        self.request_latency = Histogram(
            "kong_request_latency_ms", "Total latency incurred during requests for each "
            "service/route in Kong", ROUTE_LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram(
            "kong_upstream_latency_ms", "Latency added by upstream response for each "
            "service/route in Kong", ROUTE_LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self.kong_latency = Histogram(
            "kong_kong_latency_ms", "Latency added by Kong and enabled plugins for each "
            "service/route in Kong", ROUTE_LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self.bandwidth = Counter(
            "kong_bandwidth_bytes", "Total bandwidth (ingress/egress) throughput in bytes",
            ("service", "route", "direction", "workspace", "consumer"), registry=r)
        self.ai_requests = Counter(
            "ai_llm_requests_total", "AI requests total per ai_provider in Kong", AI_LABELS,
            registry=r)
        self.ai_cost = Counter(
            "ai_llm_cost_total", "AI requests cost per ai_provider/cache in Kong", AI_LABELS,
            registry=r)
        self.ai_tokens = Counter(
            "ai_llm_tokens_total", "AI requests cost per ai_provider/cache in Kong",
            (*AI_LABELS, "token_type"), registry=r)
        self.ai_latency = Histogram(
            "ai_llm_provider_latency_ms", "LLM response Latency for each AI plugins per "
            "ai_provider in Kong", AI_LABELS, buckets=LATENCY_BUCKETS, registry=r)


_collectors: WeakKeyDictionary[CollectorRegistry, Metrics] = WeakKeyDictionary()


def metrics_in(registry: CollectorRegistry) -> Metrics:
    """Kong's collectors in ``registry``, registered once however often a config is compiled."""
    metrics = _collectors.get(registry)
    if metrics is None:
        metrics = _collectors[registry] = Metrics(registry)
    return metrics


@frozen
class PrometheusLog:
    """One prometheus plugin instance: which of Kong's metric families it records."""

    metrics: Metrics
    status_code: bool
    latency: bool
    bandwidth: bool
    ai: bool
    per_consumer: bool

    @classmethod
    def compile(cls, plugin: Plugin, context: CompileContext) -> "PrometheusLog":
        """Every instance records into the node's one set of collectors, as Kong's do."""
        metrics = metrics_in(context.facility("metrics_registry"))
        settings = plugin.config
        return cls(metrics, settings["status_code_metrics"], settings["latency_metrics"],
                   settings["bandwidth_metrics"], settings["ai_metrics"], settings["per_consumer"])

    def log(self, request: Request, exchange: Exchange, record: Mapping[str, Any]) -> None:
        m = self.metrics
        service = (record.get("service") or {}).get("name", "")
        route = (record.get("route") or {}).get("name", "")
        consumer = (record.get("consumer") or {}).get("username", "")
        http_consumer = consumer if self.per_consumer else ""
        if self.status_code:
            m.http_requests.labels(service, route, str(record["response"]["status"]),
                                   record["source"], WORKSPACE, http_consumer).inc()
        if self.latency:
            latencies = record["latencies"]
            m.request_latency.labels(service, route, WORKSPACE).observe(latencies["request"])
            m.kong_latency.labels(service, route, WORKSPACE).observe(latencies["kong"])
            if record["source"] == "upstream":
                m.upstream_latency.labels(service, route, WORKSPACE).observe(latencies["proxy"])
        if self.bandwidth:
            for direction, size in (("ingress", record["request"]["size"]),
                                    ("egress", record["response"]["size"])):
                if size:
                    m.bandwidth.labels(service, route, direction, WORKSPACE, http_consumer).inc(size)
        proxy = (record.get("ai") or {}).get("proxy") or {}
        meta, usage = proxy.get("meta"), proxy.get("usage")
        if self.ai and meta is not None and usage is not None:
            labels = (meta["provider_name"], meta["response_model"], "", "", "", "", WORKSPACE,
                      meta["request_mode"], consumer)
            m.ai_requests.labels(*labels).inc()
            if usage.get("cost"):
                m.ai_cost.labels(*labels).inc(usage["cost"])
            for token_type in ("prompt_tokens", "completion_tokens", "total_tokens"):
                m.ai_tokens.labels(*labels, token_type).inc(usage.get(token_type) or 0)
            if meta.get("llm_latency") is not None:
                m.ai_latency.labels(*labels).observe(meta["llm_latency"])


plugin = KongPlugin("prometheus", priority=13, version="3.13.0", schema=PROMETHEUS, compile=PrometheusLog.compile)
