"""Consumers, key-auth, ai-rate-limiting-advanced and prometheus, in memory (StubTreq, a Clock)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from treq.testing import StubTreq

from gatewayd.config import ConfigError
from gatewayd.plugins import read_config
from gatewayd.plugins.ai_rate_limiting_advanced.handler import LocalStore, Window, counters
from gatewayd.daemon.status import Stats, status_root
from tests.bounded import until_refused
from tests.test_service import MESSAGES, GatewayInMemory, ask

KEY = "sk-team-alice-0123456789"
CONSUMERS = f"""_format_version: "3.0"
consumers:
  - username: alice
    custom_id: A-1
    tags: [team-a]
    keyauth_credentials:
      - key: {KEY}
  - username: bob
    keyauth_credentials:
      - key: sk-bob-9876543210
plugins:
  - name: key-auth
    config:
      key_names: [x-api-key, apikey]
"""


def limiter(limit: int, window: int = 2, window_type: str = "fixed", strategy: str = "total_tokens") -> str:
    return f"""_format_version: "3.0"
plugins:
  - name: ai-rate-limiting-advanced
    route: example-route
    config:
      window_type: {window_type}
      tokens_count_strategy: {strategy}
      llm_providers:
        - name: gemini
          limit: [{limit}]
          window_size: [{window}]
"""


PROMETHEUS = """_format_version: "3.0"
plugins:
  - name: prometheus
    config:
      ai_metrics: true
      status_code_metrics: true
      latency_metrics: true
      bandwidth_metrics: true
      per_consumer: true
"""


def error_type(text: str) -> str:
    return json.loads(text)["error"]["type"]


class KeyAuthTests(GatewayInMemory):
    extra_files = {"40-consumers.yaml": CONSUMERS}

    def test_no_key_is_anthropics_authentication_error(self):
        status, headers, text = self.post(ask("hi"))
        self.assertEqual((status, error_type(text)), (401, "authentication_error"))
        self.assertEqual(json.loads(text)["error"]["message"], "No API key found in request")
        self.assertEqual(json.loads(text)["message"], "No API key found in request")
        self.assertEqual(headers["www-authenticate"], ["Key"])
        self.assertEqual(self.fake.requests, [])

    def test_unknown_key_is_refused_and_never_logged(self):
        status, _, text = self.post(ask("hi"), headers={"x-api-key": "sk-guess-000000"})
        self.assertEqual((status, error_type(text)), (401, "authentication_error"))
        self.assertNotIn("sk-guess", text)
        (record,) = self.records()
        self.assertNotIn("sk-guess", json.dumps(record))
        self.assertNotIn("consumer", record)

    def test_the_key_under_each_key_name_in_header_and_query(self):
        for headers in ({"x-api-key": KEY}, {"apikey": KEY}):
            status, _, text = self.post(ask("hi"), headers=headers)
            self.assertEqual(status, 200, text)
        status, _, _ = self.post(ask("hi"), url=MESSAGES + f"?apikey={KEY}&beta=true")
        self.assertEqual(status, 200)
        records = self.records()
        self.assertEqual(len(records), 3)
        for record in records:
            self.assertEqual(record["consumer"], {"id": record["consumer"]["id"], "username": "alice",
                                                  "custom_id": "A-1", "tags": ["team-a"]})
            self.assertEqual(record["authenticated_entity"]["consumer_id"], record["consumer"]["id"])
        # hide_credentials took the key out of the query before the log, as in Kong
        self.assertEqual(records[2]["request"]["querystring"], {"beta": "true"})
        self.assertNotIn("apikey", records[2]["request"]["uri"])  # Kong logs the raw key here
        self.assertNotIn(KEY, json.dumps(records))
        self.assertNotIn(KEY, json.dumps(self.fake.requests))

    def test_only_key_names_are_looked_up(self):
        """Kong looks nowhere else: a Bearer token is no key unless ``authorization`` is a key name."""
        status, _, text = self.post(ask("hi"), headers={"Authorization": f"Bearer {KEY}"})
        self.assertEqual((status, json.loads(text)["message"]), (401, "No API key found in request"))

    def test_kong_3_7_messages_in_both_shapes(self):
        """The Anthropic SDK reads error.type/error.message; Kong's scripts read message."""
        for headers, url, message in (
                ({"x-api-key": "sk-guess-000000"}, MESSAGES, "Unauthorized"),
                ({"x-api-key": ""}, MESSAGES, "No API key found in request"),
                ({}, MESSAGES + f"?apikey={KEY}&apikey={KEY}", "Duplicate API key found")):
            status, response, text = self.post(ask("hi"), headers=headers, url=url)
            body = json.loads(text)
            self.assertEqual((status, body["error"], body["message"]),
                             (401, {"type": "authentication_error", "message": message}, message))
            self.assertEqual(body["request_id"], response["x-kong-request-id"][0])
        self.assertEqual(self.fake.requests, [])

    def test_count_tokens_needs_a_key_too(self):
        status, _, _ = self.post({"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                                 url=MESSAGES + "/count_tokens")
        self.assertEqual(status, 401)


class RateLimitTests(GatewayInMemory):
    extra_files = {"40-consumers.yaml": CONSUMERS, "50-limit.yaml": limiter(150)}

    def test_budget_spent_then_429_then_served_after_the_window(self):
        alice = {"x-api-key": KEY}
        status, headers, _ = self.post(ask("hi"), headers=alice)
        self.assertEqual(status, 200)
        self.assertEqual(headers["x-ai-ratelimit-limit-2-gemini"], ["150"])
        self.assertEqual(headers["x-ai-ratelimit-remaining-2-gemini"], ["150"])
        spent = self.records()[-1]["ai"]["proxy"]["usage"]["total_tokens"]
        status, headers, _ = self.post(ask("hi"), headers=alice)
        self.assertEqual(status, 200)
        self.assertEqual(headers["x-ai-ratelimit-remaining-2-gemini"], [str(150 - spent)])
        status, headers, text = until_refused(lambda: self.post(ask("hi"), headers=alice))
        self.assertEqual((status, error_type(text)), (429, "rate_limit_error"))
        self.assertEqual(headers["x-ai-ratelimit-remaining-2-gemini"], ["0"])
        self.assertIn(headers["retry-after"][0], ("1", "2"))
        self.assertIn("gemini", json.loads(text)["error"]["message"])
        # Bob has a budget of his own.
        self.assertEqual(self.post(ask("hi"), headers={"x-api-key": "sk-bob-9876543210"})[0], 200)
        self.clock.advance(2)
        self.assertEqual(self.post(ask("hi"), headers=alice)[0], 200)

    def test_a_reservation_holds_back_concurrent_requests(self):
        store = LocalStore(Clock())
        found = counters([Window("gemini", 100, 60)], "s", 0.0, sliding=False)
        first = self.successResultOf(_run(store.reserve(found, 60)))
        second = self.successResultOf(_run(store.reserve(found, 60)))
        third = self.successResultOf(_run(store.reserve(found, 60)))
        self.assertEqual([first, second, third], [(True, [0.0]), (True, [60.0]), (False, [120.0])])
        self.successResultOf(_run(store.charge(found, -60)))  # one settles at nothing spent
        self.assertEqual(self.successResultOf(_run(store.reserve(found, 0)))[1], [60.0])


def _run(coroutine):
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coroutine)


class SlidingWindowTests(SynchronousTestCase):
    def test_the_previous_window_counts_by_its_overlap(self):
        clock = Clock()
        store = LocalStore(clock)
        windows = [Window("gemini", 100, 10)]
        clock.advance(5)
        self.successResultOf(_run(store.reserve(counters(windows, "s", clock.seconds(), True), 80)))
        clock.advance(7.5)  # 2.5 s into the next window: 75% of the previous still counts
        allowed, used = self.successResultOf(
            _run(store.reserve(counters(windows, "s", clock.seconds(), True), 0)))
        self.assertEqual((allowed, used), (True, [60.0]))
        clock.advance(20)
        self.assertEqual(self.successResultOf(
            _run(store.reserve(counters(windows, "s", clock.seconds(), True), 0)))[1], [0.0])

    def test_labels_are_kongs(self):
        self.assertEqual([Window("gemini", 1, s).label for s in (1, 60, 3600, 86400, 2, 0.5)],
                         ["second", "minute", "hour", "day", "2", "0.5"])


class CostLimitTests(GatewayInMemory):
    extra_files = {
        "40-consumers.yaml": CONSUMERS,
        "50-limit.yaml": limiter(1, window=60, strategy="cost"),
        "80-cost.yaml": (Path(__file__).resolve().parents[1] / "etc" / "gatewayd" / "20-ai-proxy-advanced.yaml")
        .read_text().replace("          options:\n", "          options:\n            input_cost: 4000\n            output_cost: 8000\n"),
    }

    def test_cost_is_logged_and_limited(self):
        alice = {"x-api-key": KEY}
        status, headers, _ = self.post(ask("hi"), headers=alice)
        self.assertEqual(status, 200)
        usage = self.records()[-1]["ai"]["proxy"]["usage"]
        expected = (usage["prompt_tokens"] * 4000 + usage["completion_tokens"] * 8000) / 1e6
        self.assertAlmostEqual(usage["cost"], expected)
        self.assertEqual(headers["x-ai-ratelimit-limit-minute-gemini"], ["1"])
        status, headers, _ = until_refused(lambda: self.post(ask("hi"), headers=alice))
        self.assertEqual(status, 429)
        spent = sum(r["ai"]["proxy"]["usage"]["cost"] for r in self.records() if "ai" in r)
        self.assertLess(spent, 1 + expected * 2)  # never more than one request past the budget


class MetricsTests(GatewayInMemory):
    extra_files = {"40-consumers.yaml": CONSUMERS, "60-prometheus.yaml": PROMETHEUS}

    def scrape(self) -> dict:
        client = StubTreq(status_root(self.gateway.stats, self.gateway.metrics_registry))
        text = self.successResultOf(self.successResultOf(client.get("http://status.test/metrics")).text())
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
        }

    def test_ai_and_http_metrics_match_the_log(self):
        for text in ("one", "two"):
            self.assertEqual(self.post(ask(text), headers={"x-api-key": KEY})[0], 200)
        self.assertEqual(self.post(ask("x"))[0], 401)
        samples = self.scrape()
        records = [r for r in self.records() if "ai" in r]
        labels = {"ai_provider": "gemini", "ai_model": "claude-x", "cache_status": "",
                  "vector_db": "", "embeddings_provider": "", "embeddings_model": "",
                  "workspace": "default", "request_mode": "oneshot", "consumer": "alice"}
        key = tuple(sorted(labels.items()))
        self.assertEqual(samples[("kong_ai_llm_requests_total", key)], 2)
        for token_type in ("prompt_tokens", "completion_tokens", "total_tokens"):
            # request_mode is on every AI family but the tokens one (Kong 3.12+).
            tokens = tuple(sorted({**labels, "token_type": token_type, "request_mode": None}.items()))
            tokens = tuple(item for item in tokens if item[1] is not None)
            self.assertEqual(samples[("kong_ai_llm_tokens_total", tokens)],
                             sum(r["ai"]["proxy"]["usage"][token_type] for r in records))
        self.assertEqual(samples[("kong_ai_llm_provider_latency_ms_count", key)], 2)
        http = {"service": "example-service", "route": "example-route", "workspace": "default"}
        self.assertEqual(samples[("kong_http_requests_total", tuple(sorted(
            {**http, "code": "200", "source": "service", "consumer": "alice"}.items())))], 2)
        self.assertEqual(samples[("kong_http_requests_total", tuple(sorted(
            {**http, "code": "401", "source": "kong", "consumer": ""}.items())))], 1)
        self.assertEqual(samples[("kong_request_latency_ms_count", tuple(sorted(http.items())))], 3)


class StatusTests(SynchronousTestCase):
    def test_ready_only_when_said_so(self):
        stats = Stats()
        client = StubTreq(status_root(stats, CollectorRegistry()))

        def get(path: str) -> tuple[int, dict]:
            response = self.successResultOf(client.get("http://status.test" + path))
            return response.code, json.loads(self.successResultOf(response.text()))

        self.assertEqual(get("/status/ready")[0], 503)
        stats.loaded("abc")
        stats.ready = True
        self.assertEqual(get("/status/ready"), (200, {"message": "ready"}))
        stats.request_started()
        code, body = get("/status")
        self.assertEqual((code, body["server"]["requests_in_flight"], body["configuration"]["generation"]),
                         (200, 1, 1))
        stats.ready = False
        self.assertEqual(get("/status/ready"), (503, {"message": "not ready: draining"}))


class ConsumerConfigTests(SynchronousTestCase):
    def load(self, *files: str):
        directory = Path(tempfile.mkdtemp(prefix="gatewayd-test-"))
        self.addCleanup(shutil.rmtree, directory)
        for index, text in enumerate(files):
            (directory / f"{index}.yaml").write_text(text)
        return read_config(str(directory), {})

    def test_a_later_file_replaces_a_consumer_of_the_same_name(self):
        config = self.load(
            '_format_version: "3.0"\nconsumers: [{username: a, keyauth_credentials: [{key: k1}]}, {username: b}]\n',
            '_format_version: "3.0"\nconsumers: [{username: a, custom_id: X, keyauth_credentials: [{key: k2}]}]\n',
        )
        self.assertEqual(sorted(config.consumers), ["a", "b"])
        self.assertEqual(config.consumers["a"].custom_id, "X")
        self.assertEqual([c.key for c in config.consumers["a"].keyauth_credentials], ["k2"])
        self.assertNotIn("k2", repr(config.consumers["a"]))

    def test_errors_name_file_entity_and_field_never_the_key(self):
        cases = [
            ('consumers: [{custom_id: C, keyauth_credentials: [{}]}]',
             "consumers[0] (C): keyauth_credentials[0].key: required"),
            ('consumers: [{tags: [x]}]', "consumers[0]: at least one of these fields must be non-empty"),
            ('consumers: [{username: a, keyauth_credentials: [{key: secret-1}]}, '
             '{username: b, keyauth_credentials: [{key: secret-1}]}]',
             "consumers (b): keyauth_credentials: the same key is already a credential of consumer 'a'"),
            ('consumers: [{username: a, plugins: [{name: key-auth}]}]',
             "consumers[0] (a).plugins[0] (key-auth): consumer: value must be null"),
        ]
        for body, expected in cases:
            with self.assertRaises(ConfigError) as caught:
                self.load(f'_format_version: "3.0"\n{body}\n')
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn("secret-1", str(caught.exception))

    def test_limits_and_windows_must_pair(self):
        with self.assertRaises(ConfigError) as caught:
            self.load(limiter(10).replace("window_size: [2]", "window_size: [2, 60]").replace("    route: example-route\n", ""))
        self.assertIn("config.llm_providers[0]: You must provide the same number of windows and limits",
                      str(caught.exception))
