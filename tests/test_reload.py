"""Reloading: what a new configuration keeps, what it retires, and what a broken one leaves alone."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from gatewayd.config import ConfigError
from gatewayd.plugins import read_config
from gatewayd.daemon import reloadack
from gatewayd.daemon.reload import Reloader
from gatewayd.daemon.gateway import ConfigurationError, Gateway

SAMPLE = Path(__file__).resolve().parents[1] / "etc" / "gatewayd"
ENV = {
    "DECK_GEMINI_API_KEY": '{"key": "one"}',
    "DECK_GEMINI_API_ENDPOINT": "http://127.0.0.1:1",
    "DECK_GCP_PROJECT_ID": "p",
    "DECK_GEMINI_LOCATION_ID": "us-central1",
}


def config(tmp_path, *, key='{"key": "one"}', log="claude.json", model="gemini-2.0-flash", extra=""):
    directory = tmp_path / "config"
    directory.mkdir(exist_ok=True)
    for source in SAMPLE.glob("*.yaml"):
        text = source.read_text().replace("/tmp/claude.json", str(tmp_path / log))
        (directory / source.name).write_text(text.replace("name: gemini-2.0-flash", f"name: {model}"))
    if extra:
        (directory / "90-extra.yaml").write_text('_format_version: "3.0"\n' + extra)
    return read_config(str(directory), {**ENV, "DECK_GEMINI_API_KEY": key})


class TokenSources:
    """Counts the token sources a gateway asks for."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, target):
        self.made.append(target.auth.secret)
        return object()


def gateway(clock=None):
    return Gateway(clock or Clock(), client=None, make_token_source=TokenSources())


def test_unchanged_credentials_and_file_logs_carry_over(tmp_path):
    g = gateway()
    g.load(config(tmp_path))
    (token_source,), (file_log,) = g.kept.values("gcp-token"), g.kept.values("file-log")
    g.load(config(tmp_path, model="gemini-2.5-flash"))
    assert list(g.kept.values("gcp-token")) == [token_source]
    assert list(g.kept.values("file-log")) == [file_log]
    assert g.make_token_source.made == ['{"key": "one"}']


def test_a_new_key_gets_a_new_token_source_and_the_old_one_goes(tmp_path):
    g = gateway()
    g.load(config(tmp_path))
    (old,) = g.kept.values("gcp-token")
    g.load(config(tmp_path, key='{"key": "two"}'))
    (new,) = g.kept.values("gcp-token")
    assert new is not old
    assert g.make_token_source.made == ['{"key": "one"}', '{"key": "two"}']


def test_a_file_log_no_longer_configured_is_flushed_and_closed(tmp_path):
    clock = Clock()
    g = gateway(clock)
    g.load(config(tmp_path))
    (old,) = g.kept.values("file-log")
    old.write({"n": 1})
    g.load(config(tmp_path, log="other.json"))
    assert (tmp_path / "claude.json").read_text() == '{"n":1}\n'
    assert old.file._file is None
    # A request of the old snapshot still finishing writes its record, and leaves no descriptor open.
    old.write({"n": 2})
    clock.advance(0)
    assert (tmp_path / "claude.json").read_text().splitlines()[-1] == '{"n":2}'
    assert old.file._file is None
    assert [f.file.path for f in g.kept.values("file-log")] == [str(tmp_path / "other.json")]


def test_a_config_that_does_not_compile_changes_nothing(tmp_path):
    g = gateway()
    runtime = g.load(config(tmp_path))
    kept = dict(g.kept.live)
    broken = config(tmp_path, key='{"key": "two"}', log="other.json", extra=(
        "plugins:\n  - name: ai-proxy-advanced\n    route: example-route\n    config:\n"
        "      llm_format: openai\n      targets:\n      - route_type: llm/v1/chat\n"
        "        model: {provider: gemini, name: gemini-2.0-flash}\n"
    ))
    with pytest.raises(ConfigurationError, match="90-extra.yaml"):
        g.load(broken)
    assert g.runtime is runtime
    assert g.kept.live == kept


def test_a_key_that_cannot_be_parsed_names_the_plugin_and_target(tmp_path):
    from gatewayd.daemon.gateway import google_token_sources

    g = Gateway(Clock(), client=None, make_token_source=google_token_sources(Clock()))
    with pytest.raises(ConfigurationError) as raised:
        g.load(config(tmp_path, key='{"type": "secret-looking"}'))
    assert "20-ai-proxy-advanced.yaml" in str(raised.value)
    assert "targets[0].auth" in str(raised.value) and "secret-looking" not in str(raised.value)


class Notifications(list):
    def __call__(self, state):
        self.append(state.splitlines()[0])


@pytest.fixture
def reloader(tmp_path):
    """A running Reloader reading from a dict of prepared answers; SIGHUP restored afterwards."""
    previous = signal.getsignal(signal.SIGHUP)
    g = gateway()
    g.load(config(tmp_path))
    answers = {}
    reloader = Reloader(g, "/etc/gatewayd", {}, Clock(), lambda path, env: answers["next"], Notifications())
    reloader.startService()
    yield reloader, answers
    signal.signal(signal.SIGHUP, previous)


def test_reload_swaps_the_runtime_between_reloading_and_ready(tmp_path, reloader):
    r, answers = reloader
    answers["next"] = succeed(config(tmp_path, model="gemini-2.5-flash"))
    assert r.gateway.runtime.config.plugins[0].config["targets"][0]["model"]["name"] == "gemini-2.0-flash"
    assert r.reload().result is True
    assert r.gateway.runtime.config.plugins[0].config["targets"][0]["model"]["name"] == "gemini-2.5-flash"
    assert r.notify == ["RELOADING=1", "READY=1"]


@pytest.fixture
def events():
    logged: list = []
    globalLogPublisher.addObserver(logged.append)
    yield logged
    globalLogPublisher.removeObserver(logged.append)


def test_a_broken_config_is_logged_and_the_old_one_serves(tmp_path, reloader, events):
    r, answers = reloader
    runtime = r.gateway.runtime
    answers["next"] = fail(ConfigError("/etc/gatewayd/85-x.yaml", "unknown field", entity="plugins (file-log)", field="config.colour"))
    assert r.reload().result is False
    assert r.gateway.runtime is runtime
    assert r.notify == ["RELOADING=1", "READY=1"]
    (error,) = [e for e in events if "problem" in e]
    assert error["problem"] == "/etc/gatewayd/85-x.yaml: plugins (file-log): config.colour: unknown field"
    assert error["file"] == "/etc/gatewayd/85-x.yaml" and error["entity"] == "plugins (file-log)"


def test_sighup_reopens_the_file_logs(tmp_path, reloader):
    r, answers = reloader
    answers["next"] = succeed(config(tmp_path))
    (file_log,) = r.gateway.kept.values("file-log")
    file_log.write({"n": 1})
    file_log.file.flush()
    (tmp_path / "claude.json").rename(tmp_path / "claude.json.1")
    r.reload()
    file_log.write({"n": 2})
    file_log.file.flush()
    assert json.loads((tmp_path / "claude.json").read_text()) == {"n": 2}


def test_a_signal_only_schedules_the_reload_on_the_reactor(tmp_path, reloader):
    r, answers = reloader
    calls = []
    r.reactor.callFromThread = lambda f, *a: calls.append(f)
    signal.raise_signal(signal.SIGHUP)
    assert calls == [r.reload]
    assert r.notify == []


def test_a_reload_asked_for_during_one_runs_once_after_it(tmp_path, reloader):
    from twisted.internet.defer import Deferred

    r, answers = reloader
    first = answers["next"] = Deferred()
    done = r.reload()
    answers["next"] = succeed(config(tmp_path, model="gemini-2.5-flash"))
    assert r.reload() is done and r.reload() is done
    first.callback(config(tmp_path, model="gemini-2.0-flash-lite"))
    assert done.result is True
    assert r.gateway.runtime.config.plugins[0].config["targets"][0]["model"]["name"] == "gemini-2.5-flash"
    assert r.notify == ["RELOADING=1", "READY=1"] * 2


def test_a_reload_passes_sighup_on_to_worker_processes(tmp_path, reloader):
    r, answers = reloader
    forwarded = []
    r.forward = forwarded.append
    answers["next"] = succeed(config(tmp_path))
    r.reload()
    assert forwarded == [signal.SIGHUP]


def test_unchanged_targets_keep_their_balancer_and_what_it_learnt(tmp_path):
    # A reload must not bring a target that is cooling down straight back.
    g = gateway()
    g.load(config(tmp_path))
    (balancer,) = g.kept.values("ai-proxy-advanced.balancer")
    g.load(config(tmp_path, log="other.json"))
    assert list(g.kept.values("ai-proxy-advanced.balancer")) == [balancer]
    g.load(config(tmp_path, model="gemini-2.5-flash"))
    (changed,) = g.kept.values("ai-proxy-advanced.balancer")
    assert changed is not balancer


def test_a_reload_that_finishes_reading_after_stop_loads_nothing(tmp_path, reloader):
    from twisted.internet.defer import Deferred

    r, answers = reloader
    reading = answers["next"] = Deferred()
    before = r.gateway.runtime
    pending = r.reload()
    r.stopService()
    reading.callback(config(tmp_path, model="gemini-2.5-flash"))
    assert r.gateway.runtime is before
    assert pending.result is False


def test_a_route_points_at_its_service_by_the_services_own_id(tmp_path):
    service_id = "0b6a2c1e-2f0e-4a55-9a8e-1c7b3d9e5f42"
    g = gateway()
    g.load(config(tmp_path, extra=f"services:\n  - name: example-service\n    id: {service_id}\n    url: http://x/\n"))
    from gatewayd.router import RequestFacts

    match = g.runtime.router.match(RequestFacts("POST", "/anything/v1/messages", "", 8000, "http"))
    assert match.value.service_entity["id"] == service_id
    assert match.value.route_entity["service"] == {"id": service_id}


def test_the_configuration_digest_follows_the_files_text(tmp_path):
    first = config(tmp_path).digest
    assert first == config(tmp_path).digest
    assert config(tmp_path, model="gemini-2.5-flash").digest != first


def test_each_reload_is_acknowledged_with_its_start_and_its_problem(tmp_path, reloader):
    r, answers = reloader
    acknowledged = []
    r.acknowledge = lambda started, problem: acknowledged.append((started, problem))
    answers["next"] = succeed(config(tmp_path, model="gemini-2.5-flash"))
    before = reloadack.monotonic_usec()
    r.reload()
    answers["next"] = fail(ConfigError("/etc/gatewayd/85-x.yaml", "unknown field", entity="plugins (file-log)", field="config.colour"))
    r.reload()
    (first, ok), (second, problem) = acknowledged
    assert before <= first <= second and ok is None
    assert problem == "/etc/gatewayd/85-x.yaml: plugins (file-log): config.colour: unknown field"
