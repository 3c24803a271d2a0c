"""No silent ignore: every field gatewayd accepts has Kong's effect or is refused at load.

The walker goes through every schema of every served plugin and every entity field the
loader accepts.  A field passes when it is refused (its refusal is then tried, and its
message checked), or when the code that serves it reads it (a string or attribute of that
name in the serving modules, schema definitions left out), or when it is listed below
with the reason Kong's own effect needs nothing here.  A new field that is none of these
turns this test red.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.task import Clock

from gatewayd.config import Plugin, loader
from gatewayd.config.errors import ConfigError
from gatewayd.config.schema import NO_DEFAULT, Field, SchemaError
from gatewayd.plugins import CompileContext, ConfigurationError, Kept, installed, read_config
from gatewayd.plugins import ai_rate_limiting_advanced

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "gatewayd" / "plugins"

#: The modules whose code serves each plugin's config.
SERVING = {
    "key-auth": ["key_auth.py"],
    "ai-rate-limiting-advanced": ["ai_rate_limiting_advanced/__init__.py",
                                  "ai_rate_limiting_advanced/handler.py", "redis.py"],
    "file-log": ["file_log.py"],
    "rate-limiting": ["rate_limiting.py", "ai_rate_limiting_advanced/handler.py", "redis.py"],
    "prometheus": ["prometheus.py"],
    "ai-proxy-advanced": ["ai_proxy_advanced/__init__.py", "ai_proxy_advanced/handler.py",
                          "ai_proxy_advanced/resources.py", "ai_proxy_advanced/balancer.py",
                          "ai_proxy_advanced/stream.py", "ai_proxy_advanced/checks.py",
                          "ai_proxy_advanced/claude.py", "redis.py", "../providers/gemini.py",
                          "../providers/auth.py", "../providers/usage.py"],
}

#: Fields whose Kong effect needs nothing from gatewayd, and why (the README says the same).
KONG_EFFECT_WITHOUT_CODE = {
    ("ai-rate-limiting-advanced", "config.dictionary_name"):
        "names the nginx shared dict counters live in; gatewayd's live in its own memory",
    ("ai-rate-limiting-advanced", "config.disable_penalty"):
        "Kong applies it to the requestPrompt provider only, which is refused",
    ("prometheus", "config.upstream_health_metrics"):
        "exports Kong upstreams' targets; upstreams are refused at load, so there are none",
    ("prometheus", "config.wasm_metrics"):
        "exports proxy-wasm filters; filter_chains are refused at load, so there are none",
    ("ai-proxy-advanced", "config.targets[].description"):
        "used only by semantic balancing (Kong's schema says so), which is refused",
    ("ai-proxy-advanced", "config.targets[].metadata"):
        "'For internal use only' in Kong's schema: Kong's own bookkeeping, no effect to serve",
}

#: Entity fields that identify or nest entities: read by the loader itself, logged as Kong logs them.
ENTITY_STRUCTURE = {"name", "id", "tags", "created_at", "updated_at", "routes", "plugins", "service",
                    "route", "consumer", "config", "url", "keyauth_credentials", "username",
                    "instance_name", "key"}
#: Entity fields whose Kong effect needs nothing from gatewayd, and why.
ENTITY_EFFECT_WITHOUT_CODE = {
    "path_handling": "Kong's traditional_compatible router ignores it (the route schema warns so)",
    "response_buffering": "gatewayd streams answers as they come, which the client cannot tell "
                          "from nginx's buffering",
}


def leaves(spec: Field, path: str, refused: bool = False) -> Iterator[tuple[str, Field, bool]]:
    """Every leaf field: its path, its spec, and whether it or a list around it is refused."""
    refused = refused or spec.refused is not None
    if spec.type == "record":
        for name, sub in spec.fields:
            yield from leaves(sub, f"{path}.{name}", refused)
    elif spec.type in ("array", "set") and spec.elements is not None and spec.elements.type == "record":
        yield from leaves(spec.elements, f"{path}[]", refused)
    else:
        yield path, spec, refused


def names_used(files: list[Path]) -> set[str]:
    """Strings and attribute names the code uses, leaving out dict-literal keys (schemas)."""
    used: set[str] = set()
    for file in files:
        tree = ast.parse(file.read_text())
        keys = {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys:
                used.add(node.value)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
    return used


def unserved(plugin: str) -> list[str]:
    schema = installed().plugins[plugin].schema
    used = names_used([(PLUGINS / module).resolve() for module in SERVING[plugin]])
    return [path for path, _, refused in leaves(schema.config, "config")
            if not refused and path.rsplit(".", 1)[-1] not in used
            and (plugin, path) not in KONG_EFFECT_WITHOUT_CODE]


def test_every_served_plugin_is_walked():
    assert set(SERVING) == set(installed().plugins) - {"hello"}


@pytest.mark.parametrize("plugin", sorted(SERVING))
def test_every_plugin_field_is_served_or_refused(plugin):
    assert sorted(unserved(plugin)) == []


ENTITY_FIELDS = {"services": loader._SERVICE_FIELDS, "routes": loader._ROUTE_FIELDS,
                 "consumers": loader._CONSUMER_FIELDS, "keyauth_credentials": loader._CREDENTIAL_FIELDS,
                 "plugins": loader._PLUGIN_FIELDS}


@pytest.mark.parametrize("entity", sorted(ENTITY_FIELDS))
def test_every_entity_field_is_served_or_refused(entity):
    """Served: the entity's attribute of that name is read outside the loader."""
    files = [f for f in (ROOT / "gatewayd").rglob("*.py") if f.parent.name != "config"]
    used = names_used(files)
    left = [name for name in ENTITY_FIELDS[entity]
            if name not in used and name not in ENTITY_STRUCTURE and name not in ENTITY_EFFECT_WITHOUT_CODE
            and name not in LOADER_REFUSED.get(entity, ())]
    assert left == []


#: Entity fields the loader refuses (any value for ttl and tls_verify_depth; request_buffering:
#: false, since true, reading the whole body first, is what gatewayd does); messages tested below.
LOADER_REFUSED = {"services": ("tls_verify_depth",), "keyauth_credentials": ("ttl",),
                  "routes": ("request_buffering",)}


def sample(spec: Field) -> Any:
    """A value of the spec's type that is not its default."""
    if spec.one_of:
        return next(v for v in spec.one_of if v != spec.default)
    return {"string": "x", "integer": 7, "number": 7.5, "boolean": spec.default is not True,
            "array": [sample(spec.elements)] if spec.elements and spec.elements.type != "record" else [{}],
            "set": ["x"], "map": {"k": "v"}, "record": {"k": "v"}, "any": {"k": "v"}}[spec.type]


BASE = {
    "ai-rate-limiting-advanced": {"llm_providers": [{"name": "gemini", "limit": [1], "window_size": [60]}]},
    "file-log": {"path": "/tmp/x.log"},
    "key-auth": {}, "prometheus": {}, "rate-limiting": {"minute": 1},
    "ai-proxy-advanced": {"targets": [{"route_type": "llm/v1/chat", "model": {"provider": "gemini"}}]},
}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def refusal_points(spec: Field, path: str) -> Iterator[tuple[str, Field]]:
    """The refused fields, records and lists included, not those inside one already refused."""
    if spec.refused is not None:
        yield path, spec
    elif spec.type == "record":
        for name, sub in spec.fields:
            yield from refusal_points(sub, f"{path}.{name}")
    elif spec.type in ("array", "set") and spec.elements is not None and spec.elements.type == "record":
        yield from refusal_points(spec.elements, f"{path}[]")


def refused_fields() -> Iterator[tuple[str, str]]:
    for plugin in sorted(SERVING):
        for path, _ in refusal_points(installed().plugins[plugin].schema.config, "config"):
            yield plugin, path


@pytest.mark.parametrize("plugin, path", list(refused_fields()))
def test_each_refused_field_is_refused_with_its_reason(plugin, path):
    schema = installed().plugins[plugin].schema
    spec = dict(refusal_points(schema.config, "config"))[path]
    parts = path.split(".")[1:]
    value: Any = sample(spec)
    for part in reversed(parts):
        value = {part.removesuffix("[]"): [value] if part.endswith("[]") else value}
    base = {} if path.startswith("config.policies") else BASE[plugin]  # the two are exclusive
    with pytest.raises(SchemaError) as raised:
        schema.validate_config(merged(base, value))
    assert f"not served by gatewayd ({spec.refused})" in str(raised.value)
    assert path.startswith(raised.value.path.replace("[0]", "[]"))
    # Its default (what a decK dump writes) still loads.
    if spec.default is not NO_DEFAULT:
        default = spec.default
        for part in reversed(parts):
            default = {part.removesuffix("[]"): [default] if part.endswith("[]") else default}
        if "[]" not in path:
            schema.validate_config(merged(BASE[plugin], default))


def load(tmp_path: Path, text: str):
    (tmp_path / "kong.yaml").write_text('_format_version: "3.0"\n' + text)
    return read_config(str(tmp_path / "kong.yaml"), {})


@pytest.mark.parametrize("text, where", [
    ("plugins: [{name: key-auth, config: {identity_realms: [{scope: cp}]}}]",
     "plugins[0] (key-auth): config.identity_realms: not served by gatewayd (Konnect identity realms)"),
    ("plugins: [{name: key-auth, config: {principals: {enabled: true}}}]",
     "plugins[0] (key-auth): config.principals.enabled: not served by gatewayd (Kong Identity principals)"),
    ("plugins: [{name: file-log, config: {path: /tmp/x, custom_fields_by_lua: {a: 'return 1'}}}]",
     "plugins[0] (file-log): config.custom_fields_by_lua: not served by gatewayd (Lua is not run"),
    ("plugins: [{name: ai-rate-limiting-advanced, config: {strategy: redis, redis: {ssl: true, "
     "sentinel_master: m}, llm_providers: [{name: gemini, limit: [1], window_size: [1]}]}}]",
     "config.redis.sentinel_master: not served by gatewayd (Redis Sentinel"),
    ("plugins: [{name: ai-rate-limiting-advanced, config: {redis: {cluster_nodes: [{ip: 10.0.0.1}]}, "
     "llm_providers: [{name: gemini, limit: [1], window_size: [1]}]}}]",
     "config.redis.cluster_nodes: not served by gatewayd (Redis Cluster: txredisapi has no Cluster client"),
    ("plugins: [{name: ai-rate-limiting-advanced, config: {strategy: cluster, "
     "llm_providers: [{name: gemini, limit: [1], window_size: [1]}]}}]",
     'config.strategy: "cluster" is not served by gatewayd (it needs Kong\'s database'),
    ("plugins: [{name: ai-rate-limiting-advanced, config: {policies: [{limits: [{limit: 1, window_size: 1}]}]}}]",
     "config.policies: not served by gatewayd (policy-based limits: use llm_providers)"),
    ("plugins: [{name: ai-rate-limiting-advanced, config: {}}]",
     "config: at least one of these fields must be non-empty: 'llm_providers', 'policies'"),
    ("plugins: [{name: ai-rate-limiting-advanced, config: {sync_rate: 0.01, "
     "llm_providers: [{name: gemini, limit: [1], window_size: [1]}]}}]",
     "config.sync_rate: expected -1, 0, or at least 0.02"),
    ("services: [{name: s, url: 'https://x.test', tls_verify_depth: 2}]",
     "services[0] (s): tls_verify_depth: not served by gatewayd"),
    ("consumers: [{username: a, keyauth_credentials: [{key: k, ttl: 60}]}]",
     "consumers[0] (a): keyauth_credentials[0].ttl: not served by gatewayd"),
    ("services: [{name: s, url: 'https://x.test', routes: [{name: r, paths: [/], request_buffering: false}]}]",
     "services[0].routes[0] (r): request_buffering: false is not served by gatewayd"),

])
def test_refusals_name_file_entity_and_field(tmp_path, text, where):
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert str(raised.value).startswith(str(tmp_path / "kong.yaml") + ": ")
    assert where in str(raised.value)


def test_a_3_13_config_and_a_deck_dump_of_defaults_still_load(tmp_path):
    load(tmp_path, """plugins:
  - name: ai-rate-limiting-advanced
    config:
      llm_format: openai
      sync_rate: -1
      dictionary_name: kong_rate_limiting_counters
      llm_providers: [{name: gemini, limit: [1], window_size: [1]}]
      redis: {host: 127.0.0.1, ssl: false, ssl_verify: false, keepalive_pool_size: 256,
              cluster_max_redirections: 5, connection_is_proxied: false, sentinel_nodes: null}
  - name: key-auth
    config: {identity_realms: [], principals: {enabled: false, directory: default, error_on_miss: true}}
""")


# --- ai-rate-limiting-advanced: what its fields do at compile ---------------------------------

def limiter(config: dict[str, Any], providers=("gemini",), llm_format="anthropic"):
    schema = installed().plugins["ai-rate-limiting-advanced"].schema
    plugin = Plugin(name="ai-rate-limiting-advanced", id="rl-1", enabled=True,
                    config=schema.validate_config(merged(BASE["ai-rate-limiting-advanced"], config)),
                    source="kong.yaml")
    ai = Plugin(name="ai-proxy-advanced", id="ai-1", enabled=True, config={
        "llm_format": llm_format,
        "targets": [{"model": {"provider": p, "options": {}}} for p in providers]})
    context = CompileContext(config=None, reactor=Clock(), kept=Kept(), facilities={},
                             siblings={"ai-proxy-advanced": ai})
    return ai_rate_limiting_advanced.compile(plugin, context)


def test_sync_rate_minus_one_counts_in_memory_even_with_redis():
    store = limiter({"strategy": "redis", "sync_rate": -1}).store
    assert isinstance(store, ai_rate_limiting_advanced.LocalStore)


def test_sync_rate_batches_are_refused():
    with pytest.raises(ConfigurationError, match=r"kong.yaml: plugins \(ai-rate-limiting-advanced\): "
                                                 r"config.sync_rate: 10 is not served by gatewayd"):
        limiter({"strategy": "redis", "sync_rate": 10})


def test_a_limit_for_a_provider_no_target_uses_is_refused():
    with pytest.raises(ConfigurationError, match=r"config.llm_providers\[0\].name: no target .* 'openai'"):
        limiter({"llm_providers": [{"name": "openai", "limit": [1], "window_size": [60]}]})


def test_llm_format_must_be_the_proxys():
    assert limiter({"llm_format": "anthropic"}) is not None
    with pytest.raises(ConfigurationError, match="config.llm_format: 'openai' differs"):
        limiter({"llm_format": "openai"})


def test_whole_number_decrements_in_redis_unless_fractions():
    from gatewayd.exchange import Exchange
    from gatewayd.plugins.ai_rate_limiting_advanced.handler import AIRateLimiter

    charged = []

    class Store:
        async def charge(self, found, amount):
            charged.append(amount)

    for whole, expected in ((True, -2.0), (False, -2.5)):
        rl = limiter({})
        rl = AIRateLimiter(**{**{a.name: getattr(rl, a.name) for a in AIRateLimiter.__attrs_attrs__
                                 if a.init}, "store": Store(), "whole_decrements": whole})
        exchange = Exchange(started=0.0, request_size=0)
        exchange.plugin_data[rl.plugin_id] = ([], 10.0)
        exchange.ai_usage = {"total_tokens": 7.5}
        rl.log(None, exchange, {})
        assert charged[-1] == expected
