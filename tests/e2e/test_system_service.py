"""The daemon as systemd runs it: real process, real signals, a notify socket the test binds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess

import anthropic
import pytest

from gatewayd.demo import BIN
from tests.e2e.harness import (
    REPO,
    Daemon,
    FakeVertex,
    config_dir,
    file_log_override,
    model_override,
    read_records,
    wait_for,
)

JSON_LOG = ("--logger", "gatewayd.daemon.jsonlog.observer")


@pytest.fixture(scope="module")
def slow_fake(tmp_path_factory):
    """A second fake whose streams take a while: 0.15 s between chunks."""
    fake = FakeVertex(tmp_path_factory.mktemp("slow-fake"), "--stream-delay", "0.15")
    yield fake
    fake.stop()


@pytest.fixture
def start(tmp_path):
    """Start daemons on the sample config with a file log in ``tmp_path``; stop them afterwards."""
    daemons = []

    def start(fake, *extra, env=None, args=()):
        log_path = tmp_path / "logs" / "claude.json"
        environment = {**fake.seed_environment(), **(env or {})}
        daemon = Daemon(
            config_dir(tmp_path, file_log_override(log_path), *extra),
            environment,
            tmp_path,
            twistd_args=JSON_LOG,
            args=args,
        )
        daemon.file_log = log_path
        daemon.config = tmp_path / "config"
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def events(daemon) -> list[dict]:
    return [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]


def reload(daemon) -> dict:
    """SIGHUP, then the daemon's own log event that says how the reload went."""
    def outcomes():
        return [
            e for e in events(daemon)
            if e.get("log_namespace") == "gatewayd.daemon.reload.Reloader"
            and ("problem" in e or e["log_format"].startswith("Configuration reloaded"))
        ]

    before = len(outcomes())
    daemon.process.send_signal(signal.SIGHUP)
    return wait_for(lambda: len(outcomes()) > before and outcomes()[-1], what="the reload's outcome")


def client(daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=daemon.url + "/anything", api_key="x", max_retries=0)


def ask(daemon, text: str = "hello") -> anthropic.types.Message:
    return client(daemon).messages.create(
        model="claude-of-the-client", max_tokens=256, messages=[{"role": "user", "content": text}]
    )


class SlowStream:
    """A stream of 8 chunks, opened and read up to its first text before the test goes on."""

    def __init__(self, daemon) -> None:
        self.manager = client(daemon).messages.stream(
            model="claude-of-the-client",
            max_tokens=256,
            messages=[{"role": "user", "content": "[[chunks 8]] Tell me about the Alexiad."}],
        )
        self.stream = self.manager.__enter__()
        self.events = iter(self.stream)
        self.seen = [next(e for e in self.events if e.type == "content_block_delta")]

    def finish(self) -> anthropic.types.Message:
        self.seen.extend(self.events)
        message = self.stream.get_final_message()
        self.manager.__exit__(None, None, None)
        return message


def test_a_changed_model_serves_after_sighup_while_a_stream_started_before_completes(slow_fake, start):
    daemon = start(slow_fake)
    stream = SlowStream(daemon)

    name, text = model_override("gemini-2.5-flash")
    (daemon.config / name).write_text(text)
    outcome = reload(daemon)
    assert outcome["log_format"].startswith("Configuration reloaded"), outcome

    assert ask(daemon).model == "gemini-2.5-flash"
    message = stream.finish()
    assert message.model == "gemini-2.0-flash"  # the snapshot it started with
    assert message.stop_reason == "end_turn"
    assert "Alexiad" in message.content[0].text and message.content[0].text.endswith("First Crusade.")
    assert [e.type for e in stream.seen if e.type in ("message_stop", "error")] == ["message_stop"]

    records = wait_for(lambda: len(r := read_records(daemon.file_log)) >= 2 and r, what="two records")
    models = {r["ai"]["proxy"]["meta"]["request_mode"]: r["ai"]["proxy"]["meta"]["response_model"] for r in records}
    assert models == {"stream": "gemini-2.0-flash", "oneshot": "gemini-2.5-flash"}


@pytest.mark.parametrize(
    "broken, named",
    [
        ('plugins:\n  - name: file-log\n    config:\n      path: /tmp/x.json\n      colour: blue\n', "colour"),
        ('plugins:\n  - name: file-log\n    config:\n      path: "${{ env "DECK_NOT_SET" }}"\n', "DECK_NOT_SET"),
        ("plugins: [\n", "85-broken.yaml"),
    ],
    ids=["unknown-field", "unset-variable", "yaml-error"],
)
def test_a_broken_file_on_sighup_keeps_the_old_config_serving(fake, start, broken, named):
    daemon = start(fake)
    (daemon.config / "85-broken.yaml").write_text('_format_version: "3.0"\n' + broken)
    name, text = model_override("gemini-2.5-flash")
    (daemon.config / name).write_text(text)

    outcome = reload(daemon)
    assert "problem" in outcome, outcome
    assert "85-broken.yaml" in outcome["text"] and named in outcome["text"]
    assert outcome["log_level"]["name"] == "error"
    assert "PRIVATE KEY" not in daemon.log()
    assert ask(daemon).model == "gemini-2.0-flash"

    # The same problem, word for word, from the config check an operator runs first.
    check = subprocess.run(
        [str(BIN / "python"), "-m", "gatewayd.check", "--config", str(daemon.config)],
        capture_output=True, text=True, env=fake.seed_environment(), timeout=60,
    )
    assert check.returncode == 1 and outcome["problem"] in check.stderr

    (daemon.config / "85-broken.yaml").unlink()
    assert reload(daemon)["log_format"].startswith("Configuration reloaded")
    assert ask(daemon).model == "gemini-2.5-flash"


def test_after_the_log_file_is_moved_and_sighup_the_next_record_lands_at_the_configured_path(fake, start):
    daemon = start(fake)
    ask(daemon, "first")
    wait_for(lambda: read_records(daemon.file_log), what="the first record")
    rotated = daemon.file_log.with_name("claude.json.1")
    os.rename(daemon.file_log, rotated)  # what logrotate does, without copytruncate

    reload(daemon)
    ask(daemon, "second")
    records = wait_for(lambda: read_records(daemon.file_log), what="a record in the new file")
    assert [r["response"]["status"] for r in records] == [200]
    assert len(read_records(rotated)) == 1


def bind_notify_socket(kind: str, tmp_path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "abstract":
        name = f"gatewayd-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.settimeout(20)
    return sock, address


@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_systemd_hears_ready_reloading_and_stopping(fake, start, tmp_path, kind):
    sock, address = bind_notify_socket(kind, tmp_path)
    with sock:
        daemon = start(fake, env={"NOTIFY_SOCKET": address})
        assert sock.recv(4096) == b"READY=1"
        assert daemon.url and ask(daemon).stop_reason == "end_turn"  # READY means it serves

        daemon.process.send_signal(signal.SIGHUP)
        reloading = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert sock.recv(4096) == b"READY=1"

        daemon.process.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        daemon.process.wait(20)


def test_sigterm_during_a_stream_lets_it_finish_within_the_grace_period(slow_fake, start):
    daemon = start(slow_fake, args=("--shutdown-grace", "20"))
    stream = SlowStream(daemon)
    daemon.process.send_signal(signal.SIGTERM)

    # It stops accepting at once...
    wait_for(lambda: _refused(daemon.port), what="the listener to close")
    # ...and the stream in flight runs to its end.
    message = stream.finish()
    assert message.stop_reason == "end_turn" and message.content[0].text.endswith("First Crusade.")
    daemon.process.wait(20)
    (record,) = read_records(daemon.file_log)
    assert record["response"]["status"] == 200
    assert record["ai"]["proxy"]["usage"]["completion_tokens"] == message.usage.output_tokens


def test_sigterm_cuts_what_outlives_the_grace_period_and_still_logs_it(slow_fake, start):
    daemon = start(slow_fake, args=("--shutdown-grace", "0.2"))
    stream = SlowStream(daemon)
    daemon.process.send_signal(signal.SIGTERM)
    daemon.process.wait(20)
    with pytest.raises(Exception):
        stream.finish()
    (record,) = read_records(daemon.file_log)
    assert record["request"]["uri"].endswith("/v1/messages")
    assert "Stopping: grace period over, cutting 1 requests in flight" in daemon.log()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_unit_file_is_what_systemd_analyze_verify_accepts(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd); .ci/run installs it")
    # The unit runs gatewayd from /opt/gatewayd; verify it against this installation instead.
    unit = (REPO / "systemd" / "gatewayd.service").read_text().replace("/opt/gatewayd/bin/", f"{BIN}/")
    (tmp_path / "gatewayd.service").write_text(unit)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "gatewayd.service")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_config_check_accepts_the_sample_and_exits_1_on_a_broken_one(fake, tmp_path):
    def check(config):
        return subprocess.run(
            [str(BIN / "python"), "-m", "gatewayd.check", "--config", str(config)],
            capture_output=True, text=True, env=fake.seed_environment(), timeout=60, cwd=tmp_path,
        )

    good = check(REPO / "etc" / "gatewayd")
    assert good.returncode == 0 and "1 routes" in good.stdout
    bad = check(config_dir(tmp_path, ("85-broken.yaml", '_format_version: "3.0"\nroutes:\n  - name: r\n    pathz: [/x]\n')))
    assert bad.returncode == 1 and "85-broken.yaml" in bad.stderr and "pathz" in bad.stderr
