"""Several targets, failover and hostile input, against the real daemon and real fakes."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import anthropic
import pytest

from tests.e2e.harness import Daemon, FakeVertex, config_dir, file_log_override, read_records, settled_records, wait_for

ROUTE = "/anything"


def target(endpoint: str, location: str = "us-central1", weight: int = 100, model: str = "gemini-2.0-flash") -> str:
    return f"""
      - route_type: llm/v1/chat
        weight: {weight}
        logging: {{log_statistics: true}}
        auth:
          gcp_use_service_account: true
          gcp_service_account_json: "${{{{ env "DECK_GEMINI_API_KEY" }}}}"
        model:
          provider: gemini
          name: {model}
          options:
            gemini: {{api_endpoint: "{endpoint}", project_id: fake-project, location_id: {location}}}
"""


def plugin(balancer: str, *targets: str) -> tuple[str, str]:
    text = (
        '_format_version: "3.0"\nplugins:\n  - name: ai-proxy-advanced\n    config:\n'
        f"      llm_format: anthropic\n      balancer: {balancer}\n      targets:{''.join(targets)}"
    )
    return ("80-balancer.yaml", text)


def start(tmp_path: Path, fake: FakeVertex, *extra: tuple[str, str]) -> Daemon:
    log_path = tmp_path / "claude.json"
    daemon = Daemon(config_dir(tmp_path, file_log_override(log_path), *extra), fake.seed_environment(), tmp_path)
    daemon.file_log = log_path  # type: ignore[attr-defined]
    return daemon


def post(daemon: Daemon, body: bytes | dict, headers: dict[str, str] | None = None, path: str = "/v1/messages"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        daemon.url + ROUTE + path,
        data=data,
        headers={"content-type": "application/json", "x-api-key": "client-secret-key", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers


def ask(text: str = "hello", **extra: object) -> dict:
    return {"model": "gemini-2.0-flash", "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def records(daemon: Daemon, count: int) -> list[dict]:
    return wait_for(lambda: (r := read_records(daemon.file_log)) and len(r) >= count and r, what="file-log records")


@pytest.fixture(scope="module")
def down(tmp_path_factory):
    """Two targets that are down: one rate-limited, one overloaded."""
    fakes = [FakeVertex(tmp_path_factory.mktemp(f"down{code}"), "--fail-all", str(code)) for code in (429, 503)]
    yield fakes
    for each in fakes:
        each.stop()


def test_failover_priority_and_passive_health(tmp_path, fake, down):
    rate_limited, overloaded = down
    balancer = "{algorithm: priority, failover_criteria: [error, timeout, http_429, http_503], max_fails: 1, fail_timeout: 60000}"
    daemon = start(
        tmp_path,
        fake,
        plugin(balancer, target(rate_limited.url, weight=100), target(overloaded.url, weight=100),
               target(fake.url, weight=10)),
    )
    try:
        client = anthropic.Anthropic(base_url=daemon.url + ROUTE, api_key="x", max_retries=0)
        # One client request: both targets of the first group fail, the lower group answers.
        message = client.messages.create(**ask("Tell me about the Alexiad"))
        assert "Alexiad" in message.content[0].text
        (record,) = records(daemon, 1)
        tried = record["ai"]["proxy"]["tried_targets"]
        assert sorted((t["port"], t.get("outcome")) for t in tried[:2]) == sorted(
            [(rate_limited.port, "http_429"), (overloaded.port, "http_503")]
        )
        assert all("error" in t for t in tried[:2])
        assert tried[2]["port"] == fake.port and "outcome" not in tried[2]
        assert record["response"]["status"] == 200
        # The failed targets are out for fail_timeout: the next requests go straight to the healthy one.
        for n in range(8):
            assert client.messages.create(**ask(f"again {n}")).content
        later = records(daemon, 9)[1:]
        assert [[t["port"] for t in r["ai"]["proxy"]["tried_targets"]] for r in later] == [[fake.port]] * 8
        assert len(rate_limited.requests()) == len(overloaded.requests()) == 1
    finally:
        daemon.stop()


def test_without_failover_criteria_the_upstream_error_reaches_the_client(tmp_path, fake, down):
    rate_limited, _ = down
    daemon = start(tmp_path, fake, plugin("{algorithm: priority}", target(rate_limited.url, weight=100), target(fake.url, weight=10)))
    try:
        client = anthropic.Anthropic(base_url=daemon.url + ROUTE, api_key="x", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as raised:
            client.messages.create(**ask())
        # Vertex's 429 carries no RetryInfo, so there is no delay to pass on.
        assert "retry-after" not in raised.value.response.headers
        (record,) = records(daemon, 1)
        assert [t.get("outcome") for t in record["ai"]["proxy"]["tried_targets"]] == ["http_429"]
    finally:
        daemon.stop()


def test_consistent_hashing_keeps_a_session_on_one_target(tmp_path, fake):
    daemon = start(
        tmp_path,
        fake,
        plugin(
            "{algorithm: consistent-hashing, hash_on_header: X-Claude-Code-Session-Id}",
            target(fake.url, location="us-central1"),
            target(fake.url, location="europe-west4"),
        ),
    )
    try:
        sessions = [f"session-{n}" for n in range(12)]
        for _ in range(3):
            for session in sessions:
                status, _, _ = post(daemon, ask(), {"X-Claude-Code-Session-Id": session})
                assert status == 200
        seen = defaultdict(set)
        for record in records(daemon, 36):
            session = record["request"]["headers"]["x-claude-code-session-id"]
            seen[session].add(record["ai"]["proxy"]["tried_targets"][0]["upstream_uri"].split("/")[5])
        assert all(len(locations) == 1 for locations in seen.values())
        assert set().union(*seen.values()) == {"us-central1", "europe-west4"}
    finally:
        daemon.stop()


HOSTILE = [
    (b"{not json", 400, "invalid_request_error"),
    (b"[1, 2, 3]", 400, "invalid_request_error"),
    (b'"a string"', 400, "invalid_request_error"),
    (json.dumps({"model": "m", "max_tokens": 10}).encode(), 400, "invalid_request_error"),
    (json.dumps(ask(max_tokens="lots")).encode(), 400, "invalid_request_error"),
    (json.dumps({"model": "m", "max_tokens": 10, "messages": [{"role": "wizard", "content": "hi"}]}).encode(),
     400, "invalid_request_error"),
    (json.dumps({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "hologram", "data": "x"}]}]}).encode(), 400, "invalid_request_error"),
    (json.dumps({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!!"}}]}]}).encode(),
     400, "invalid_request_error"),
    (b"\xff\xfe\x00garbage", 400, "invalid_request_error"),
]


def test_hostile_input_gets_its_status_and_error_type(seed_daemon):
    before = len(settled_records(seed_daemon.file_log))
    for body, status, kind in HOSTILE:
        got, answer, _ = post(seed_daemon, body)
        assert (got, answer["type"], answer["error"]["type"]) == (status, "error", kind), body[:80]
    # Over the 32 MiB limit: refused with 413 without the gateway keeping the body.
    huge = b'{"model": "m", "messages": [], "pad": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    got, answer, _ = post(seed_daemon, huge)
    assert (got, answer["error"]["type"]) == (413, "request_too_large")
    logged = records(seed_daemon, before + len(HOSTILE) + 1)[before:]
    assert [r["response"]["status"] for r in logged] == [s for _, s, _ in HOSTILE] + [413]


def test_a_stalled_client_does_not_block_others(seed_daemon):
    stalled = socket.create_connection(("127.0.0.1", seed_daemon.port))
    try:
        stalled.sendall(b"POST /anything/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert post(seed_daemon, ask())[0] == 200
    finally:
        stalled.close()


def test_client_leaving_mid_stream_frees_the_upstream_stream(tmp_path):
    (tmp_path / "slow").mkdir()
    slow = FakeVertex(tmp_path / "slow", "--stream-delay", "0.2")
    daemon = start(tmp_path, slow)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
        connection.request(
            "POST",
            ROUTE + "/v1/messages",
            json.dumps(ask("a long answer please [[chunks 40]]", stream=True)),
            {"content-type": "application/json", "x-api-key": "x"},
        )
        response = connection.getresponse()
        assert response.status == 200
        assert b"message_start" in response.read1(65536)
        assert slow.streams() == {"open": 1, "cancelled": 0}
        connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        # The gateway drops its upstream stream at once: the fake sees its client leave.
        wait_for(lambda: slow.streams() == {"open": 0, "cancelled": 1}, timeout=3, what="the upstream stream to be cut")
        (record,) = records(daemon, 1)
        assert record["response"]["status"] == 200
        # The daemon still answers, and no credential reached any log.
        assert post(daemon, ask())[0] == 200
        key = json.loads(slow.key_path.read_text())
        logs = daemon.log() + daemon.file_log.read_text()
        for secret in (key["private_key"].splitlines()[1], "ya29.", "client-secret-key"):
            assert secret not in logs
    finally:
        daemon.stop()
        slow.stop()
