"""Kong's routing and plain proxying with the real daemon: routes that are not LLM routes,
a third-party plugin installed with pip, a slow client and large bodies with memory flat."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatewayd.demo import BIN, file_text, wait_for
from tests.e2e.harness import Daemon, read_records, settled_records

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gatewayd-hello"

CONFIG = """_format_version: "3.0"
services:
  - name: plain
    url: http://127.0.0.1:{port}/echo
    routes:
      - name: prefix
        paths: [/items]
      - name: by-id
        paths: ['~/items/\\d+$']
      - name: guarded
        paths: [/guarded]
        headers: {{x-team: [blue]}}
      - name: secure
        paths: [/secure]
        protocols: [https]
      - name: hello
        paths: [/hello]
        strip_path: false
      - name: limited
        paths: [/limited]
  - name: files
    url: http://127.0.0.1:{port}
    routes:
      - name: files
        paths: [/files]
  - name: retired
    enabled: false
    url: http://127.0.0.1:{port}
    routes:
      - name: retired
        paths: [/retired]
plugins:
  - name: file-log
    config: {{path: "{log}"}}
  - name: hello
    route: hello
    config: {{greeting: from a pip-installed plugin}}
  - name: rate-limiting
    route: limited
    config: {{hour: 2, limit_by: ip}}
"""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("upstream")
    port_file = workdir / "port"
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("upstream.py")), str(port_file)])
    port = int(wait_for(lambda: file_text(port_file), what="the plain upstream's port"))
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def daemon(upstream, tmp_path_factory):
    """The daemon with the example plugin installed beside it the way an operator would: pip."""
    workdir = tmp_path_factory.mktemp("routes")
    plugins = workdir / "site"
    subprocess.run(
        [str(BIN / "pip"), "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(plugins), str(EXAMPLE)],
        check=True, timeout=300, capture_output=True,
    )
    config = workdir / "kong.yaml"
    log = workdir / "access.json"
    config.write_text(CONFIG.format(port=upstream, log=log))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(plugins)}
    daemon = Daemon(config, env, workdir)
    daemon.file_log = log
    yield daemon
    daemon.stop()


def get(daemon, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_a_plain_route_proxies_to_its_service_as_kong_does(daemon):
    status, headers, body = get(daemon, "/items/abc?colour=red")
    assert status == 200 and headers["x-upstream"] == "plain"
    echoed = json.loads(body)
    assert echoed["path"] == "/echo/abc?colour=red"  # strip_path, joined to the service's path
    assert echoed["headers"]["x-forwarded-prefix"] == "/items"
    assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echoed["headers"]["via"].startswith("1.1 gatewayd/")
    assert headers["x-kong-request-id"] == echoed["headers"]["x-kong-request-id"]


def test_a_regex_route_wins_over_a_prefix_route_as_kong_decides(daemon):
    # Kong 3: a regex path beats a plain prefix of the same request (transform.lua priorities).
    before = len(settled_records(daemon.file_log))
    assert json.loads(get(daemon, "/items/42")[2])["path"] == "/echo"
    assert json.loads(get(daemon, "/items/42x")[2])["path"] == "/echo/42x"
    wait_for(lambda: len(read_records(daemon.file_log)) >= before + 2, what="two records")
    by_id, prefix = read_records(daemon.file_log)[before:before + 2]
    assert (by_id["route"]["name"], prefix["route"]["name"]) == ("by-id", "prefix")


def test_a_route_with_a_headers_constraint_does_not_serve_a_request_without_it(daemon):
    status, _, body = get(daemon, "/guarded")
    assert status == 404 and json.loads(body)["message"] == "no Route matched with those values"
    status, _, body = get(daemon, "/guarded", {"X-Team": "blue"})
    assert status == 200 and json.loads(body)["path"] == "/echo"


def test_an_https_only_route_answers_plain_http_with_426(daemon):
    status, headers, body = get(daemon, "/secure")
    assert status == 426
    assert json.loads(body)["message"] == "Please use HTTPS protocol"
    assert headers["upgrade"] == "TLS/1.2, HTTP/1.1"


def test_a_disabled_services_routes_are_not_routed(daemon):
    assert get(daemon, "/retired")[0] == 404


def test_the_pip_installed_plugin_runs_in_its_phases(daemon):
    before = len(settled_records(daemon.file_log))
    status, headers, body = get(daemon, "/hello/there")
    assert status == 200
    assert headers["x-hello"] == "from a pip-installed plugin"  # header filter
    assert json.loads(body)["path"] == "/echo/hello/there"  # strip_path: false
    wait_for(lambda: len(read_records(daemon.file_log)) > before, what="the record")
    record = read_records(daemon.file_log)[before]
    assert record["hello"] == {"bytes": len(body)}  # body filter and log phase, before file-log
    assert get(daemon, "/items/x")[1].get("x-hello") is None  # scoped to its route


def test_kongs_rate_limiting_runs_around_plain_proxying(daemon):
    hour = time.gmtime().tm_hour
    first, second, third = (get(daemon, "/limited/x") for _ in range(3))
    assert [first[0], second[0]] == [200, 200]
    assert (first[1]["x-ratelimit-limit-hour"], first[1]["x-ratelimit-remaining-hour"]) == ("2", "1")
    assert second[1]["ratelimit-remaining"] == "0"
    if time.gmtime().tm_hour == hour:  # a new hour would count afresh, as in Kong
        assert third[0] == 429
        assert json.loads(third[2])["message"] == "API rate limit exceeded"  # Kong's body on a plain route
        assert 0 < int(third[1]["retry-after"]) <= 3600


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_large_streamed_answer_to_a_slow_client_keeps_memory_flat(daemon):
    size = 200 * 1024 * 1024
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET /files/big?mb=200 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
    before = rss_kib(daemon.process.pid)
    received = len(sock.recv(65536))
    time.sleep(2.0)  # the client reads nothing: the upstream must be paused, not buffered
    stalled = rss_kib(daemon.process.pid)
    deadline = time.monotonic() + 60
    while received < size and time.monotonic() < deadline:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    sock.close()
    assert stalled - before < 20 * 1024, f"RSS grew {stalled - before} KiB while the client did not read"
    assert received > size  # headers and chunk framing on top of the 200 MiB


def test_a_large_request_body_is_streamed_to_the_service(daemon):
    body = b"y" * (20 * 1024 * 1024)
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    connection.request("POST", "/files/upload", body=body)
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["received"] == len(body)
    connection.close()
