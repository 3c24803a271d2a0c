"""rate-limiting (Kong's non-AI limiter), in memory on a Clock: windows, headers, 429, refusals."""

from __future__ import annotations

import datetime
import json

import pytest

from gatewayd.config import ConfigError
from gatewayd.plugins import ConfigurationError, read_config
from gatewayd.plugins.rate_limiting import window_start
from tests.test_service import GatewayInMemory, ask


def limiter(**config: object) -> str:
    settings = ", ".join(f"{k}: {json.dumps(v)}" for k, v in config.items())
    return f'_format_version: "3.0"\nplugins:\n  - name: rate-limiting\n    route: example-route\n    config: {{{settings}}}\n'


class MinuteLimitTests(GatewayInMemory):
    extra_files = {"60-limit.yaml": limiter(minute=2, hour=5)}

    def test_requests_count_per_calendar_window_with_kongs_headers(self):
        self.clock.advance(30)  # 30 s into the first minute of 1970
        status, headers, _ = self.post(ask("one"))
        self.assertEqual(status, 200)
        self.assertEqual((headers["x-ratelimit-limit-minute"], headers["x-ratelimit-remaining-minute"]), (["2"], ["1"]))
        self.assertEqual((headers["x-ratelimit-limit-hour"], headers["x-ratelimit-remaining-hour"]), (["5"], ["4"]))
        # The most constrained period: fewest left, here the minute, reset at its end.
        self.assertEqual((headers["ratelimit-limit"], headers["ratelimit-remaining"], headers["ratelimit-reset"]),
                         (["2"], ["1"], ["30"]))
        self.assertEqual(self.post(ask("two"))[0], 200)
        status, headers, text = self.post(ask("three"))
        self.assertEqual(status, 429)
        self.assertEqual(headers["retry-after"], ["30"])
        self.assertEqual(headers["x-ratelimit-remaining-minute"], ["0"])
        body = json.loads(text)  # an LLM route: Anthropic's error, Kong's message beside it
        self.assertEqual((body["error"]["type"], body["message"]), ("rate_limit_error", "API rate limit exceeded"))
        self.assertEqual(len(self.fake.requests), 2)
        self.clock.advance(30)  # the next minute: counting starts again, the hour goes on
        status, headers, _ = self.post(ask("four"))
        self.assertEqual(status, 200)
        self.assertEqual(headers["x-ratelimit-remaining-hour"], ["2"])
        self.assertEqual([r["response"]["status"] for r in self.records()], [200, 200, 429, 200])


class HiddenHeadersTests(GatewayInMemory):
    extra_files = {"60-limit.yaml": limiter(second=1, hide_client_headers=True, error_code=503,
                                            error_message="slow down")}

    def test_hidden_headers_and_the_configured_answer(self):
        self.assertEqual(self.post(ask("one"))[0], 200)
        status, headers, text = self.post(ask("two"))
        self.assertEqual((status, json.loads(text)["message"]), (503, "slow down"))
        self.assertFalse([name for name in headers if "ratelimit" in name or name == "retry-after"])


class LimitByHeaderTests(GatewayInMemory):
    extra_files = {"60-limit.yaml": limiter(minute=1, limit_by="header", header_name="x-team")}

    def test_each_header_value_has_its_own_count(self):
        self.assertEqual(self.post(ask("a"), headers={"x-team": "blue"})[0], 200)
        self.assertEqual(self.post(ask("b"), headers={"x-team": "red"})[0], 200)
        self.assertEqual(self.post(ask("c"), headers={"x-team": "blue"})[0], 429)


@pytest.mark.parametrize("when, period, start", [
    ("2026-11-30T03:04:05.678", "second", "2026-11-30T03:04:05"),
    ("2026-11-30T03:04:05", "minute", "2026-11-30T03:04:00"),
    ("2026-11-30T03:04:05", "hour", "2026-11-30T03:00:00"),
    ("2026-11-30T03:04:05", "day", "2026-11-30T00:00:00"),
    ("2026-11-30T03:04:05", "month", "2026-11-01T00:00:00"),
    ("2026-11-30T03:04:05", "year", "2026-01-01T00:00:00"),
])
def test_windows_start_where_kongs_timestamps_do(when, period, start):
    utc = datetime.timezone.utc
    found = window_start(period, datetime.datetime.fromisoformat(when).replace(tzinfo=utc))
    assert found == datetime.datetime.fromisoformat(start).replace(tzinfo=utc)


@pytest.mark.parametrize("config, message", [
    ({}, "config.second: at least one of these fields must be non-empty"),
    ({"minute": 10, "hour": 5}, "config.hour: the limit for hour (5) cannot be lower than the limit for minute (10)"),
    ({"minute": 1, "limit_by": "header"}, "config.header_name: required when limit_by is 'header'"),
    ({"minute": 1, "sync_rate": 10}, "config.sync_rate: not served by gatewayd (batched counting)"),
])
def test_what_kong_refuses_or_gatewayd_does_not_serve_is_refused(tmp_path, config, message):
    (tmp_path / "kong.yaml").write_text(
        '_format_version: "3.0"\nservices:\n  - name: s\n    url: http://upstream.test\n'
        "    routes:\n      - name: r\n        paths: [/r]\n" + limiter(**config).split("\n", 1)[1].replace(
            "route: example-route", "route: r"))
    from gatewayd.daemon.gateway import Gateway
    from twisted.internet.task import Clock

    with pytest.raises(ConfigurationError) as raised:
        Gateway(Clock(), client=None).load(read_config(str(tmp_path / "kong.yaml"), {}))
    assert message in str(raised.value)


@pytest.mark.parametrize("config, field", [
    ({"minute": 1, "policy": "cluster"}, 'config.policy: "cluster" is not served by gatewayd'),
    ({"minute": 1, "limit_by": "consumer-group"}, 'config.limit_by: "consumer-group" is not served by gatewayd'),
])
def test_values_not_served_are_refused_at_load(tmp_path, config, field):
    (tmp_path / "kong.yaml").write_text(limiter(**config).replace("    route: example-route\n", ""))
    with pytest.raises(ConfigError) as raised:
        read_config(str(tmp_path / "kong.yaml"), {})
    assert f"plugins[0] (rate-limiting): {field}" in str(raised.value)
