"""End to end: after a mixed run (Claude Code, SDK streams, a failover, a 429, refusals),
the sums of ``/metrics``, of the file-log's records and of ``python -m gatewayd.report``
agree exactly, per consumer and per model.  Numbers are compared across the three views,
never against constants, so a change in how usage is counted moves all three together."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from collections import defaultdict

import anthropic
import pytest

from gatewayd import report
from tests.bounded import until_refused
from tests.e2e.harness import REPO, Daemon, config_dir, file_log_override, read_records, wait_for
from tests.e2e.test_claude_code import CLAUDE, run_claude
from tests.e2e.test_consumers import limiter, post
from tests.grammar import check_sdk_stream

ALICE, BOB = "sk-e2e-alice-0123456789", "sk-e2e-bob-0123456789"
CONSUMERS = f"""_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: {ALICE}
  - custom_id: B-2
    keyauth_credentials:
      - key: {BOB}
plugins:
  - name: key-auth
    config: {{key_names: [x-api-key]}}
  - name: prometheus
    config:
      ai_metrics: true
      status_code_metrics: true
      latency_metrics: true
      per_consumer: true
"""


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_targets(dead_port: int) -> str:
    """The seed's target behind one that refuses connections: every failover is an 'error'."""
    seed = (REPO / "etc" / "gatewayd" / "20-ai-proxy-advanced.yaml").read_text()
    target = seed.split("      targets:\n", 1)[1]
    dead = target.replace('"${{ env "DECK_GEMINI_API_ENDPOINT" }}"', f"http://127.0.0.1:{dead_port}")
    head = seed.split("      targets:\n", 1)[0]
    return (head + "      balancer: {algorithm: priority, failover_criteria: [error]}\n      targets:\n"
            + dead.replace("      - route_type", "      - weight: 100\n        route_type", 1)
            + target.replace("      - route_type", "      - weight: 10\n        route_type", 1))


@pytest.fixture
def daemon(fake, tmp_path):
    log = tmp_path / "claude.json"
    config = config_dir(tmp_path, file_log_override(log), ("20-ai-proxy-advanced.yaml", two_targets(closed_port())),
                        ("40-consumers.yaml", CONSUMERS), ("50-limit.yaml", limiter(20000, 60)))
    daemon = Daemon(config, fake.seed_environment(), tmp_path, status_listen="tcp:0:interface=127.0.0.1")
    daemon.file_log = log
    yield daemon
    daemon.stop()


def scrape(daemon: Daemon) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(daemon.status_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        match = re.fullmatch(r'(\w+)\{(.*)\} (\S+)', line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def test_metrics_records_and_report_agree(daemon, tmp_path):
    # Alice: oneshot requests, Claude Code when it is installed; Bob (custom_id only): SDK
    # streams, then his budget runs out (a 429); a stranger is refused (401).
    for text in ("one", "two"):
        assert post(daemon.url, {"x-api-key": ALICE}, text)[0] == 200
    if CLAUDE is not None:
        result = run_claude(daemon, "gemini-2.0-flash", "Say hi.", tmp_path, key=ALICE)
        assert result["is_error"] is False, result
    # The SDK sends its key as Authorization: Bearer; key-auth looks only at key_names (Kong).
    sdk = anthropic.Anthropic(base_url=daemon.url + "/anything", api_key=BOB, max_retries=0,
                              default_headers={"x-api-key": BOB})
    for text in ("stream one", "stream two"):
        with sdk.messages.stream(model="gemini-2.0-flash", max_tokens=64,
                                 messages=[{"role": "user", "content": text}]) as stream:
            check_sdk_stream(stream)
    status, _, _ = until_refused(lambda: post(daemon.url, {"x-api-key": BOB}, "x" * 4000))
    assert status == 429
    assert post(daemon.url, {"x-api-key": "sk-nobody-000000"})[0] == 401

    # /metrics counts a request as it ends; its record is written once its answer has gone
    # out, a reactor turn or two later: wait for as many records as /metrics counted.
    samples = scrape(daemon)
    counted = sum(v for n, _, v in samples if n == "kong_http_requests_total")
    records = wait_for(lambda: (r := read_records(daemon.file_log)) and len(r) >= counted and r,
                       what="a record for every request /metrics counted")
    assert len(records) == counted
    assert any(len(r.get("tries", [])) == 2 and r["tries"][0]["state"] == "failed" for r in records), \
        "no failover happened"
    assert any(r["response"]["status"] == 429 for r in records)

    # The file-log's sums, per consumer and model.
    by_consumer: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_model: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        consumer = r.get("consumer", {}).get("username") or r.get("consumer", {}).get("custom_id") or ""
        by_consumer[consumer]["requests"] += 1
        proxy = r.get("ai", {}).get("proxy", {})
        if "meta" in proxy:
            model = by_model[(consumer, proxy["meta"]["request_model"])]
            model["requests"] += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cost"):
                model[key] += proxy.get("usage", {}).get(key) or 0
                by_consumer[consumer][key] += proxy.get("usage", {}).get(key) or 0
    assert set(by_consumer) == {"alice", "B-2", ""}

    # /metrics: the same sums.
    def total(name: str, **labels: str) -> float:
        return sum(v for n, l, v in samples if n == name and labels.items() <= l.items())

    for consumer, sums in by_consumer.items():
        assert total("kong_http_requests_total", consumer=consumer) == sums["requests"], consumer
    for (consumer, model), sums in by_model.items():
        assert total("kong_ai_llm_requests_total", consumer=consumer, ai_model=model) == sums["requests"]
        for token_type in ("prompt_tokens", "completion_tokens", "total_tokens"):
            assert total("kong_ai_llm_tokens_total", consumer=consumer, ai_model=model,
                         token_type=token_type) == sums[token_type], (consumer, model, token_type)
        assert total("kong_ai_llm_cost_total", consumer=consumer, ai_model=model) == pytest.approx(sums["cost"])
    assert total("kong_ai_llm_requests_total") == sum(s["requests"] for s in by_model.values())
    assert total("kong_request_latency_ms_count") == len(records)

    # The report, run as an operator runs it, and its numbers.
    done = subprocess.run([sys.executable, "-m", "gatewayd.report", str(daemon.file_log)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:] if not line.startswith("-")}
    made = report.build([str(daemon.file_log)])
    for consumer, sums in by_consumer.items():
        name = consumer or report.ANONYMOUS
        group = made.groups[name]
        assert group.requests == sums["requests"] == int(rows[name][1])
        assert group.prompt_tokens == sums["prompt_tokens"] == int(rows[name][2])
        assert group.completion_tokens == sums["completion_tokens"] == int(rows[name][3])
        assert group.cost == pytest.approx(sums["cost"])
    by_report_model = report.build([str(daemon.file_log)], by="model").groups
    for model in {m for _, m in by_model}:
        assert by_report_model[model].prompt_tokens == sum(
            s["prompt_tokens"] for (_, m), s in by_model.items() if m == model)
