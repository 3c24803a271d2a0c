"""End to end: ai-rate-limiting-advanced counts what the file-log and /metrics count.

The real daemon against the fake, a failover on every request (a dead first target), a
oneshot, a raw SSE stream and an SDK stream: each answer's Remaining is the limit less the
``ai.proxy.usage.total_tokens`` of the records before it, ``kong_ai_llm_tokens_total`` is
their sum, and the 429 that ends the budget carries Kong's Reset and Retry-After headers,
which no 200 carries."""

from __future__ import annotations

import anthropic
import pytest

from tests.bounded import until_refused
from tests.e2e.harness import Daemon, config_dir, file_log_override, read_records, wait_for
from tests.e2e.test_consumers import post
from tests.e2e.test_numbers_agree import ALICE, CONSUMERS, closed_port, scrape, two_targets
from tests.grammar import check_sdk_stream, check_stream
from tests.test_service import events

LIMIT = 20000
REMAINING = "x-ai-ratelimit-remaining-hour-gemini"
TIMING = ("x-ai-ratelimit-reset-hour-gemini", "x-ai-ratelimit-retry-after-hour-gemini",
          "x-ai-ratelimit-reset", "x-ai-ratelimit-retry-after", "retry-after")
HOURLY = f"""_format_version: "3.0"
plugins:
  - name: ai-rate-limiting-advanced
    config:
      window_type: fixed
      llm_providers:
        - name: gemini
          limit: [{LIMIT}]
          window_size: [3600]
"""


@pytest.fixture
def daemon(fake, tmp_path):
    log = tmp_path / "claude.json"
    config = config_dir(tmp_path, file_log_override(log),
                        ("20-ai-proxy-advanced.yaml", two_targets(closed_port())),
                        ("40-consumers.yaml", CONSUMERS), ("50-limit.yaml", HOURLY))
    daemon = Daemon(config, fake.seed_environment(), tmp_path, status_listen="tcp:0:interface=127.0.0.1")
    daemon.file_log = log
    yield daemon
    daemon.stop()


def test_remaining_records_and_metrics_agree(daemon):
    remaining = []
    for stream in (False, True):
        status, headers, text = post(daemon.url, {"x-api-key": ALICE}, "tell me", stream=stream)
        assert status == 200, text
        if stream:
            check_stream(events(text))
        assert not [name for name in TIMING if name in headers], headers
        remaining.append(float(headers[REMAINING]))
    sdk = anthropic.Anthropic(base_url=daemon.url + "/anything", api_key=ALICE, max_retries=0,
                              default_headers={"x-api-key": ALICE})
    with sdk.messages.with_streaming_response.create(
            model="gemini-2.0-flash", max_tokens=64, stream=True,
            messages=[{"role": "user", "content": "stream it"}]) as response:
        remaining.append(float(response.headers[REMAINING]))
        check_sdk_stream(response.parse())

    records = wait_for(lambda: (r := read_records(daemon.file_log)) and len(r) == 3 and r, what="records")
    assert all(r["tries"][0]["state"] == "failed" and len(r["tries"]) == 2 for r in records), "no failover"
    spent = [r["ai"]["proxy"]["usage"]["total_tokens"] for r in records]
    assert all(s > 0 for s in spent)
    assert remaining == [LIMIT - sum(spent[:i]) for i in range(3)]

    tokens = sum(v for n, labels, v in scrape(daemon)
                 if n == "kong_ai_llm_tokens_total" and labels["token_type"] == "total_tokens"
                 and labels["consumer"] == "alice")
    assert tokens == sum(spent)
    status, headers, _ = post(daemon.url, {"x-api-key": ALICE})
    assert (status, float(headers[REMAINING])) == (200, LIMIT - tokens)

    status, headers, text = until_refused(lambda: post(daemon.url, {"x-api-key": ALICE}, "x" * 20000))
    assert status == 429, text
    assert headers[REMAINING] == "0"
    seconds = {headers[name] for name in TIMING}
    assert len(seconds) == 1 and 0 < int(seconds.pop()) <= 3600, headers
