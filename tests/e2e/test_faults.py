"""Faults of what gatewayd depends on, with real processes: a full log disk, a token endpoint
that fails, closes or never answers, and Redis going away mid-traffic."""

from __future__ import annotations

import json
import shutil
import socket
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Daemon, FakeVertex, config_dir, file_log_override, wait_for


def post(url: str, text: str = "hi", headers: dict[str, str] | None = None, timeout: float = 30):
    body = {"model": "gemini-2.0-flash", "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    request = urllib.request.Request(
        url + "/anything/v1/messages", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": "x", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers


def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(daemon.status_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def status(daemon: Daemon) -> dict:
    with urllib.request.urlopen(daemon.status_url + "/status", timeout=5) as response:
        return json.load(response)


def log_events(daemon: Daemon, needle: str) -> list[str]:
    return [line for line in daemon.log().splitlines() if needle in line]


# -- a full log disk ---------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs of its own (root only), unmounted afterwards."""
    mountpoint = tmp_path / "logdisk"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of ``directory``, then free ``leave`` bytes (whole pages, on tmpfs)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (b"\0" * 65536, b"\0" * 4096):  # big writes, then the last pages
            while True:
                try:
                    if not out.write(chunk):
                        break
                except OSError:
                    break
    os.truncate(filler, filler.stat().st_size - leave)
    return filler


def test_a_full_log_disk_tears_no_line_keeps_a_backlog_and_counts_what_is_lost(tmp_path, fake, tiny_disk):
    log_path = tiny_disk / "claude.json"
    backlog = 40_000
    daemon = Daemon(config_dir(tmp_path, file_log_override(log_path)), fake.seed_environment(), tmp_path,
                    status_listen="tcp:0:interface=127.0.0.1", args=("--file-log-backlog", str(backlog)))
    try:
        assert post(daemon.url, "before the fault")[0] == 200
        wait_for(lambda: log_path.exists() and log_path.read_bytes().count(b"\n") == 1, what="the first record")
        size = log_path.stat().st_size
        filler = fill(tiny_disk, leave=4096)  # a page: one record and a part of the next fit
        assert size < 4096 < 2 * size
        started = time.monotonic()
        for n in range(40):
            assert post(daemon.url, f"during the fault {n}")[0] == 200
        assert time.monotonic() - started < 30
        wait_for(lambda: log_events(daemon, "backlog for"), what="the backlog to fill")
        raw = log_path.read_bytes()
        assert raw.endswith(b"\n")
        written_during = [json.loads(line) for line in raw.splitlines()][1:]  # no torn line: each one parses
        assert 1 <= len(written_during) < 40
        lost = metric(daemon, "gatewayd_file_log_records_lost_total", path=str(log_path))
        waiting = metric(daemon, "gatewayd_file_log_backlog_records", path=str(log_path))
        assert lost > 0 and waiting > 0
        assert len(written_during) + waiting + lost == 40
        assert waiting * size <= backlog + size

        filler.unlink()  # space returns
        wait_for(lambda: log_events(daemon, "writes to"), timeout=10, what="the backlog to be written")
        records = [json.loads(line) for line in log_path.read_bytes().splitlines()]
        assert len(records) == 1 + 40 - lost
        assert metric(daemon, "gatewayd_file_log_backlog_records", path=str(log_path)) == 0
        assert metric(daemon, "gatewayd_file_log_records_lost_total", path=str(log_path)) == lost
        (recovered,) = log_events(daemon, "writes to")
        assert f"records lost meanwhile: {int(lost)}" in recovered
        assert len(log_events(daemon, "cannot write to")) == 1
        # The kept records are the earliest of the fault, in the order of their requests.
        started = [r["started_at"] for r in records]
        assert started == sorted(started)
        assert post(daemon.url, "after the fault")[0] == 200
        wait_for(lambda: log_path.read_bytes().count(b"\n") == len(records) + 1, what="a record after the fault")
    finally:
        daemon.stop()


# -- a token endpoint that fails, closes or never answers ------------------------------------------

@pytest.mark.parametrize("fault", ["500", "close", "hang"])
def test_a_failing_token_endpoint_answers_requests_at_once_and_is_retried(tmp_path, fault):
    fake = FakeVertex(tmp_path, "--token-fault", fault)
    key = json.loads(fake.key_path.read_text())
    daemon = Daemon(config_dir(tmp_path), fake.seed_environment(), tmp_path)
    try:
        started = time.monotonic()
        code, body, _ = post(daemon.url)
        elapsed = time.monotonic() - started
        # 500: google-auth tries three times (about 3 s); hang: the 10 s deadline from the start.
        assert elapsed < 12, elapsed
        assert code == 500 and body["type"] == "error" and body["error"]["type"] == "api_error"
        message = body["error"]["message"]
        assert message.startswith("gateway credentials: could not obtain a Google access token")
        secrets = (key["private_key"].splitlines()[1], key["private_key_id"])
        assert not any(secret in message or secret in daemon.log() for secret in secrets)
        assert log_events(daemon, "Google token refresh failed")
        # While the retry is not due, requests are answered at once.
        quick = time.monotonic()
        assert post(daemon.url)[0] == 500
        assert time.monotonic() - quick < 1.5 or fault == "500"
        fake.token_fault(None)
        wait_for(lambda: post(daemon.url)[0] == 200, timeout=40, what="a token after the fault")
        assert log_events(daemon, "refreshed after")
    finally:
        daemon.stop()
        fake.stop()


def test_a_token_still_valid_is_used_while_its_refresh_hangs(tmp_path):
    # Tokens valid for 302 s: gatewayd refreshes 300 s before expiry, so 2 s after issue.
    fake = FakeVertex(tmp_path, "--token-lifetime", "302")
    daemon = Daemon(config_dir(tmp_path), fake.seed_environment(), tmp_path)
    try:
        assert post(daemon.url)[0] == 200
        fake.token_fault("hang")
        time.sleep(2.5)
        for n in range(12):  # over the refresh's 10 s deadline
            started = time.monotonic()
            assert post(daemon.url, f"during {n}")[0] == 200
            assert time.monotonic() - started < 2
            time.sleep(1)
        (failed,) = log_events(daemon, "Google token refresh failed")
        assert "did not answer within 10s" in failed and "stays in use" in failed
        fake.token_fault(None)
        wait_for(lambda: log_events(daemon, "refreshed after"), timeout=20, what="the refresh to succeed")
    finally:
        daemon.stop()
        fake.stop()


# -- Redis going away mid-traffic ------------------------------------------------------------------

def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: redis_cli(port, "PING") == "PONG", what="redis-server")
    return process


def redis_cli(port: int, *command: str) -> str:
    done = subprocess.run(["redis-cli", "-p", str(port), *command], capture_output=True, text=True, timeout=5)
    return done.stdout.strip()


def used(port: int) -> float:
    keys = redis_cli(port, "--scan", "--pattern", "gatewayd:ai-rate-limiting:*").split()
    return sum(float(redis_cli(port, "GET", key) or 0) for key in keys)


def test_redis_killed_mid_traffic_requests_pass_on_local_counts_and_counting_resumes(tmp_path, fake):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = start_redis(port, tmp_path)
    limiter = f"""_format_version: "3.0"
plugins:
  - name: ai-rate-limiting-advanced
    config:
      window_type: fixed
      strategy: redis
      redis: {{host: 127.0.0.1, port: {port}}}
      llm_providers:
        - name: gemini
          limit: [100000000]
          window_size: [3600]
"""
    daemon = Daemon(config_dir(tmp_path, ("50-limit.yaml", limiter)), fake.seed_environment(), tmp_path,
                    status_listen="tcp:0:interface=127.0.0.1")
    address = f"127.0.0.1:{port}"
    try:
        for n in range(3):
            assert post(daemon.url, f"before {n}")[0] == 200
        before = used(port)
        assert before > 0
        assert status(daemon)["redis"] == {address: {"reachable": True}}
        assert metric(daemon, "gatewayd_redis_reachable", redis=address) == 1
        redis.kill()  # SIGKILL, mid-traffic
        redis.wait()
        remaining = []
        for n in range(10):
            started = time.monotonic()
            code, _, headers = post(daemon.url, f"during {n}")
            assert code == 200
            assert time.monotonic() - started < 3  # the default deadline: Kong's 2 s timeouts
            remaining.append(int(headers["x-ai-ratelimit-remaining-hour-gemini"]))
        assert remaining == sorted(remaining, reverse=True) and remaining[0] > remaining[-1]  # counted locally
        assert status(daemon)["redis"] == {address: {"reachable": False}}
        assert metric(daemon, "gatewayd_redis_reachable", redis=address) == 0
        redis = start_redis(port, tmp_path)  # an empty Redis comes back on the same port
        wait_for(lambda: log_events(daemon, "answers again after"), timeout=20, what="gatewayd to see Redis back")
        assert status(daemon)["redis"] == {address: {"reachable": True}}
        assert metric(daemon, "gatewayd_redis_reachable", redis=address) == 1
        merged = used(port)
        assert merged > 0  # what was counted during the outage is in Redis now
        assert post(daemon.url, "after")[0] == 200
        assert used(port) > merged  # and counting goes on there
        assert len(log_events(daemon, "is unreachable")) == 1
        assert len(log_events(daemon, "answers again after")) == 1
    finally:
        daemon.stop()
        redis.kill()
        redis.wait()
