"""ai-rate-limiting-advanced counts the tokens the log and the metrics count (issue 12, item 4).

In memory (StubTreq, a Clock): a run of requests with a failover, streams, an upstream
error and a stream that breaks midway; each answer's ``X-AI-RateLimit-Remaining-*`` must
be the limit less the ``ai.proxy.usage`` of the records before it, and
``kong_ai_llm_tokens_total`` their sum.  Numbers are compared across the three views,
never against constants.  Then Kong's 429 headers, and which headers Kong sends when.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gatewayd.daemon.status import status_root
from gatewayd.exchange import Exchange
from gatewayd.plugins.ai_rate_limiting_advanced.handler import LocalStore, counters
from tests.bounded import until_refused
from tests.grammar import check_stream
from tests.test_noignore import limiter as compiled
from tests.test_consumers import CONSUMERS, KEY, PROMETHEUS
from tests.test_service import GatewayInMemory, ask, events

ALICE = {"x-api-key": KEY}
LIMIT = 5000
SUFFIX = "hour-gemini"


def limiter(strategy: str = "total_tokens", limit: float = LIMIT, hide: bool = False) -> str:
    return f"""_format_version: "3.0"
plugins:
  - name: ai-rate-limiting-advanced
    route: example-route
    config:
      window_type: fixed
      tokens_count_strategy: {strategy}
      hide_client_headers: {str(hide).lower()}
      llm_providers:
        - name: gemini
          limit: [{limit}]
          window_size: [3600]
"""


def two_targets() -> str:
    """The seed's target behind one in a project the fake denies (403): every request
    fails over (no passive health), and is served, or refused, by the second."""
    seed = (Path(__file__).resolve().parents[1] / "etc" / "gatewayd" / "20-ai-proxy-advanced.yaml").read_text()
    head, target = seed.split("      targets:\n", 1)
    target = target.replace("          options:\n", "          options:\n            input_cost: 0.15\n"
                                                   "            output_cost: 0.6\n")
    denied = target.replace('"${{ env "DECK_GCP_PROJECT_ID" }}"', "someone-elses-project")
    return (head + "      balancer: {algorithm: priority, failover_criteria: [error, http_403], "
                   "}\n      targets:\n"
            + denied.replace("      - route_type", "      - weight: 100\n        route_type", 1)
            + target.replace("      - route_type", "      - weight: 10\n        route_type", 1))


def usage(record: dict) -> dict:
    return record.get("ai", {}).get("proxy", {}).get("usage", {})


class NumbersAgreeTests(GatewayInMemory):
    extra_files = {"20-ai-proxy-advanced.yaml": two_targets(), "40-consumers.yaml": CONSUMERS,
                   "50-limit.yaml": limiter(), "60-prometheus.yaml": PROMETHEUS}
    count = "total_tokens"
    limit = LIMIT

    def scrape(self, name: str) -> dict[str, float]:
        """``name``'s samples for alice, summed per token_type."""
        client = StubTreq(status_root(self.gateway.stats, self.gateway.metrics_registry))
        text = self.successResultOf(self.successResultOf(client.get("http://status.test/metrics")).text())
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("consumer") == "alice":
                    kind = sample.labels.get("token_type", "")
                    sums[kind] = sums.get(kind, 0) + sample.value
        return sums

    def run_mixed(self) -> list[tuple[int, dict[str, list[str]]]]:
        """Each fails over: a oneshot, a stream, an upstream error, a stream broken midway, a stream."""
        answers = []
        for body in (ask("one"), ask("two [[chunks 3]]", stream=True), ask("[[fail 500]]"),
                     ask("three [[stream-error 500]]", stream=True), ask("four", stream=True)):
            status, headers, text = self.post(body, headers=ALICE)
            if body.get("stream"):
                check_stream(events(text))
            answers.append((status, headers))
        return answers

    def test_remaining_is_the_limit_less_the_records_before(self):
        answers = self.run_mixed()
        self.assertEqual([s for s, _ in answers], [200, 200, 500, 200, 200])
        records = self.records()
        self.assertEqual(len(records), len(answers))
        for record in records:  # each failed over from the first target
            self.assertEqual([t.get("outcome") for t in record["ai"]["proxy"]["tried_targets"]][0],
                             "http_403")
        spent = [usage(r).get(self.count, 0) for r in records]
        self.assertEqual(spent[2], 0)  # the upstream's error spent nothing
        self.assertTrue(all(spent[i] > 0 for i in (0, 1, 3, 4)), spent)
        remaining = [float(h[f"x-ai-ratelimit-remaining-{SUFFIX}"][0]) for _, h in answers]
        expected = [self.limit - sum(spent[:i]) for i in range(len(spent))]
        for got, want in zip(remaining, expected):
            self.assertAlmostEqual(got, want, places=12)
        # The next request's Remaining counts the last one too.
        _, headers, _ = self.post(ask("five"), headers=ALICE)
        self.assertAlmostEqual(float(headers[f"x-ai-ratelimit-remaining-{SUFFIX}"][0]),
                               self.limit - sum(spent), places=12)

    def test_metrics_count_the_same_tokens(self):
        self.run_mixed()
        records = self.records()
        tokens = self.scrape("kong_ai_llm_tokens_total")
        for kind in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.assertEqual(tokens[kind], sum(usage(r).get(kind, 0) for r in records), kind)
        _, headers, _ = self.post(ask("five"), headers=ALICE)
        self.assertEqual(float(headers[f"x-ai-ratelimit-remaining-{SUFFIX}"][0]),
                         LIMIT - tokens[self.count])

    def test_reset_and_retry_after_only_on_a_429(self):
        self.clock.advance(1000.4)  # 2599.6 s left in the hour
        status, headers, _ = self.post(ask("one"), headers=ALICE)
        self.assertEqual(status, 200)
        self.assertEqual(headers[f"x-ai-ratelimit-limit-{SUFFIX}"], [str(LIMIT)])
        for name in (f"x-ai-ratelimit-reset-{SUFFIX}", f"x-ai-ratelimit-retry-after-{SUFFIX}",
                     "x-ai-ratelimit-reset", "x-ai-ratelimit-retry-after", "retry-after"):
            self.assertNotIn(name, headers)
        status, headers, text = until_refused(lambda: self.post(ask("x" * 8000), headers=ALICE))
        self.assertEqual((status, json.loads(text)["error"]["type"]), (429, "rate_limit_error"))
        self.assertEqual(json.loads(text)["message"], "AI token rate limit exceeded for provider(s): gemini")
        self.assertEqual(headers[f"x-ai-ratelimit-remaining-{SUFFIX}"], ["0"])
        self.assertEqual(headers[f"x-ai-ratelimit-limit-{SUFFIX}"], [str(LIMIT)])
        for name in (f"x-ai-ratelimit-reset-{SUFFIX}", f"x-ai-ratelimit-retry-after-{SUFFIX}",
                     "x-ai-ratelimit-reset", "x-ai-ratelimit-retry-after", "retry-after"):
            self.assertEqual(headers[name], ["2600"], name)
        # A refused request spends nothing: the budget is back whole in the next hour.
        self.clock.advance(2600)
        _, headers, _ = self.post(ask("again"), headers=ALICE)
        self.assertEqual(headers[f"x-ai-ratelimit-remaining-{SUFFIX}"], [str(LIMIT)])


class CostNumbersAgreeTests(NumbersAgreeTests):
    """The same with ``tokens_count_strategy: cost`` at Gemini Flash's prices (dollars per
    million tokens): Remaining keeps the fractions of a millionth of a dollar the record's
    ``usage.cost`` has (Kong writes 14 significant digits)."""

    extra_files = {**NumbersAgreeTests.extra_files, "50-limit.yaml": limiter("cost", 1)}
    count = "cost"
    limit = 1

    def test_metrics_count_the_same_tokens(self):
        self.run_mixed()
        cost = self.scrape("kong_ai_llm_cost_total")[""]
        self.assertAlmostEqual(cost, sum(usage(r).get("cost", 0) for r in self.records()), places=12)
        _, headers, _ = self.post(ask("five"), headers=ALICE)
        self.assertAlmostEqual(float(headers[f"x-ai-ratelimit-remaining-{SUFFIX}"][0]), self.limit - cost,
                               places=12)

    def test_reset_and_retry_after_only_on_a_429(self):
        """Covered with tokens; a dollar is not spent in a bounded test."""


class HiddenHeadersTests(GatewayInMemory):
    """``hide_client_headers`` hides Limit and Remaining; a 429 still says when to come back."""

    extra_files = {"40-consumers.yaml": CONSUMERS, "50-limit.yaml": limiter(limit=1, hide=True)}

    def test_only_the_429s_timing_headers(self):
        status, headers, _ = self.post(ask("one"), headers=ALICE)
        self.assertEqual(status, 200)
        self.assertFalse([name for name in headers if name.startswith("x-ai-ratelimit")], headers)
        status, headers, _ = self.post(ask("two"), headers=ALICE)
        self.assertEqual(status, 429)
        self.assertEqual(sorted(name for name in headers if name.startswith("x-ai-ratelimit")),
                         ["x-ai-ratelimit-reset", f"x-ai-ratelimit-reset-{SUFFIX}",
                          "x-ai-ratelimit-retry-after", f"x-ai-ratelimit-retry-after-{SUFFIX}"])
        self.assertEqual(headers["x-ai-ratelimit-retry-after"], ["3600"])


def test_whole_decrements_settle_a_cost_to_exactly_the_records():
    """Redis without ``decrease_by_fractions_in_redis`` gives back whole units only: a cost is
    then reserved in whole units, so settling still ends at the record's ``usage.cost``."""
    store = LocalStore(Clock())
    compiled_limiter = compiled({"tokens_count_strategy": "cost",
                                 "llm_providers": [{"name": "gemini", "limit": [1], "window_size": [60]}]})
    for whole in (True, False):
        rl = attrs.evolve(compiled_limiter, store=store, input_cost=0.15, whole_decrements=whole,
                          scope=f"whole-{whole}")
        found = counters(rl.windows, rl.scope, 0.0, rl.sliding)
        exchange = Exchange(started=0.0, request_size=40000)  # 10000 prompt tokens, guessed
        amount = rl.estimate(exchange)
        Deferred.fromCoroutine(store.reserve(found, amount))
        exchange.plugin_data[rl.plugin_id] = (found, amount)
        exchange.ai_usage = {"cost": 0.0004, "total_tokens": 1800}  # what the record says
        rl.log(None, exchange, {})
        used = []
        Deferred.fromCoroutine(store.reserve(found, 0)).addCallback(lambda result: used.extend(result[1]))
        assert used == [pytest.approx(0.0004, abs=1e-15)], (whole, amount, used)
