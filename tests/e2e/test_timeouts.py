"""Timeouts and a client that leaves, with real processes: twistd gatewayd and the fake upstream.

An upstream that takes the request and never answers is answered 504 within read_timeout
(counted from the request being sent) and a second; a client that leaves before the answer
is logged 499, and Prometheus counts it under code 499.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import SAMPLE_CONFIG, Daemon, FakeVertex, config_dir, file_log_override, read_records, wait_for
from tests.grammar import check_stream
from tests.inmemory import events

READ_TIMEOUT = 2.0
PROMETHEUS = """_format_version: "3.0"
plugins:
  - name: prometheus
    config:
      status_code_metrics: true
"""


def ai_proxy() -> str:
    """The seed's plugin with a short read_timeout, Kong's write_timeout and no second target."""
    text = (SAMPLE_CONFIG / "20-ai-proxy-advanced.yaml").read_text()
    balancer = f"      balancer:\n        read_timeout: {int(READ_TIMEOUT * 1000)}\n        retries: 0\n"
    return text.replace("      llm_format: anthropic\n", "      llm_format: anthropic\n" + balancer)


@pytest.fixture
def running(tmp_path):
    fake = FakeVertex(tmp_path)
    log_path = tmp_path / "claude.json"
    config = config_dir(tmp_path, ("20-ai-proxy-advanced.yaml", ai_proxy()),
                        ("40-prometheus.yaml", PROMETHEUS), file_log_override(log_path))
    daemon = Daemon(config, fake.seed_environment(), tmp_path, status_listen="tcp:0:interface=127.0.0.1")
    try:
        yield fake, daemon, log_path
    finally:
        daemon.stop()
        fake.stop()


def body(stream: bool = False) -> bytes:
    return json.dumps({"model": "gemini-2.0-flash", "max_tokens": 64, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


def post(url: str, stream: bool = False) -> tuple[int, bytes]:
    request = urllib.request.Request(url + "/anything/v1/messages", data=body(stream),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def requests_total(daemon: Daemon, code: str) -> float:
    with urllib.request.urlopen(daemon.status_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kong_http_requests_total" and sample.labels.get("code") == code:
                return sample.value
    return 0.0


def test_an_upstream_that_never_answers_is_answered_504_within_read_timeout(running):
    fake, daemon, log_path = running
    assert post(daemon.url)[0] == 200  # connected and warm: the wait below is the read timeout's
    fake.model_fault("hang")
    started = time.monotonic()
    status, raw = post(daemon.url)
    elapsed = time.monotonic() - started
    assert status == 504 and json.loads(raw)["error"]["type"] == "timeout_error"
    assert READ_TIMEOUT - 0.1 <= elapsed < READ_TIMEOUT + 1.0, elapsed
    # gatewayd dropped the call it gave up on.
    wait_for(lambda: fake.held()["dropped"] == 1, timeout=5, what="the fake to see the call dropped")
    record = wait_for(lambda: read_records(log_path)[1:], what="the record")[0]
    assert (record["response"]["status"], record["upstream_status"]) == (504, "504")
    assert record["ai"]["proxy"]["tried_targets"][0]["outcome"] == "timeout"


def test_a_slow_upstream_within_read_timeout_is_waited_for(running):
    fake, daemon, log_path = running
    fake.model_fault(str(READ_TIMEOUT - 1.0))
    status, raw = post(daemon.url, stream=True)
    assert status == 200
    check_stream(events(raw))
    record = wait_for(lambda: read_records(log_path), what="the record")[0]
    assert record["latencies"]["proxy"] >= (READ_TIMEOUT - 1.0) * 1000


def test_a_client_that_leaves_is_logged_499_and_counted_under_499(running):
    fake, daemon, log_path = running
    fake.model_fault("hang")
    before = requests_total(daemon, "499")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as client:
        data = body()
        client.sendall(b"POST /anything/v1/messages HTTP/1.1\r\nHost: gateway.test\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        wait_for(lambda: fake.held()["held"] == 1, timeout=5, what="the call to reach the fake")
    # The client has gone: gatewayd drops its upstream call, logs 499 with nothing sent.
    wait_for(lambda: fake.held()["dropped"] == 1, timeout=5, what="the upstream call to be dropped")
    record = wait_for(lambda: read_records(log_path), what="the record")[0]
    assert (record["response"]["status"], record["response"]["size"]) == (499, 0)
    assert wait_for(lambda: requests_total(daemon, "499") == before + 1, timeout=5, what="the metric")
