"""Loading decK state the way the Kong walk-through applies it, and refusing what Kong refuses."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest

from gatewayd.config import ConfigError, Route
from gatewayd.plugins import read_config

# The walk-through's three `deck gateway apply` snippets, byte for byte.
SERVICES = """\
_format_version: "3.0"
services:
  - name: example-service
    url: http://httpbin.konghq.com/anything
routes:
  - name: example-route
    paths:
    - "/anything"
    service:
      name: example-service
"""

AI_PROXY = """\
_format_version: "3.0"
plugins:
  - name: ai-proxy-advanced
    config:
      llm_format: anthropic
      targets:
      - route_type: llm/v1/chat
        logging:
          log_statistics: true
          log_payloads: false
        auth:
          allow_override: false
          gcp_use_service_account: true
          gcp_service_account_json: "${{ env "DECK_GEMINI_API_KEY" }}"
        model:
          provider: gemini
          name: gemini-2.0-flash
          options:
            gemini:
              api_endpoint: "${{ env "DECK_GEMINI_API_ENDPOINT" }}"
              project_id: "${{ env "DECK_GCP_PROJECT_ID" }}"
              location_id: "${{ env "DECK_GEMINI_LOCATION_ID" }}"
          max_tokens: 8192
"""

FILE_LOG = """\
_format_version: "3.0"
plugins:
  - name: file-log
    config:
      path: "/tmp/claude.json"
"""

PRIVATE_KEY_BODY = (
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\\n"
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\\n")
SERVICE_ACCOUNT_JSON = json.dumps({
    "type": "service_account",
    "project_id": "example-project-id",
    "private_key_id": "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
    "private_key": "-----BEGIN PRIVATE KEY-----\n" + PRIVATE_KEY_BODY.replace("\\n", "\n")
                   + "-----END PRIVATE KEY-----\n",
    "client_email": "gateway@example-project-id.iam.gserviceaccount.com",
    "client_id": "112233445566778899001",
    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    "token_uri": "https://oauth2.googleapis.com/token",
    "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
    "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/gateway%40"
                            "example-project-id.iam.gserviceaccount.com",
    "universe_domain": "googleapis.com",
}, indent=2)
SECRET_FRAGMENT = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"

ENV = {
    "DECK_GEMINI_API_KEY": SERVICE_ACCOUNT_JSON,
    "DECK_GEMINI_API_ENDPOINT": "us-central1-aiplatform.googleapis.com",
    "DECK_GCP_PROJECT_ID": "example-project-id",
    "DECK_GEMINI_LOCATION_ID": "us-central1",
    "PATH": "/usr/bin",
}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def seed_dir(directory: Path) -> Path:
    write(directory, "01-services.yaml", SERVICES)
    write(directory, "02-ai-proxy.yaml", AI_PROXY)
    write(directory, "03-file-log.yaml", FILE_LOG)
    return directory


def load_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        read_config(str(path), ENV if environ is None else environ)
    message = str(caught.value)
    assert SECRET_FRAGMENT not in message and SERVICE_ACCOUNT_JSON not in message
    return caught.value


# --- the walk-through -----------------------------------------------------------------------

def test_seed_snippets_load_from_a_directory_in_name_order(tmp_path: Path) -> None:
    config = read_config(str(seed_dir(tmp_path)), ENV)

    assert config.sources == tuple(str(tmp_path / name) for name in
                                   ("01-services.yaml", "02-ai-proxy.yaml", "03-file-log.yaml"))
    service = config.services["example-service"]
    assert (service.protocol, service.host, service.port, service.path) == (
        "http", "httpbin.konghq.com", 80, "/anything")
    assert service.url == "http://httpbin.konghq.com/anything"
    assert (service.retries, service.connect_timeout, service.enabled) == (5, 60000, True)
    (route,) = config.routes
    assert (route.name, route.paths, route.methods, route.strip_path, route.service) == (
        "example-route", ("/anything",), None, True, "example-service")
    assert route.protocols == ("http", "https") and route.preserve_host is False

    plugins = config.plugins_for(route)
    assert list(plugins) == ["ai-proxy-advanced", "file-log"]
    proxy = plugins["ai-proxy-advanced"]
    assert (proxy.enabled, proxy.service, proxy.route) == (True, None, None)
    assert proxy.protocols == ("grpc", "grpcs", "http", "https", "ws", "wss")
    assert config.files[str(tmp_path / "02-ai-proxy.yaml")] == {"_format_version": "3.0"}


def test_service_account_json_arrives_byte_for_byte(tmp_path: Path) -> None:
    config = read_config(str(seed_dir(tmp_path)), ENV)
    target = config.plugins[0].config["targets"][0]

    assert target["auth"]["gcp_service_account_json"] == SERVICE_ACCOUNT_JSON
    assert json.loads(target["auth"]["gcp_service_account_json"])["private_key"].count("\n") == 5
    assert target["model"]["options"]["gemini"] == {
        "api_endpoint": "us-central1-aiplatform.googleapis.com", "endpoint_id": None,
        "location_id": "us-central1", "project_id": "example-project-id"}


def test_ai_proxy_advanced_defaults_are_filled_like_kong(tmp_path: Path) -> None:
    config = read_config(str(seed_dir(tmp_path)), ENV)
    proxy = config.plugins[0].config

    assert (proxy["llm_format"], proxy["response_streaming"], proxy["genai_category"]) == (
        "anthropic", "allow", "text/generation")
    assert (proxy["max_request_body_size"], proxy["model_name_header"]) == (32 * 1024 * 1024, True)
    assert proxy["balancer"]["algorithm"] == "round-robin"
    assert proxy["balancer"]["failover_criteria"] == ["error", "timeout"]
    assert proxy["embeddings"] is None and proxy["vectordb"] is None
    target = proxy["targets"][0]
    assert set(target) == {"auth", "description", "logging", "metadata", "model", "route_type",
                           "weight"}
    assert (target["weight"], target["description"], target["metadata"]) == (100, None, None)
    assert target["logging"] == {"log_payloads": False, "log_statistics": True}
    assert target["auth"]["azure_use_managed_identity"] is False
    assert target["auth"]["header_name"] is None
    assert target["model"]["options"]["azure_api_version"] == "2023-05-15"
    assert target["model"]["options"]["bedrock"] is None
    assert config.plugins[1].config == {"custom_fields_by_lua": None, "path": "/tmp/claude.json",
                                        "reopen": False}


def test_max_tokens_under_model_moves_to_options(tmp_path: Path) -> None:
    config = read_config(str(seed_dir(tmp_path)), ENV)
    model = config.plugins[0].config["targets"][0]["model"]
    assert "max_tokens" not in model
    assert model["options"]["max_tokens"] == 8192


@pytest.mark.parametrize("model, expected", [
    ("{provider: gemini, options: {max_tokens: 100}}", 100),
    ("{provider: gemini, max_tokens: 200}", 200),
    ("{provider: gemini, max_tokens: 300, options: {max_tokens: 300}}", 300),
    ("{provider: gemini}", None),
])
def test_max_tokens_is_accepted_in_both_places(tmp_path: Path, model: str, expected: int) -> None:
    write(tmp_path, "p.yaml", PROXY_TEMPLATE.format(target=f"{{route_type: llm/v1/chat, model: {model}}}"))
    config = read_config(str(tmp_path / "p.yaml"), {})
    assert config.plugins[0].config["targets"][0]["model"]["options"]["max_tokens"] == expected


def test_conflicting_max_tokens_is_an_error(tmp_path: Path) -> None:
    target = "{route_type: llm/v1/chat, model: {provider: gemini, max_tokens: 1, options: {max_tokens: 2}}}"
    error = load_error(write(tmp_path, "p.yaml", PROXY_TEMPLATE.format(target=target)))
    assert "config.targets[0].model.max_tokens: conflicts with" in str(error)


def test_plugin_ids_are_stable_uuids_unless_given(tmp_path: Path) -> None:
    first = read_config(str(seed_dir(tmp_path)), ENV)
    second = read_config(str(tmp_path), ENV)
    assert [p.id for p in first.plugins] == [p.id for p in second.plugins]
    assert all(uuid.UUID(p.id).version == 5 for p in first.plugins)
    assert first.plugins[0].id != first.plugins[1].id

    given = "13f5c57a-77b2-4c1f-9492-9048566db7cf"
    write(tmp_path, "04-id.yaml", f"""\
        _format_version: "3.0"
        plugins:
          - name: file-log
            id: {given}
            config: {{path: /tmp/other.json}}
        """)
    assert read_config(str(tmp_path), ENV).plugins[1].id == given


# --- several files, nesting, precedence -----------------------------------------------------

def test_later_files_replace_entities_of_the_same_name_and_scope(tmp_path: Path) -> None:
    seed_dir(tmp_path)
    write(tmp_path, "04-replace.yaml", """\
        _format_version: "3.0"
        services:
          - name: example-service
            url: https://vertex.example:8443
        routes:
          - name: example-route
            paths: [/v1]
            strip_path: false
            service: example-service
        plugins:
          - name: file-log
            config: {path: /var/log/gatewayd.json, reopen: true}
          - name: file-log
            route: example-route
            config: {path: /var/log/route.json}
        """)
    config = read_config(str(tmp_path), ENV)

    service = config.services["example-service"]
    assert (service.protocol, service.host, service.port, service.path) == (
        "https", "vertex.example", 8443, None)
    (route,) = config.routes
    assert (route.paths, route.strip_path) == (("/v1",), False)
    logs = [p for p in config.plugins if p.name == "file-log"]
    assert [(p.route, p.config["path"]) for p in logs] == [
        (None, "/var/log/gatewayd.json"), ("example-route", "/var/log/route.json")]
    assert config.plugins_for(route)["file-log"].config["path"] == "/var/log/route.json"
    assert len(config.plugins) == 3


NESTED = """\
_format_version: "3.0"
services:
  - name: vertex
    protocol: https
    host: aiplatform.googleapis.com
    plugins:
      - name: file-log
        config: {path: /tmp/service.json}
    routes:
      - name: chat
        paths: [/chat]
        methods: [POST]
        plugins:
          - name: file-log
            enabled: ENABLED
            config: {path: /tmp/route.json}
      - name: other
        paths: [/other]
plugins:
  - name: file-log
    config: {path: /tmp/global.json}
routes:
  - name: unbound
    paths: [/unbound]
"""


def test_nested_routes_and_plugins_take_their_parent_as_scope(tmp_path: Path) -> None:
    config = read_config(str(write(tmp_path, "n.yaml", NESTED.replace("ENABLED", "true"))), {})

    service = config.services["vertex"]
    assert (service.port, service.url) == (443, "https://aiplatform.googleapis.com")
    routes = {route.name: route for route in config.routes}
    assert routes["chat"].service == "vertex" and routes["chat"].methods == ("POST",)
    assert routes["unbound"].service is None
    scopes = {(p.service, p.route): p.config["path"] for p in config.plugins}
    assert scopes == {("vertex", None): "/tmp/service.json", (None, "chat"): "/tmp/route.json",
                      (None, None): "/tmp/global.json"}

    assert config.plugins_for(routes["chat"])["file-log"].config["path"] == "/tmp/route.json"
    assert config.plugins_for(routes["other"])["file-log"].config["path"] == "/tmp/service.json"
    assert config.plugins_for(routes["unbound"])["file-log"].config["path"] == "/tmp/global.json"


def test_disabled_plugins_do_not_run_and_do_not_mask_others(tmp_path: Path) -> None:
    config = read_config(str(write(tmp_path, "n.yaml", NESTED.replace("ENABLED", "false"))), {})
    chat = next(route for route in config.routes if route.name == "chat")
    assert config.plugins_for(chat)["file-log"].config["path"] == "/tmp/service.json"


def test_route_and_service_scope_beats_route_scope() -> None:
    from gatewayd.config import Config, Plugin

    def plugin(service: str | None, route: str | None) -> Plugin:
        return Plugin(name="file-log", id=f"{service}-{route}", enabled=True,
                      config={"path": f"/{service}/{route}"}, service=service, route=route)

    route = Route(name="r", paths=("/",), service="s")
    config = Config(services={}, routes=(route,), sources=(), plugins=(
        plugin(None, "r"), plugin("s", "r"), plugin("s", None), plugin(None, None),
        plugin("t", None)))
    assert config.plugins_for(route)["file-log"].config["path"] == "/s/r"
    assert config.plugins_for(Route(name="q", paths=("/",), service="t"))[
        "file-log"].config["path"] == "/t/None"


def test_references_may_be_strings_names_or_ids(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """\
        _format_version: "3.0"
        services:
          - {name: svc, id: 5b1e7f7c-0f0e-4d6e-9a0a-1a2b3c4d5e6f, host: example.com}
        routes:
          - {name: r1, paths: [/a], service: svc}
          - {name: r2, paths: [/b], service: {id: 5b1e7f7c-0f0e-4d6e-9a0a-1a2b3c4d5e6f}}
        plugins:
          - {name: file-log, route: {name: r2}, config: {path: /tmp/x}}
          - {name: file-log, service: svc, config: {path: /tmp/y}}
        """)
    config = read_config(str(tmp_path), {})
    assert [route.service for route in config.routes] == ["svc", "svc"]
    assert [(p.service, p.route) for p in config.plugins] == [(None, "r2"), ("svc", None)]


def test_info_select_tags_and_defaults_apply_to_the_files_entities(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """\
        _format_version: "3.0"
        _transform: true
        _info:
          select_tags: [gatewayd]
          defaults:
            service: {read_timeout: 120000, port: 8080}
        services:
          - {name: a, host: a.example, tags: [mine]}
          - {name: b, url: "http://b.example"}
        """)
    config = read_config(str(tmp_path / "a.yaml"), {})
    assert config.services["a"].tags == ("mine", "gatewayd")
    assert (config.services["a"].read_timeout, config.services["a"].port) == (120000, 8080)
    assert config.services["b"].port == 80
    assert config.files[str(tmp_path / "a.yaml")]["_transform"] is True


# --- ${{ env }} expansion -------------------------------------------------------------------

AWKWARD = 'line one\n  "quoted" and \'single\' \\n backslash\ttab: colon # hash ünï ✓ 😀\n'


@pytest.mark.parametrize("scalar", [
    '"${{ env "DECK_V" }}"',
    "'${{ env \"DECK_V\" }}'",
    '${{ env "DECK_V" }}',
    '|\n          ${{ env "DECK_V" | indent 10 }}',
    '|-\n          ${{ env "DECK_V" | indent 10 }}\n          ',
])
def test_values_arrive_exactly_whatever_the_quoting(tmp_path: Path, scalar: str) -> None:
    write(tmp_path, "a.yaml", '_format_version: "3.0"\n'
                              "plugins:\n  - name: ai-proxy-advanced\n    config:\n"
                              "      targets:\n      - route_type: preserve\n"
                              "        model: {provider: gemini}\n"
                              f"        description: {scalar}\n")
    config = read_config(str(tmp_path / "a.yaml"), {"DECK_V": AWKWARD})
    expected = AWKWARD.rstrip("\n") if scalar.startswith("|-") else AWKWARD
    assert config.plugins[0].config["targets"][0]["description"] == expected


def test_plain_scalars_are_typed_like_decks_text_substitution(tmp_path: Path) -> None:
    target = ('{route_type: llm/v1/chat, weight: ${{ env "DECK_WEIGHT" }}, '
              'logging: {log_payloads: ${{ env "DECK_FLAG" | toBool }}}, '
              'description: "${{ env "DECK_WEIGHT" }} and ${{ env "DECK_FLAG" }}", '
              'model: {provider: gemini, options: {temperature: ${{ env "DECK_T" | toFloat }}, '
              'max_tokens: ${{ env "DECK_WEIGHT" | toInt }}}}}')
    write(tmp_path, "p.yaml", PROXY_TEMPLATE.format(target=target))
    config = read_config(str(tmp_path / "p.yaml"),
                         {"DECK_WEIGHT": "42", "DECK_FLAG": "T", "DECK_T": "0.5"})
    target_config = config.plugins[0].config["targets"][0]
    assert target_config["weight"] == 42
    assert target_config["logging"]["log_payloads"] is True
    assert target_config["description"] == "42 and T"
    assert target_config["model"]["options"]["temperature"] == 0.5
    assert target_config["model"]["options"]["max_tokens"] == 42


def test_expressions_on_comment_lines_are_left_alone(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """\
        _format_version: "3.0"
        # path: ${{ env "DECK_UNSET" }} and ${{ env "NOT_DECK" }}
        plugins: [{name: file-log, config: {path: /tmp/x}}]
        """)
    assert read_config(str(tmp_path / "a.yaml"), {}).plugins[0].config["path"] == "/tmp/x"


# --- errors ---------------------------------------------------------------------------------

PROXY_TEMPLATE = """\
_format_version: "3.0"
plugins:
  - name: ai-proxy-advanced
    config:
      targets:
      - {target}
"""
GOOD_TARGET = "{route_type: llm/v1/chat, model: {provider: gemini, name: gemini-2.5-pro}}"


@pytest.mark.parametrize("text, expected", [
    ("services: []\n", "_format_version: required"),
    ("_format_version: 3.0\n", '_format_version: gatewayd reads Kong 3.x state: expected the string "3.0"'),
    ('_format_version: "1.1"\n', "got '1.1'"),
    ('_format_version: "3.0"\nservice: []\n', "service: unknown top-level key"),
    ('_format_version: "3.0"\nplugins: [{name: ai-proxy}]\n',
     "plugins[0] (ai-proxy): name: unknown plugin 'ai-proxy'"),
    ('_format_version: "3.0"\nplugins: [{name: file-log, config: {path: /x, colour: red}}]\n',
     "plugins[0] (file-log): config.colour: unknown field"),
    ('_format_version: "3.0"\nplugins: [{name: file-log, config: {}}]\n',
     "plugins[0] (file-log): config.path: required field missing"),
    ('_format_version: "3.0"\nplugins: [{name: file-log, config: {path: /x, reopen: "yes"}}]\n',
     "plugins[0] (file-log): config.reopen: expected a boolean, got string"),
    ('_format_version: "3.0"\nplugins: [{name: file-log, colour: red, config: {path: /x}}]\n',
     "plugins[0] (file-log): colour: unknown field"),
    ('_format_version: "3.0"\nplugins: [{name: file-log, protocols: [ftp], config: {path: /x}}]\n',
     'protocols[0]: expected one of "grpc", "grpcs", "http", "https", "tcp"'),
    (PROXY_TEMPLATE.format(target=GOOD_TARGET.replace("gemini,", "foo,")),
     'plugins[0] (ai-proxy-advanced): config.targets[0].model.provider: expected one of '
     '"anthropic", "azure", "bedrock", "cerebras", "cohere", "dashscope", "databricks", '
     '"deepseek", "gemini", "huggingface", "llama2", "mistral", "ollama", "openai", "vllm", '
     '"xai", got "foo"'),
    (PROXY_TEMPLATE.format(target=GOOD_TARGET.replace("}}", ", options: {top_k: many}}}")),
     "config.targets[0].model.options.top_k: expected an integer, got string"),
    (PROXY_TEMPLATE.format(target=GOOD_TARGET.replace("}}", ", options: {top_p: 2}}}")),
     "config.targets[0].model.options.top_p: value should be between 0 and 1"),
    (PROXY_TEMPLATE.format(target=GOOD_TARGET.replace("route_type: llm/v1/chat, ", "")),
     "config.targets[0].route_type: required field missing"),
    (PROXY_TEMPLATE.format(target=GOOD_TARGET.replace("model:", "modle:")),
     "config.targets[0].modle: unknown field"),
    ('_format_version: "3.0"\nplugins: [{name: ai-proxy-advanced, config: {llm_format: anthropic}}]\n',
     "config.targets: required field missing"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: [/x], service: {name: nowhere}}]\n',
     "routes[0] (r): service: service 'nowhere' is not defined"),
    ('_format_version: "3.0"\nplugins: [{name: file-log, route: nowhere, config: {path: /x}}]\n',
     "plugins[0] (file-log): route: route 'nowhere' is not defined"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: [/x], stripe_path: true}]\n',
     "routes[0] (r): stripe_path: unknown field"),
    ('_format_version: "3.0"\nroutes: [{name: r}]\n', "must set one of 'methods', 'hosts'"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: ["~/v1/(.*"]}]\n',
     "routes[0] (r): paths[0]: invalid regex: '/v1/(.*' (missing ), unterminated subpattern"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: ["~/v1/(?=x)"]}]\n',
     "routes[0] (r): paths[0]: invalid regex: '/v1/(?=x)' (Kong's router (Rust regex) has no "
     "look-around)"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: ["/a/../b"]}]\n',
     "routes[0] (r): paths[0]: non-normalized path, consider use '/b' instead"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: ["/a%zz"]}]\n',
     "routes[0] (r): paths[0]: invalid url-encoded value: '%zz'"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: ["/a//b"]}]\n',
     "routes[0] (r): paths[0]: must not have empty segments"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: ["v1"]}]\n',
     "routes[0] (r): paths[0]: should start with: / (fixed path) or ~/ (regex path)"),
    ('_format_version: "3.0"\nroutes: [{name: r, paths: [/x], snis: [a.test], protocols: [http]}]\n',
     "routes[0] (r): snis: 'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls'"),
    ('_format_version: "3.0"\nroutes: [{name: r, snis: ["a.test:443"], protocols: [https]}]\n',
     "routes[0] (r): snis[0]: must not have a port"),
    ('_format_version: "3.0"\nroutes: [{name: r, hosts: ["a.*.test"]}]\n',
     "routes[0] (r): hosts[0]: invalid wildcard: must be placed at leftmost or rightmost label"),
    ('_format_version: "3.0"\nroutes: [{name: r, headers: {x-v: ["~*("]}}]\n',
     "routes[0] (r): headers.x-v: invalid regex: '('"),
    ('_format_version: "3.0"\nservices: [{name: s, url: "http://a", port: 80}]\n',
     "services[0] (s): url: give either url or port, not both"),
    ('_format_version: "3.0"\nservices: [{name: s, host: a, retries: 99999}]\n',
     "services[0] (s): retries: value should be between 0 and 32767"),
    ('_format_version: "3.0"\nservices: [{name: s, host: a, colour: red}]\n',
     "services[0] (s): colour: unknown field"),
    ('_format_version: "3.0"\nservices: [{name: s, host: a}, {name: s, host: b}]\n',
     "services[1] (s): name: defined twice in this file"),
])
def test_errors_name_the_file_the_entity_and_the_field(tmp_path: Path, text: str,
                                                       expected: str) -> None:
    error = load_error(write(tmp_path, "bad.yaml", text))
    assert str(error).startswith(str(tmp_path / "bad.yaml") + ": ")
    assert expected in str(error)


def test_unset_deck_variable_is_named_with_the_file(tmp_path: Path) -> None:
    seed_dir(tmp_path)
    environ = {k: v for k, v in ENV.items() if k != "DECK_GCP_PROJECT_ID"}
    error = load_error(tmp_path, environ)
    assert str(error) == (f"{tmp_path / '02-ai-proxy.yaml'}: line 21: environment variable "
                          f"'DECK_GCP_PROJECT_ID' present in state file but not set")


def test_variables_without_the_deck_prefix_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", '_format_version: "3.0"\n'
                              'plugins: [{name: file-log, config: {path: "${{ env "PATH" }}"}}]\n')
    error = load_error(tmp_path / "a.yaml")
    assert "a.yaml: line 2: environment variables in the state file must be prefixed with " \
           "'DECK_', found: 'PATH'" in str(error)
    assert ENV["PATH"] not in str(error)


def test_yaml_syntax_errors_name_the_file_and_line_but_never_the_secret(tmp_path: Path) -> None:
    write(tmp_path, "01-bad.yaml", AI_PROXY.replace("        model:\n", "        model:\n  oops: [\n"))
    error = load_error(tmp_path)
    assert str(error).startswith(f"{tmp_path / '01-bad.yaml'}: invalid YAML at line ")
    assert error.file == str(tmp_path / "01-bad.yaml")


def test_yaml_errors_on_an_expanded_line_show_the_template(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", '_format_version: "3.0"\n'
                              'key: [${{ env "DECK_GEMINI_API_KEY" }}: *nowhere\n')
    message = str(load_error(tmp_path / "a.yaml"))
    assert "invalid YAML at line 2" in message


def test_a_secret_in_a_checked_field_is_shown_as_its_template(tmp_path: Path) -> None:
    target = GOOD_TARGET.replace("provider: gemini", 'provider: "${{ env "DECK_GEMINI_API_KEY" }}"')
    error = load_error(write(tmp_path, "p.yaml", PROXY_TEMPLATE.format(target=target)))
    assert "config.targets[0].model.provider: expected one of" in str(error)
    assert "got a string of" in str(error)

    short = {"DECK_SHORT": "hunter2-secret"}
    target = GOOD_TARGET.replace("provider: gemini", 'provider: ${{ env "DECK_SHORT" }}')
    write(tmp_path, "p.yaml", PROXY_TEMPLATE.format(target=target))
    with pytest.raises(ConfigError) as caught:
        read_config(str(tmp_path / "p.yaml"), short)
    assert "hunter2-secret" not in str(caught.value)
    assert '${{ env "DECK_SHORT" }}' in str(caught.value)


def test_unsupported_template_expressions_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", '_format_version: "3.0"\nx: ${{ .Values.foo }}\n')
    assert "line 2: unsupported template expression ${{ .Values.foo }}" in str(
        load_error(tmp_path / "a.yaml"))


def test_missing_path_and_empty_directory_are_errors(tmp_path: Path) -> None:
    assert "no such file" in str(load_error(tmp_path / "absent.yaml"))
    assert "no *.yaml or *.yml" in str(load_error(tmp_path))


def test_regex_paths_snis_and_wildcard_hosts_load_as_kong_accepts_them(tmp_path: Path) -> None:
    config = read_config(str(write(tmp_path, "kong.yaml", textwrap.dedent("""\
        _format_version: "3.0"
        routes:
        - name: r
          protocols: [https]
          paths: ["~/v1/(?<model>[a-z]+)/messages$", /plain]
          hosts: ["*.example.com", "example.*:8443"]
          snis: ["*.example.com", example.test]
          headers: {X-Version: ["~*^v[12]$"]}
          regex_priority: 3
        """))), {})
    route = config.routes[0]
    assert route.paths == ("~/v1/(?<model>[a-z]+)/messages$", "/plain")
    assert route.snis == ("*.example.com", "example.test")
    assert route.hosts == ("*.example.com", "example.*:8443")
    assert route.regex_priority == 3


def test_unbuffered_requests_are_refused_not_ignored(tmp_path):
    path = tmp_path / "kong.yaml"
    path.write_text('_format_version: "3.0"\nroutes:\n  - name: r\n    paths: [/r]\n    request_buffering: false\n')
    with pytest.raises(ConfigError) as raised:
        read_config(str(path), {})
    assert str(raised.value) == (
        f"{path}: routes[0] (r): request_buffering: false is not served by gatewayd: "
        "request bodies are always read before proxying"
    )
