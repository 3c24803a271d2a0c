"""The prometheus plugin's exposition against Kong's own expectations.

Kong/kong ``spec/03-plugins/26-prometheus/02-access_spec.lua`` (master) states
the AI families line by line (lines 839-847 after one request, 878-886 after
two: openai, gpt-3.5-turbo, 25 prompt and 12 completion tokens at 10 per
million each); Kong 3.15 adds ``request_mode`` (not on tokens) and
``consumer`` (``app/_includes/ai-gateway/llm-metrics.md``).  Its HTTP lines
(126, 146, 467, 487, 514) give the status family's labels and ``source``.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from gatewayd.daemon.status import MetricsPage
from gatewayd.plugins.prometheus import KongMetrics, PrometheusLog, consumer_label, lua_number

AI_HEAD = ('ai_provider="openai",ai_model="gpt-3.5-turbo",cache_status="",vector_db="",'
           'embeddings_provider="",embeddings_model=""')
AI = AI_HEAD + ',request_mode="oneshot",workspace="default",consumer=""'


def plugin(metrics: KongMetrics, **switches: bool) -> PrometheusLog:
    settings = {"status_code": False, "latency": False, "bandwidth": False, "ai": False, "per_consumer": False}
    settings.update(switches)
    return PrometheusLog(metrics, **settings)


def record(status: int = 200, source: str = "upstream", consumer: dict[str, Any] | None = None,
           route: dict[str, Any] | None = None, ai: bool = True, **latencies: int) -> dict[str, Any]:
    """A log record as Exchange.record writes it, for the spec's mock-service and http-route."""
    made: dict[str, Any] = {
        "request": {"size": 120},
        "response": {"status": status, "size": 300},
        "latencies": {"kong": 3, "proxy": 700, "request": 710, "receive": 7, **latencies},
        "source": source,
        "workspace_name": "default",
        "service": {"name": "mock-service", "host": "mock.test"},
        "route": {"name": "http-route", "id": "r-1"} if route is None else route,
    }
    if consumer is not None:
        made["consumer"] = consumer
    if ai:
        made["ai"] = {"proxy": {
            "meta": {"provider_name": "openai", "request_model": "gpt-3.5-turbo",
                     "response_model": "gpt-3.5-turbo-0125", "request_mode": "oneshot", "llm_latency": 700},
            "usage": {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37, "cost": 0.00037},
        }}
    return made


def ai_buckets(count: int, value: float) -> list[str]:
    bounds = (250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 10000, 30000, 60000)
    lines = [f'kong_ai_llm_provider_latency_ms_bucket{{{AI},le="{b}"}} {count if value <= b else 0}'
             for b in bounds]
    return lines + [f'kong_ai_llm_provider_latency_ms_bucket{{{AI},le="+Inf"}} {count}',
                    f"kong_ai_llm_provider_latency_ms_count{{{AI}}} {count}",
                    f"kong_ai_llm_provider_latency_ms_sum{{{AI}}} {lua_number(count * value)}"]


def test_ai_and_status_families_line_for_line_as_kongs_spec_after_two_requests() -> None:
    metrics = KongMetrics()
    log = plugin(metrics, ai=True, status_code=True)
    for _ in range(2):
        log.log(None, None, record())  # type: ignore[arg-type]
    expected = [
        "# HELP kong_ai_llm_cost_total AI requests cost per ai_provider/cache in Kong",
        "# TYPE kong_ai_llm_cost_total counter",
        f"kong_ai_llm_cost_total{{{AI}}} 0.00074",  # spec line 880
        "# HELP kong_ai_llm_provider_latency_ms LLM response Latency for each AI plugins per ai_provider in Kong",
        "# TYPE kong_ai_llm_provider_latency_ms histogram",
        *ai_buckets(2, 700),  # spec line 882: le="+Inf" 2
        "# HELP kong_ai_llm_requests_total AI requests total per ai_provider in Kong",
        "# TYPE kong_ai_llm_requests_total counter",
        f"kong_ai_llm_requests_total{{{AI}}} 2",  # spec line 878
        "# HELP kong_ai_llm_tokens_total AI requests cost per ai_provider/cache in Kong",
        "# TYPE kong_ai_llm_tokens_total counter",
        # spec lines 884-886 (no request_mode on tokens, Kong 3.12+)
        f'kong_ai_llm_tokens_total{{{AI_HEAD},token_type="completion_tokens",workspace="default",consumer=""}} 24',
        f'kong_ai_llm_tokens_total{{{AI_HEAD},token_type="prompt_tokens",workspace="default",consumer=""}} 50',
        f'kong_ai_llm_tokens_total{{{AI_HEAD},token_type="total_tokens",workspace="default",consumer=""}} 74',
        "# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong",
        "# TYPE kong_http_requests_total counter",
        # spec line 126's label set
        'kong_http_requests_total{service="mock-service",route="http-route",code="200",source="service",'
        'workspace="default",consumer=""} 2',
    ]
    assert metrics.exposition().splitlines() == expected


def test_one_request_as_the_spec_after_one() -> None:
    metrics = KongMetrics()
    plugin(metrics, ai=True).log(None, None, record())  # type: ignore[arg-type]
    lines = metrics.exposition().splitlines()
    assert f"kong_ai_llm_cost_total{{{AI}}} 0.00037" in lines  # spec line 841
    assert f"kong_ai_llm_requests_total{{{AI}}} 1" in lines  # spec line 839
    assert f'kong_ai_llm_provider_latency_ms_bucket{{{AI},le="+Inf"}} 1' in lines  # spec line 843
    assert (f'kong_ai_llm_tokens_total{{{AI_HEAD},token_type="prompt_tokens",workspace="default",consumer=""}} 25'
            in lines)  # spec line 846


def test_latency_families_with_kong_3_buckets_and_le_as_lua_writes_it() -> None:
    metrics = KongMetrics()
    plugin(metrics, latency=True).log(None, None, record(ai=False, kong=3, proxy=90, request=100))  # type: ignore[arg-type]
    text = metrics.exposition()
    labels = 'service="mock-service",route="http-route",workspace="default"'
    kong = [line for line in text.splitlines() if line.startswith("kong_kong_latency_ms_bucket")]
    assert [line.split('le="')[1].split('"')[0] for line in kong] == [
        "1", "2", "5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500", "750", "1000",
        "3000", "6000", "+Inf"]
    assert f'kong_kong_latency_ms_bucket{{{labels},le="2"}} 0' in text  # every bucket, zeros too
    assert f'kong_kong_latency_ms_bucket{{{labels},le="5"}} 1' in text
    assert f'kong_upstream_latency_ms_bucket{{{labels},le="80"}} 0' in text
    assert f'kong_upstream_latency_ms_bucket{{{labels},le="100"}} 1' in text
    assert f'kong_request_latency_ms_bucket{{{labels},le="25"}} 0' in text
    assert f'kong_request_latency_ms_bucket{{{labels},le="100"}} 1' in text
    group = text.split("# TYPE kong_request_latency_ms histogram\n")[1].splitlines()
    assert group[14:16] == [f"kong_request_latency_ms_count{{{labels}}} 1",
                            f"kong_request_latency_ms_sum{{{labels}}} 100"]


def test_nothing_proxied_gives_no_upstream_latency() -> None:
    metrics = KongMetrics()
    plugin(metrics, latency=True).log(None, None, record(status=401, source="kong", ai=False, proxy=-1))  # type: ignore[arg-type]
    assert "kong_upstream_latency_ms" not in metrics.exposition()
    assert "kong_kong_latency_ms_count" in metrics.exposition()


def test_a_request_no_route_matched_is_not_counted() -> None:
    metrics = KongMetrics()
    unmatched = record(status=404, source="kong")
    del unmatched["route"], unmatched["service"]
    plugin(metrics, ai=True, status_code=True, latency=True, bandwidth=True).log(None, None, unmatched)  # type: ignore[arg-type]
    assert metrics.exposition() == ""


def test_zero_counts_create_no_series() -> None:
    metrics = KongMetrics()
    zero = record()
    zero["ai"]["proxy"]["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0}
    zero["request"]["size"] = 0
    plugin(metrics, ai=True, bandwidth=True).log(None, None, zero)  # type: ignore[arg-type]
    text = metrics.exposition()
    assert "kong_ai_llm_requests_total{" in text
    assert "kong_ai_llm_cost_total" not in text and "kong_ai_llm_tokens_total" not in text
    assert 'direction="ingress"' not in text and 'direction="egress"' in text


def test_bandwidth_keeps_kongs_name_and_the_consumer_only_per_consumer() -> None:
    alice = {"id": "c-1", "username": "alice"}
    for per_consumer, label in ((False, ""), (True, "alice")):
        metrics = KongMetrics()
        plugin(metrics, bandwidth=True, status_code=True, ai=True, per_consumer=per_consumer).log(
            None, None, record(consumer=alice))  # type: ignore[arg-type]
        text = metrics.exposition()
        assert (f'kong_bandwidth_bytes{{service="mock-service",route="http-route",direction="ingress",'
                f'workspace="default",consumer="{label}"}} 120') in text
        assert f'source="service",workspace="default",consumer="{label}"}} 1' in text
        # The AI families name the consumer whatever per_consumer says (Kong 3.11+).
        assert 'request_mode="oneshot",workspace="default",consumer="alice"} 1' in text
        assert "# TYPE kong_bandwidth_bytes counter" in text


def test_the_consumer_label_falls_back_to_custom_id() -> None:
    assert consumer_label({"id": "c", "username": "alice", "custom_id": "A-1"}) == "alice"
    assert consumer_label({"id": "c", "custom_id": "A-1"}) == "A-1"
    assert consumer_label({"id": "c"}) == ""
    assert consumer_label(None) == ""


def test_route_and_service_fall_back_to_id_and_host_and_labels_are_escaped() -> None:
    metrics = KongMetrics()
    made = record(route={"id": "r-1"}, ai=False)
    made["service"] = {"host": 'odd"host\\'}
    plugin(metrics, status_code=True).log(None, None, made)  # type: ignore[arg-type]
    assert 'kong_http_requests_total{service="odd\\"host\\\\",route="r-1",' in metrics.exposition()


@pytest.mark.parametrize("value,text", [(1, "1"), (0.00037, "0.00037"), (2.5, "2.5"), (1e-05, "1e-05"),
                                        (74.0, "74"), (0.1 + 0.2, "0.3")])
def test_values_are_written_as_luajit_tostring_writes_them(value: float, text: str) -> None:
    assert lua_number(value) == text


def test_metrics_page_has_no_created_series_and_kong_families_first() -> None:
    registry = CollectorRegistry()
    own = Counter("gatewayd_probe_total", "a gatewayd family", registry=registry)
    own.inc()
    from gatewayd.plugins.prometheus import metrics_in

    plugin(metrics_in(registry), bandwidth=True).log(None, None, record(ai=False))  # type: ignore[arg-type]
    request = type("R", (), {"setHeader": lambda self, n, v: None})()
    text = MetricsPage(registry).render_GET(request).decode()  # type: ignore[arg-type]
    assert text.startswith("# HELP kong_bandwidth_bytes ")
    assert "_created" not in text
    assert "kong_bandwidth_bytes_total" not in text
    assert "gatewayd_probe_total 1.0" in text
