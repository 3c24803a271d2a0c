"""The prometheus plugin: Kong 3.15's metric families, names, labels, buckets and text.

Metrics are per node, as in Kong: every prometheus plugin instance records into
the node's one :class:`KongMetrics` (kept per metrics registry), which the
status listener serves at ``/metrics`` in Kong's own exposition
(``kong/plugins/prometheus/exporter.lua`` and ``prometheus.lua``): the ``kong_``
prefix, Kong 3.x's three bucket sets, no ``_created`` series, values and ``le``
written as Lua's ``tostring`` writes them.  The AI families follow Kong 3.15's
documentation (``app/_includes/ai-gateway/llm-metrics.md``): ``request_mode``
(not on tokens) and ``consumer`` labels.  Everything is read off the same
record the file-log writes, so the two always agree.
"""

from __future__ import annotations

from typing import Any, Mapping
from weakref import WeakKeyDictionary

from attrs import define, field, frozen
from prometheus_client import CollectorRegistry
from twisted.web.server import Request

from gatewayd.config import Plugin
from gatewayd.config.schema import PluginSchema, boolean, record
from gatewayd.exchange import Exchange
from gatewayd.plugins import CompileContext, KongPlugin

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



#: exporter.lua's three bucket sets (Kong 3.9+), in milliseconds; +Inf is always added.
KONG_LATENCY_BUCKETS = (1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000)
UPSTREAM_LATENCY_BUCKETS = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)
AI_LLM_PROVIDER_LATENCY_BUCKETS = (250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500,
                                   5000, 10000, 30000, 60000)
#: dbless Kong serves one workspace, and its log record names it so.
WORKSPACE = "default"
PREFIX = "kong_"
ROUTE_LABELS = ("service", "route", "workspace")
_AI_HEAD = ("ai_provider", "ai_model", "cache_status", "vector_db", "embeddings_provider",
            "embeddings_model")
AI_LABELS = (*_AI_HEAD, "request_mode", "workspace", "consumer")
AI_TOKEN_LABELS = (*_AI_HEAD, "token_type", "workspace", "consumer")


@frozen
class Family:
    """One metric family as exporter.lua registers it (name without the ``kong_`` prefix)."""

    name: str
    help: str
    kind: str  # "counter" or "histogram"
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


FAMILIES = (
    Family("http_requests_total", "HTTP status codes per consumer/service/route in Kong", "counter",
           ("service", "route", "code", "source", "workspace", "consumer")),
    Family("kong_latency_ms", "Latency added by Kong and enabled plugins for each service/route in Kong",
           "histogram", ROUTE_LABELS, KONG_LATENCY_BUCKETS),
    Family("upstream_latency_ms", "Latency added by upstream response for each service/route in Kong",
           "histogram", ROUTE_LABELS, UPSTREAM_LATENCY_BUCKETS),
    Family("request_latency_ms", "Total latency incurred during requests for each service/route in Kong",
           "histogram", ROUTE_LABELS, UPSTREAM_LATENCY_BUCKETS),
    Family("bandwidth_bytes", "Total bandwidth (ingress/egress) throughput in bytes", "counter",
           ("service", "route", "direction", "workspace", "consumer")),
    Family("ai_llm_requests_total", "AI requests total per ai_provider in Kong", "counter", AI_LABELS),
    Family("ai_llm_cost_total", "AI requests cost per ai_provider/cache in Kong", "counter", AI_LABELS),
    Family("ai_llm_tokens_total", "AI requests cost per ai_provider/cache in Kong", "counter",
           AI_TOKEN_LABELS),
    Family("ai_llm_provider_latency_ms", "LLM response Latency for each AI plugins per ai_provider in Kong",
           "histogram", AI_LABELS, AI_LLM_PROVIDER_LATENCY_BUCKETS),
)


def lua_number(value: float) -> str:
    """A number as LuaJIT's ``tostring`` writes it (``%.14g``): 1, 0.00037, 1e-05."""
    return format(value, ".14g")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@define
class _Histogram:
    """One label set's buckets (not cumulative), count and sum."""

    buckets: list[int]
    count: int = 0
    sum: float = 0.0


@define
class KongMetrics:
    """The node's series of Kong's families, and their text as Kong's /metrics writes it.

    A series exists from its first increment: Kong creates none for a zero (its
    exporter only counts what is above zero) and none for a request no route matched.
    """

    families: dict[str, Family] = field(factory=lambda: {f.name: f for f in FAMILIES})
    _series: dict[str, dict[tuple[str, ...], Any]] = field(factory=dict)

    def inc(self, family: str, labels: tuple[str, ...], amount: float = 1) -> None:
        assert len(labels) == len(self.families[family].labels), family
        series = self._series.setdefault(family, {})
        series[labels] = series.get(labels, 0) + amount

    def observe(self, family: str, labels: tuple[str, ...], value: float) -> None:
        spec = self.families[family]
        assert len(labels) == len(spec.labels), family
        series = self._series.setdefault(family, {})
        histogram = series.get(labels)
        if histogram is None:
            # Kong 3.14.0.9+: every bucket of a label set exists from its first observation.
            histogram = series[labels] = _Histogram([0] * (len(spec.buckets) + 1))
        index = next((i for i, bound in enumerate(spec.buckets) if value <= bound), len(spec.buckets))
        histogram.buckets[index] += 1
        histogram.count += 1
        histogram.sum += value

    def value(self, family: str, labels: tuple[str, ...]) -> Any:
        return self._series.get(family, {}).get(labels)

    def exposition(self) -> str:
        """Kong's text: families in name order, each with its HELP and TYPE; a histogram's
        label sets each as one group (buckets by ``le``, then ``_count``, then ``_sum``)."""
        lines: list[str] = []
        for name in sorted(self._series):
            spec, series = self.families[name], self._series[name]
            full = PREFIX + name
            lines.append(f"# HELP {full} {spec.help}")
            lines.append(f"# TYPE {full} {spec.kind}")
            keyed = sorted((self._labels(spec.labels, values), value) for values, value in series.items())
            for labels, value in keyed:
                if spec.kind == "counter":
                    lines.append(f"{full}{{{labels}}} {lua_number(value)}")
                    continue
                cumulative = 0
                bounds = [lua_number(b) for b in spec.buckets] + ["+Inf"]
                for bound, count in zip(bounds, value.buckets):
                    cumulative += count
                    lines.append(f'{full}_bucket{{{labels},le="{bound}"}} {cumulative}')
                lines.append(f"{full}_count{{{labels}}} {value.count}")
                lines.append(f"{full}_sum{{{labels}}} {lua_number(value.sum)}")
        return "".join(line + "\n" for line in lines)

    @staticmethod
    def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
        return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values))


_kept: WeakKeyDictionary[CollectorRegistry, KongMetrics] = WeakKeyDictionary()


def metrics_in(registry: CollectorRegistry) -> KongMetrics:
    """The node's Kong series kept beside ``registry``: one set however often a config is compiled."""
    metrics = _kept.get(registry)
    if metrics is None:
        metrics = _kept[registry] = KongMetrics()
    return metrics


def exposition(registry: CollectorRegistry) -> str:
    """Kong's part of ``/metrics`` for the node of ``registry`` (empty before any prometheus plugin)."""
    metrics = _kept.get(registry)
    return metrics.exposition() if metrics is not None else ""


def consumer_label(consumer: Mapping[str, Any] | None) -> str:
    """Kong 3.12's consumer label: the username, else the custom_id (changelog 3.10.0.6, 3.12.0.0)."""
    if not consumer:
        return ""
    return consumer.get("username") or consumer.get("custom_id") or ""


@frozen
class PrometheusLog:
    """One prometheus plugin instance: which of Kong's metric families it records.

    ``upstream_health_metrics`` and ``wasm_metrics`` have Kong's effect as they
    are: their series describe upstream entities and Wasm filter chains, which
    the loader refuses, so Kong too would export none here.
    """

    metrics: KongMetrics
    status_code: bool
    latency: bool
    bandwidth: bool
    ai: bool
    per_consumer: bool

    @classmethod
    def compile(cls, plugin: Plugin, context: CompileContext) -> "PrometheusLog":
        """Every instance records into the node's one set of series, as Kong's do."""
        metrics = metrics_in(context.facility("metrics_registry"))
        settings = plugin.config
        return cls(metrics, settings["status_code_metrics"], settings["latency_metrics"],
                   settings["bandwidth_metrics"], settings["ai_metrics"], settings["per_consumer"])

    def log(self, request: Request, exchange: Exchange, record: Mapping[str, Any]) -> None:
        """exporter.lua's ``log``: nothing for a request no route matched."""
        route = record.get("route")
        if not route:
            return
        m = self.metrics
        service_entity = record.get("service") or {}
        service = service_entity.get("name") or service_entity.get("host") or ""
        route_name = route.get("name") or route.get("id") or ""
        workspace = record.get("workspace_name") or ""
        consumer = consumer_label(record.get("consumer"))
        http_consumer = consumer if self.per_consumer else ""
        if self.bandwidth:
            for direction, size in (("ingress", record["request"]["size"]),
                                    ("egress", record["response"]["size"])):
                if size and size > 0:
                    m.inc("bandwidth_bytes", (service, route_name, direction, workspace, http_consumer), size)
        if self.status_code:
            # kong.response.get_source(): "service" when the upstream answered, else "kong".
            source = "service" if record.get("source") == "upstream" else "kong"
            m.inc("http_requests_total", (service, route_name, str(record["response"]["status"]), source,
                                          workspace, http_consumer))
        if self.latency:
            labels = (service, route_name, workspace)
            latencies = record["latencies"]
            if latencies.get("request") is not None and latencies["request"] >= 0:
                m.observe("request_latency_ms", labels, latencies["request"])
            if latencies.get("proxy") is not None and latencies["proxy"] >= 0:
                m.observe("upstream_latency_ms", labels, latencies["proxy"])
            if latencies.get("kong") is not None and latencies["kong"] >= 0:
                m.observe("kong_latency_ms", labels, latencies["kong"])
        if self.ai:
            for section in (record.get("ai") or {}).values():
                self._ai(section, workspace, consumer)

    def _ai(self, section: Mapping[str, Any], workspace: str, consumer: str) -> None:
        """One ``ai`` section (``proxy``), as exporter.lua reads ``serialized.ai_metrics``."""
        m = self.metrics
        meta = section.get("meta") or {}
        usage = section.get("usage") or {}
        cache = section.get("cache") or {}
        head = (meta.get("provider_name") or "", meta.get("request_model") or "",
                cache.get("cache_status") or "", cache.get("vector_db") or "",
                cache.get("embeddings_provider") or "", cache.get("embeddings_model") or "")
        labels = (*head, meta.get("request_mode") or "", workspace, consumer)
        m.inc("ai_llm_requests_total", labels)
        if (usage.get("cost") or 0) > 0:
            m.inc("ai_llm_cost_total", labels, usage["cost"])
        if meta.get("llm_latency") is not None and meta["llm_latency"] >= 0:
            m.observe("ai_llm_provider_latency_ms", labels, meta["llm_latency"])
        for token_type in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if (usage.get(token_type) or 0) > 0:
                m.inc("ai_llm_tokens_total", (*head, token_type, workspace, consumer), usage[token_type])


plugin = KongPlugin("prometheus", priority=13, version="3.15.0", schema=PROMETHEUS, compile=PrometheusLog.compile)
