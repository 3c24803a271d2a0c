"""End to end: key-auth, token budgets (local and shared through a real redis-server),
/metrics against the file-log, and /status/ready during a stop, with ``twistd gatewayd``."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.bounded import until_refused
from tests.e2e.harness import Daemon, FakeVertex, config_dir, file_log_override, settled_records, wait_for

KEY = "sk-e2e-alice-0123456789"
CONSUMERS = f"""_format_version: "3.0"
consumers:
  - username: alice
    custom_id: A-1
    keyauth_credentials:
      - key: {KEY}
plugins:
  - name: key-auth
    config:
      key_names: [x-api-key]
  - name: prometheus
    config:
      ai_metrics: true
      status_code_metrics: true
      per_consumer: true
"""


def limiter(limit: int, window: int, redis_port: int | None = None) -> str:
    redis = f"\n      strategy: redis\n      redis:\n        host: 127.0.0.1\n        port: {redis_port}" if redis_port else ""
    return f"""_format_version: "3.0"
plugins:
  - name: ai-rate-limiting-advanced
    config:
      window_type: fixed{redis}
      llm_providers:
        - name: gemini
          limit: [{limit}]
          window_size: [{window}]
"""


def post(url: str, headers: dict[str, str] | None = None, text: str = "hi", stream: bool = False):
    body = {"model": "gemini-2.0-flash", "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    request = urllib.request.Request(
        url + "/anything/v1/messages", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def daemon(fake, tmp_path):
    log = tmp_path / "log.json"
    config = config_dir(tmp_path, file_log_override(log), ("40-consumers.yaml", CONSUMERS),
                        ("50-limit.yaml", limiter(300, 2)))
    daemon = Daemon(config, fake.seed_environment(), tmp_path, status_listen="tcp:0:interface=127.0.0.1")
    daemon.file_log = log
    yield daemon
    daemon.stop()


def test_keys_budget_and_metrics(daemon):
    status, headers, text = post(daemon.url)
    assert (status, json.loads(text)["error"]["type"]) == (401, "authentication_error")
    status, _, text = post(daemon.url, {"x-api-key": "sk-wrong-000000"})
    assert (status, json.loads(text)["error"]["type"]) == (401, "authentication_error")
    assert post(daemon.url, {"x-api-key": KEY})[0] == 200
    status, headers, _ = post(daemon.url, {"x-api-key": KEY}, stream=True)
    assert status == 200 and headers["x-ai-ratelimit-limit-2-gemini"] == "300"

    status, headers, text = until_refused(lambda: post(daemon.url, {"x-api-key": KEY}))
    assert (status, json.loads(text)["error"]["type"]) == (429, "rate_limit_error")
    assert int(headers["retry-after"]) in (1, 2)
    time.sleep(int(headers["retry-after"]))
    assert post(daemon.url, {"x-api-key": KEY})[0] == 200

    # Every answer is in; their records follow them out (and so do the metrics, counted with them).
    records = settled_records(daemon.file_log)
    assert len(records) >= 6
    assert KEY not in daemon.file_log.read_text() and "sk-wrong" not in daemon.file_log.read_text()
    served = [r for r in records if r["response"]["status"] == 200]
    assert {r["consumer"]["username"] for r in served} == {"alice"}

    status, text = get(daemon.status_url + "/metrics")
    assert status == 200
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

    for token_type in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert total("kong_ai_llm_tokens_total", token_type=token_type, consumer="alice") == sum(
            r["ai"]["proxy"]["usage"][token_type] for r in served)
    assert total("kong_ai_llm_requests_total", request_mode="stream") == 1
    assert total("kong_ai_llm_cost_total") == sum(r["ai"]["proxy"]["usage"]["cost"] for r in served)
    assert total("kong_http_requests_total", code="429", consumer="alice") == 1
    assert total("kong_http_requests_total", code="401") == 2

    status, text = get(daemon.status_url + "/status")
    body = json.loads(text)
    assert status == 200 and body["configuration"]["generation"] == 1 and body["server"]["total_requests"] >= 7
    assert get(daemon.status_url + "/status/ready")[0] == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for(answers, what="redis-server")
    yield port
    process.terminate()
    process.wait(10)


def test_two_instances_share_one_budget_through_redis(fake, tmp_path, redis_server):
    daemons = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            config = config_dir(workdir, ("40-consumers.yaml", CONSUMERS),
                                ("50-limit.yaml", limiter(200, 60, redis_server)))
            daemons.append(Daemon(config, fake.seed_environment(), workdir))
        first, second = daemons
        status, headers, _ = until_refused(lambda: post(first.url, {"x-api-key": KEY}))
        assert status == 429
        status, headers, text = post(second.url, {"x-api-key": KEY})
        assert (status, json.loads(text)["error"]["type"]) == (429, "rate_limit_error")
        assert headers["x-ai-ratelimit-remaining-minute-gemini"] == "0"
    finally:
        for daemon in daemons:
            daemon.stop()


def test_ready_flips_while_a_stop_drains(tmp_path):
    fake = FakeVertex(tmp_path, "--stream-delay", "0.3")
    daemon = Daemon(config_dir(tmp_path), fake.seed_environment(), tmp_path,
                    status_listen="tcp:0:interface=127.0.0.1")
    try:
        assert wait_for(lambda: get(daemon.status_url + "/status/ready")[0] == 200, what="ready")
        import threading

        answer: list = []
        thread = threading.Thread(target=lambda: answer.append(
            post(daemon.url, {"x-api-key": "x"}, "[[chunks 12]] take your time", stream=True)))
        thread.start()
        wait_for(lambda: json.loads(get(daemon.status_url + "/status")[1])["server"]["requests_in_flight"] == 1,
                 what="the request in flight")
        daemon.process.send_signal(signal.SIGTERM)
        status, text = wait_for(lambda: (r := get(daemon.status_url + "/status/ready"))[0] == 503 and r,
                                what="not ready")
        assert json.loads(text) == {"message": "not ready: draining"}
        thread.join(30)
        assert answer and answer[0][0] == 200 and "message_stop" in answer[0][2]
        assert daemon.process.wait(15) in (0, -signal.SIGTERM)  # twistd re-raises the signal it got
    finally:
        daemon.stop()
        fake.stop()
