"""The plugin registry and Kong's plugin model: priorities, scoping, phases, third-party plugins."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.plugin import getPlugins

from gatewayd.config import load_config
from gatewayd.config.schema import PluginSchema, record
from gatewayd.pipeline import compile_snapshot
from gatewayd.plugins import CompileContext, IGatewaydPlugin, Kept, KongPlugin, Registry, installed
from gatewayd.router import RequestFacts
from tests.test_consumers import KEY
from gatewayd.errors import APIError
from tests.test_service import MESSAGES, GatewayInMemory, ask, events

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gatewayd-hello"
sys.path.insert(0, str(EXAMPLE))
import gatewayd_hello  # noqa: E402  (the example plugin's own package, as pip would install it)

sys.path.remove(str(EXAMPLE))


def test_the_built_in_plugins_carry_kongs_names_and_priorities():
    assert {name: plugin.priority for name, plugin in installed().plugins.items()}.items() >= {
        "key-auth": 1250,
        "ai-rate-limiting-advanced": 905,
        "ai-proxy-advanced": 770,
        "prometheus": 13,
        "file-log": 9,
    }.items()
    order = [p.name for p in installed().ordered(["file-log", "key-auth", "prometheus", "ai-proxy-advanced"])]
    assert order == ["key-auth", "ai-proxy-advanced", "prometheus", "file-log"]


def test_a_third_party_plugin_is_found_by_twisteds_getplugins(tmp_path, monkeypatch):
    # The example's dropin module in a plugin package of its own (a copy, so the
    # dropin.cache that getPlugins writes stays out of the repository).
    package = tmp_path / "gatewayd_test_dropins"
    shutil.copytree(EXAMPLE / "twisted" / "plugins", package)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gatewayd_test_dropins

    found = list(getPlugins(IGatewaydPlugin, gatewayd_test_dropins))
    assert [(p.name, p.priority) for p in found] == [("hello", 800)]
    assert found[0] is gatewayd_hello.plugin


PROBE = KongPlugin(
    "probe", priority=1, version="0", compile=lambda plugin, context: plugin.tags[0],
    schema=PluginSchema("probe", record({}), ("http", "https"), ("http", "https")),
)

#: Kong's precedence, most specific first (kong/runloop/plugins_iterator.lua, lookup_cfg).
SCOPES = [
    ("route-service-consumer", "route: r\n    service: s\n    consumer: alice"),
    ("route-consumer", "route: r\n    consumer: alice"),
    ("service-consumer", "service: s\n    consumer: alice"),
    ("route-service", "route: r\n    service: s"),
    ("consumer", "consumer: alice"),
    ("route", "route: r"),
    ("service", "service: s"),
    ("global", ""),
]


def scoped_config(tmp_path: Path, scopes: list[tuple[str, str]]) -> object:
    plugins = "".join(
        f"  - name: probe\n    tags: [{tag}]\n" + (f"    {where}\n" if where else "") for tag, where in scopes
    )
    (tmp_path / "kong.yaml").write_text(
        '_format_version: "3.0"\nservices:\n  - name: s\n    url: http://upstream.test\n'
        "routes:\n  - name: r\n    paths: [/r]\n    service: s\n"
        "consumers:\n  - username: alice\n  - username: bob\n"
        f"plugins:\n{plugins}"
    )
    return load_config(str(tmp_path / "kong.yaml"), {}, {**installed().schemas, "probe": PROBE.schema})


@pytest.mark.parametrize("drop", range(len(SCOPES)))
def test_the_most_specific_instance_wins_as_in_kong(tmp_path, drop):
    # With every scope configured but the ``drop`` most specific ones, the next one in Kong's
    # order runs for alice; bob, with no instance of his own, gets the best one without a consumer.
    config = scoped_config(tmp_path, SCOPES[drop:])
    registry = Registry({"probe": PROBE})
    snapshot = compile_snapshot(config, registry, CompileContext(config, Clock(), Kept(), {}), lambda s: None)
    match = snapshot.router.match(RequestFacts("GET", "/r", "", 8000, "http"))
    (candidates,) = match.value.chain
    alice, bob = config.consumers["alice"].id, config.consumers["bob"].id
    assert candidates.pick(alice) == SCOPES[drop][0]
    expected_for_bob = next(tag for tag, where in SCOPES[drop:] if "consumer" not in where)
    assert candidates.pick(bob) == candidates.pick(None) == expected_for_bob


HELLO = f"""_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: {KEY}
    plugins:
      - name: hello
        config: {{greeting: "hi alice"}}
  - username: bob
    keyauth_credentials:
      - key: sk-bob-9876543210
plugins:
  - name: key-auth
    config: {{key_names: [x-api-key]}}
  - name: hello
    route: example-route
    config: {{greeting: "hi route", deny_header: x-deny}}
"""


class ThirdPartyPluginTests(GatewayInMemory):
    """The example plugin in each phase, around the real built-in plugins."""

    registry = Registry({**installed().plugins, "hello": gatewayd_hello.plugin})
    extra_files = {"60-hello.yaml": HELLO}

    def test_each_phase_runs_and_the_consumers_own_instance_wins(self):
        status, headers, text = self.post(ask("hi"), headers={"x-api-key": KEY})
        self.assertEqual(status, 200)
        self.assertEqual(headers["x-hello"], ["hi alice"])  # consumer beats route (lookup_cfg)
        status, headers, _ = self.post(ask("hi"), headers={"x-api-key": "sk-bob-9876543210"})
        self.assertEqual(headers["x-hello"], ["hi route"])
        first, second = self.records()
        self.assertEqual(first["hello"], {"bytes": len(text.encode())})  # log phase, before file-log
        self.assertEqual(first["consumer"]["username"], "alice")

    def test_the_body_filter_sees_every_chunk_of_a_stream(self):
        status, headers, text = self.post(ask("hello [[chunks 5]]", stream=True), headers={"x-api-key": KEY})
        self.assertEqual(status, 200)
        self.assertEqual(events(text)[-1][0], "message_stop")
        (record,) = self.records()
        self.assertEqual(record["hello"], {"bytes": len(text.encode())})

    def test_an_access_refusal_stops_later_access_phases_but_not_the_log(self):
        status, headers, text = self.post(ask("hi"), headers={"x-api-key": "sk-bob-9876543210", "x-deny": "1"})
        self.assertEqual(status, 403)
        self.assertEqual(json.loads(text)["error"]["type"], "permission_error")
        self.assertEqual(headers["x-hello"], ["hi route"])  # response filters run on a refusal too
        (record,) = self.records()
        self.assertEqual(record["response"]["status"], 403)
        self.assertNotIn("ai", record)  # ai-proxy-advanced never answered

    def test_key_auth_refuses_before_the_route_plugin_runs(self):
        status, headers, text = self.post(ask("hi"))
        self.assertEqual(status, 401)
        (record,) = self.records()
        # Collected (Kong's delayed response): no access phase, but its filters and log run.
        self.assertEqual(record["hello"], {"bytes": len(text.encode())})
        self.assertGreater(record["response"]["size"], len(text.encode()))  # status line and headers too

    def test_a_plugin_scoped_to_a_consumer_that_does_not_exist_is_refused(self):
        from gatewayd.config import ConfigError

        bad = HELLO.replace("  - name: hello\n    route: example-route", "  - name: hello\n    consumer: carol")
        (self.workdir / "60-hello.yaml").write_text(bad)
        with self.assertRaises(ConfigError) as raised:
            load_config(str(self.workdir), self.env, self.registry.schemas)
        self.assertIn("plugins[1] (hello): consumer: consumer 'carol' is not defined", str(raised.exception))


def test_a_plugin_whose_protocols_are_all_streams_does_not_run_and_the_next_one_does(tmp_path):
    # kong/runloop/plugins_iterator.lua should_process_plugin: protocols pick the subsystem, so
    # a route's tcp-only instance is left out and the global one is found instead; an
    # https-only one still runs on plain http, as in Kong.
    scoped_config(tmp_path, [SCOPES[5], SCOPES[7]])
    text = (tmp_path / "kong.yaml").read_text()
    for protocols, expected in (("[tcp]", "global"), ("[https]", "route")):
        (tmp_path / "kong.yaml").write_text(text.replace("    route: r\n", f"    route: r\n    protocols: {protocols}\n", 1))
        config = load_config(str(tmp_path / "kong.yaml"), {}, {**installed().schemas, "probe": PROBE_STREAMS.schema})
        snapshot = compile_snapshot(config, Registry({"probe": PROBE_STREAMS}), CompileContext(config, Clock(), Kept(), {}), lambda s: None)
        (candidates,) = snapshot.router.match(RequestFacts("GET", "/r", "", 8000, "http")).value.chain
        assert candidates.pick(None) == expected


PROBE_STREAMS = attrs.evolve(PROBE, schema=PluginSchema("probe", record({}), ("http", "https", "tcp"), ("http", "https")))


@attrs.define
class Waiter:
    """An access phase that waits on the test (as one waiting for Redis would) and one that breaks."""

    pending: list = attrs.field(factory=list)

    def access(self, request, exchange):
        if request.getHeader("x-break") is not None:
            raise RuntimeError("a bug in an access phase")
        waiting = Deferred()
        self.pending.append(waiting)
        return waiting


WAITER = Waiter()
WAITER_PLUGIN = KongPlugin(
    "waiter", priority=900, version="0.1.0",
    schema=PluginSchema(name="waiter", config=record({}), protocols_allowed=("http", "https"),
                        protocols_default=("http", "https")),
    compile=lambda plugin, context: WAITER,
)


class WaitingAccessTests(GatewayInMemory):
    """An access phase that returns an awaitable pauses the request; the later phases run after it."""

    registry = Registry({**installed().plugins, "hello": gatewayd_hello.plugin, "waiter": WAITER_PLUGIN})
    extra_files = {"60-hello.yaml": HELLO.replace("plugins:\n  - name: key-auth\n    config: {key_names: [x-api-key]}\n",
                                                 "plugins:\n  - name: waiter\n")}

    def setUp(self):
        WAITER.pending.clear()
        super().setUp()

    def test_the_later_access_phases_run_when_the_wait_is_over(self):
        answer = self.client.post(MESSAGES, data=json.dumps(ask("hi")).encode(), headers={"x-deny": "1"})
        self.client.flush()
        self.assertNoResult(answer)  # nothing answered while the access phase waits
        (waiting,) = WAITER.pending
        waiting.callback(None)
        self.client.flush()
        response = self.successResultOf(answer)
        self.assertEqual(response.code, 403)  # hello's access (priority 800) ran after the wait

    def test_a_refusal_after_the_wait_stops_the_later_access_phases(self):
        answer = self.client.post(MESSAGES, data=json.dumps(ask("hi")).encode(), headers={"x-deny": "1"})
        self.client.flush()
        WAITER.pending[0].errback(APIError(429, "rate_limit_error", "wait"))
        self.client.flush()
        response = self.successResultOf(answer)
        self.assertEqual(response.code, 429)  # not hello's 403: its access did not run
        (record,) = self.records()
        self.assertEqual(record["response"]["status"], 429)
        self.assertIn("hello", record)  # collected all the same: its log phase ran

    def test_an_access_phase_that_breaks_is_a_500_and_logged(self):
        status, _, text = self.post(ask("hi"), headers={"x-break": "1"})
        self.assertEqual(status, 500)
        self.assertIn("internal gateway error", text)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class Crashing:
    """An access phase with a bug in it, synchronous or after a wait."""

    def __init__(self, waits: bool) -> None:
        self.waits = waits

    def access(self, request, exchange):
        if self.waits:
            return self._later()
        raise RuntimeError("a bug")

    async def _later(self):
        raise RuntimeError("a bug, later")


def crashing(waits: bool) -> KongPlugin:
    return KongPlugin("crashing", priority=2000, version="0", compile=lambda plugin, context: Crashing(waits),
                      schema=PluginSchema("crashing", record({}), ("http", "https"), ("http", "https")))


class CrashingAccessTests(GatewayInMemory):
    extra_files = {"60-crash.yaml": '_format_version: "3.0"\nplugins:\n  - name: crashing\n'}
    waits = False

    def setUp(self) -> None:
        self.registry = Registry({**installed().plugins, "crashing": crashing(self.waits)})
        super().setUp()

    def test_a_crashing_access_phase_is_a_500_and_the_request_is_still_logged(self):
        status, _, text = self.post(ask("hi"))
        self.assertEqual((status, json.loads(text)["error"]["type"]), (500, "api_error"))
        self.assertNotIn("a bug", text)
        (record,) = self.records()  # file-log, collected after the crash, still wrote it
        self.assertEqual(record["response"]["status"], 500)
        self.assertEqual(self.fake.requests, [])
        self.flushLoggedErrors(RuntimeError)


class CrashingAfterAWaitTests(CrashingAccessTests):
    waits = True
