"""Reading decK state files and applying them, in order, like ``deck gateway apply``."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from attrs import evolve

from gatewayd.router import compile_header_regex, compile_path_regex, normalize_path

from .entities import DEFAULT_PORTS, Config, Consumer, KeyCredential, Plugin, Route, Service
from .errors import ConfigError
from .schema import PluginSchema, SchemaError
from .templates import kind_of, load_yaml, redacted


def load_config(path: str, environ: Mapping[str, str],
                schemas: Mapping[str, PluginSchema]) -> Config:
    """Read a decK state file, or a directory of them applied in name order.

    ``schemas`` are the plugins a file may configure, by name (the plugin registry's:
    :func:`gatewayd.plugins.read_config` passes this installation's).
    """
    state = _State(schemas)
    for file in _state_files(path):
        text = _read_text(file)
        state.digest.update(text.encode("utf-8"))
        document, secrets = load_yaml(text, environ, file)
        try:
            _apply_file(state, file, document)
        except ConfigError as error:
            raise redacted(error, secrets) from None
    return state.freeze()


def _state_files(path: str) -> list[str]:
    target = Path(path)
    if target.is_dir():
        files = sorted(entry for entry in target.iterdir() if entry.is_file()
                       and entry.suffix.lower() in (".yaml", ".yml"))
        if not files:
            raise ConfigError(path, "directory holds no *.yaml or *.yml state file")
        return [str(entry) for entry in files]
    if not target.exists():
        raise ConfigError(path, "no such file or directory")
    return [path]


def _read_text(file: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(file, f"cannot read: {error}") from None


_DECK_KEYS_UNSUPPORTED = (
    "_workspace", "_konnect", "_plugin_configs", "consumer_groups", "upstreams",
    "certificates", "ca_certificates", "rbac_roles", "service_packages", "vaults", "licenses",
    "custom_entities", "partials", "keys", "key_sets", "filter_chains", "cloned_plugins",
    "custom_plugins")
_TOP_LEVEL = ("_format_version", "_transform", "_info", "services", "routes", "plugins",
              "consumers")
_INFO_KEYS = ("select_tags", "default_lookup_tags", "defaults", "consumer_group_policy_overrides",
              "skip_hash_for_basic_auth", "include_plugin_definitions")
_INFO_DEFAULTS_KEYS = ("service", "route", "upstream", "target")
_PLUGIN_NAMESPACE = uuid.UUID("4f7c3a2e-6d0b-5b7e-9a51-2d3c9e8f1a60")


class _State:
    """The gateway as successive applies leave it: entities by name, plugins by scope."""

    def __init__(self, schemas: Mapping[str, PluginSchema]) -> None:
        self.schemas = schemas
        self.services: dict[str, Service] = {}
        self.routes: dict[str, Route] = {}
        self.plugins: dict[tuple[str, str | None, str | None, str | None], Plugin] = {}
        self.consumers: dict[str, Consumer] = {}
        self.sources: list[str] = []
        self.files: dict[str, Mapping[str, Any]] = {}
        self.digest = hashlib.md5(usedforsecurity=False)

    def freeze(self) -> Config:
        return Config(services=MappingProxyType(dict(self.services)),
                      routes=tuple(self.routes.values()), plugins=tuple(self.plugins.values()),
                      sources=tuple(self.sources), files=MappingProxyType(dict(self.files)),
                      consumers=MappingProxyType(dict(self.consumers)),
                      digest=self.digest.hexdigest())


class _File:
    """What one file contributes, checked against the state it is applied to."""

    def __init__(self, name: str, select_tags: tuple[str, ...],
                 defaults: Mapping[str, Mapping[str, Any]],
                 schemas: Mapping[str, PluginSchema]) -> None:
        self.name = name
        self.schemas = schemas
        self.select_tags = select_tags
        self.defaults = defaults
        self.services: dict[str, Service] = {}
        self.routes: dict[str, tuple[Route, _Fields]] = {}
        self.plugins: list[tuple[dict[str, Any], str]] = []
        self.consumers: dict[str, Consumer] = {}

    def error(self, entity: str | None, message: str, field: str | None = None) -> ConfigError:
        return ConfigError(self.name, message, entity=entity, field=field)


def _apply_file(state: _State, file: str, document: Any) -> None:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(file, f"a state file is a mapping, got {kind_of(document)}")
    meta = _file_meta(file, document)
    for key in document:
        if key in _TOP_LEVEL:
            continue
        if key in _DECK_KEYS_UNSUPPORTED:
            if document[key] in (None, [], {}, ""):
                continue
            raise ConfigError(file, "not served by gatewayd", field=str(key))
        raise ConfigError(file, f"unknown top-level key (decK state files have "
                                f"{', '.join(_TOP_LEVEL)}, ...)", field=str(key))
    info = meta.get("_info", {})
    current = _File(file, tuple(info.get("select_tags") or ()), info.get("defaults") or {},
                    state.schemas)
    for index, raw in enumerate(_entity_list(current, document, "services")):
        _add_service(current, raw, f"services[{index}]")
    for index, raw in enumerate(_entity_list(current, document, "routes")):
        _add_route(current, raw, f"routes[{index}]", None)
    for index, raw in enumerate(_entity_list(current, document, "plugins")):
        current.plugins.append((_plugin_dict(current, raw, f"plugins[{index}]"), f"plugins[{index}]"))
    for index, raw in enumerate(_entity_list(current, document, "consumers")):
        _add_consumer(current, raw, f"consumers[{index}]")

    state.services.update(current.services)
    for route, fields in current.routes.values():
        service = _resolve(fields, "service", route.service, state.services)
        state.routes[route.name] = evolve(route, service=service)
    state.consumers.update(current.consumers)
    for raw, entity in current.plugins:
        plugin = _build_plugin(current, state, raw, entity)
        state.plugins[(plugin.name, plugin.service, plugin.route, plugin.consumer)] = plugin
    _check_keys(current, state.consumers)
    ids = {}
    for plugin in state.plugins.values():
        if plugin.id in ids:
            raise current.error(None, f"plugin id {plugin.id} is used by two plugins "
                                      f"({ids[plugin.id]} and {plugin.name})")
        ids[plugin.id] = plugin.name
    state.sources.append(file)
    state.files[file] = MappingProxyType(meta)


def _file_meta(file: str, document: dict[str, Any]) -> dict[str, Any]:
    version = document.get("_format_version")
    if version is None:
        raise ConfigError(file, 'required: decK state files start with _format_version: "3.0"',
                          field="_format_version")
    if version != "3.0":
        shown = repr(version) if isinstance(version, str) else f"{version!r} (a {kind_of(version)})"
        raise ConfigError(file, f'gatewayd reads Kong 3.x state: expected the string "3.0", '
                                f'got {shown}', field="_format_version")
    meta: dict[str, Any] = {"_format_version": version}
    if "_transform" in document:
        if not isinstance(document["_transform"], bool):
            raise ConfigError(file, f"expected a boolean, got {kind_of(document['_transform'])}",
                              field="_transform")
        meta["_transform"] = document["_transform"]
    if "_info" in document:
        meta["_info"] = _info(file, document["_info"])
    return meta


def _info(file: str, info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    if not isinstance(info, dict):
        raise ConfigError(file, f"expected a mapping, got {kind_of(info)}", field="_info")
    for key in info:
        if key not in _INFO_KEYS:
            raise ConfigError(file, "unknown field", field=f"_info.{key}")
    if _tags(info.get("select_tags")) is None:
        raise ConfigError(file, "expected a list of non-empty strings", field="_info.select_tags")
    defaults = info.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(file, f"expected a mapping, got {kind_of(defaults)}", field="_info.defaults")
    for key, value in defaults.items():
        if key not in _INFO_DEFAULTS_KEYS:
            raise ConfigError(file, "unknown field", field=f"_info.defaults.{key}")
        if not isinstance(value, dict):
            raise ConfigError(file, f"expected a mapping, got {kind_of(value)}",
                              field=f"_info.defaults.{key}")
    return dict(info)


def _entity_list(current: _File, document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise current.error(None, f"expected a list, got {kind_of(value)}", key)
    return value


class _Fields:
    """Typed reads from one entity's mapping, with errors that name the entity and field."""

    def __init__(self, current: _File, raw: Any, entity: str, known: Iterable[str],
                 unsupported: Iterable[str] = ()) -> None:
        if not isinstance(raw, dict):
            raise current.error(entity, f"expected a mapping, got {kind_of(raw)}")
        self.current, self.raw = current, raw
        name = raw.get("name")
        self.entity = f"{entity} ({name})" if isinstance(name, str) else entity
        known = set(known)
        for key in raw:
            if key in unsupported and raw[key] not in (None, [], {}):
                raise self.error(str(key), "not served by gatewayd")
            if key not in known and key not in unsupported:
                raise self.error(str(key), "unknown field")

    def error(self, field: str | None, message: str) -> ConfigError:
        return self.current.error(self.entity, message, field)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            wanted = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(key, f"expected {_KIND_WORDS.get(wanted, wanted)}, got {kind_of(value)}")
        return value

    def integer(self, key: str, default: int | None, low: int, high: int) -> int | None:
        value = self.get(key, int, default)
        if value is not None and not low <= value <= high:
            raise self.error(key, f"value should be between {low} and {high}, got {value}")
        return value

    def one_of(self, key: str, default: Any, choices: tuple[Any, ...]) -> Any:
        value = self.raw.get(key)
        if value is None:
            return default
        if value not in choices or isinstance(value, bool):
            listed = ", ".join(f'"{c}"' if isinstance(c, str) else str(c) for c in choices)
            raise self.error(key, f"expected one of {listed}, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of strings, got {kind_of(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{key}[{index}]", f"expected a non-empty string, got {kind_of(item)}")
        return tuple(dict.fromkeys(value))

    def tags(self) -> tuple[str, ...]:
        own = _tags(self.raw.get("tags"))
        if own is None:
            raise self.error("tags", "expected a list of non-empty strings")
        return tuple(dict.fromkeys(own + self.current.select_tags))

    def name(self) -> str:
        name = self.get("name", str)
        if name is None:
            raise self.error("name", "required (gatewayd keys services and routes by name)")
        if not _NAME.match(name):
            raise self.error("name", "must contain only letters, digits and . - _ ~")
        return name

    def uuid(self) -> str | None:
        value = self.get("id", str)
        if value is not None and not _UUID.match(value):
            raise self.error("id", "expected a UUID")
        return value


_KIND_WORDS = {"str": "a string", "int": "an integer", "bool": "a boolean", "dict": "a mapping",
               "list": "a list", "str or dict": "a name or a mapping"}
_NAME = re.compile(r"^[\w.\-~]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TIMEOUT_MAX = 2147483646


def _tags(value: Any) -> tuple[str, ...] | None:
    """Kong tags: a list of non-empty strings (None when ``value`` is not one)."""
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(tag, str) and tag for tag in value):
        return tuple(value)
    return None


def _with_defaults(current: _File, kind: str, raw: Any) -> Any:
    """decK's ``_info.defaults``: values for the fields an entity leaves unset."""
    defaults = current.defaults.get(kind)
    if not defaults or not isinstance(raw, dict):
        return raw
    if raw.get("url") is not None:
        defaults = {k: v for k, v in defaults.items() if k not in ("protocol", "host", "port", "path")}
    return {**defaults, **raw}


# --- services -------------------------------------------------------------------------------

_SERVICE_FIELDS = ("name", "id", "url", "protocol", "host", "port", "path", "retries",
                   "connect_timeout", "write_timeout", "read_timeout", "tags", "enabled",
                   "tls_verify", "tls_verify_depth", "routes", "plugins", "created_at", "updated_at")
_SERVICE_UNSUPPORTED = ("client_certificate", "ca_certificates", "tls_sans")
_SERVICE_PROTOCOLS = ("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp",
                      "ws", "wss")


def _add_service(current: _File, raw: Any, entity: str) -> None:
    raw = _with_defaults(current, "service", raw)
    fields = _Fields(current, raw, entity, _SERVICE_FIELDS, _SERVICE_UNSUPPORTED)
    name = fields.name()
    if name in current.services:
        raise fields.error("name", "defined twice in this file")
    protocol, host, port, path = _service_location(fields)
    service = Service(
        name=name, protocol=protocol, host=host, port=port, path=path,
        retries=fields.integer("retries", 5, 0, 32767),
        connect_timeout=fields.integer("connect_timeout", 60000, 1, _TIMEOUT_MAX),
        write_timeout=fields.integer("write_timeout", 60000, 1, _TIMEOUT_MAX),
        read_timeout=fields.integer("read_timeout", 60000, 1, _TIMEOUT_MAX),
        enabled=fields.get("enabled", bool, True),
        tls_verify=fields.get("tls_verify", bool),
        tls_verify_depth=_refused(fields, "tls_verify_depth", fields.integer("tls_verify_depth", None, 0, 64),
                                  "the proxy verifies the whole chain, to any depth"),
        tags=fields.tags(), id=fields.uuid(), source=current.name)
    current.services[name] = service
    for index, route in enumerate(fields.get("routes", list, [])):
        _add_route(current, route, f"{entity}.routes[{index}]", name)
    for index, plugin in enumerate(fields.get("plugins", list, [])):
        where = f"{entity}.plugins[{index}]"
        current.plugins.append((_plugin_dict(current, plugin, where, service=name), where))


def _refused(fields: _Fields, key: str, value: Any, why: str) -> None:
    """A field Kong serves and gatewayd does not: accepted only when unset."""
    if value is not None:
        raise fields.error(key, f"not served by gatewayd ({why})")
    return None


def _service_location(fields: _Fields) -> tuple[str, str, int, str | None]:
    url = fields.get("url", str)
    if url is not None:
        clash = [key for key in ("protocol", "host", "port", "path") if fields.raw.get(key) is not None]
        if clash:
            raise fields.error("url", f"give either url or {'/'.join(clash)}, not both")
        return _parse_url(fields, url)
    protocol = fields.one_of("protocol", "http", _SERVICE_PROTOCOLS)
    host = fields.get("host", str)
    if not host:
        raise fields.error("host", "required field missing (give url, or protocol/host/port/path)")
    port = fields.integer("port", DEFAULT_PORTS.get(protocol, 80), 0, 65535)
    assert port is not None
    path = fields.get("path", str)
    if path is not None and not path.startswith("/"):
        raise fields.error("path", f"should start with: / (got {path!r})")
    return protocol, host, port, path


def _parse_url(fields: _Fields, url: str) -> tuple[str, str, int, str | None]:
    """Kong's ``url`` shorthand: protocol, host, port (default by protocol) and path."""
    parts = urlsplit(url)
    protocol = parts.scheme.lower()
    if protocol not in _SERVICE_PROTOCOLS or not parts.hostname:
        raise fields.error("url", f"expected an absolute URL such as http://host/path, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise fields.error("url", "a service URL has no query, fragment or credentials")
    try:
        port = parts.port
    except ValueError:
        raise fields.error("url", f"invalid port in {url!r}") from None
    if port is None:
        port = DEFAULT_PORTS.get(protocol, 80)
    return protocol, parts.hostname, port, parts.path or None


# --- routes ---------------------------------------------------------------------------------

_ROUTE_FIELDS = ("name", "id", "protocols", "methods", "hosts", "paths", "headers",
                 "https_redirect_status_code", "regex_priority", "strip_path", "path_handling",
                 "preserve_host", "request_buffering", "response_buffering", "tags", "service",
                 "plugins", "snis", "created_at", "updated_at")
_ROUTE_UNSUPPORTED = ("sources", "destinations", "expression", "priority")
_SNI_PROTOCOLS = ("grpcs", "https", "tls", "tls_passthrough")
_ROUTE_PROTOCOLS = ("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp",
                    "ws", "wss")


def _add_route(current: _File, raw: Any, entity: str, parent: str | None) -> None:
    raw = _with_defaults(current, "route", raw)
    fields = _Fields(current, raw, entity, _ROUTE_FIELDS, _ROUTE_UNSUPPORTED)
    name = fields.name()
    if name in current.routes:
        raise fields.error("name", "defined twice in this file")
    service = _reference(fields, "service", parent)
    protocols = fields.strings("protocols") or ("http", "https")
    for protocol in protocols:
        if protocol not in _ROUTE_PROTOCOLS:
            raise fields.error("protocols", f"expected one of {', '.join(_ROUTE_PROTOCOLS)}, "
                                            f"got {protocol!r}")
    paths = fields.strings("paths") or ()
    for index, path in enumerate(paths):
        problem = _path_problem(path)
        if problem:
            raise fields.error(f"paths[{index}]", problem)
    methods = fields.strings("methods")
    for method in methods or ():
        if not re.fullmatch(r"[A-Z]+", method):
            raise fields.error("methods", f"invalid value: {method!r} (methods are upper case)")
    hosts = fields.strings("hosts")
    for index, host in enumerate(hosts or ()):
        problem = _host_problem(host, wildcard_port=True)
        if problem:
            raise fields.error(f"hosts[{index}]", problem)
    snis = fields.strings("snis")
    for index, sni in enumerate(snis or ()):
        problem = _host_problem(sni, wildcard_port=False)
        if problem:
            raise fields.error(f"snis[{index}]", problem)
    if snis and not set(protocols) & set(_SNI_PROTOCOLS):
        raise fields.error("snis", "'snis' can only be set when 'protocols' is 'grpcs', "
                                   "'https', 'tls' or 'tls_passthrough'")
    headers = _headers(fields)
    if "https" in protocols and not (paths or methods or hosts or headers or snis):
        raise fields.error(None, "must set one of 'methods', 'hosts', 'headers', 'paths', "
                                 "'snis' when 'protocols' is 'https'")
    elif "http" in protocols and not (paths or methods or hosts or headers):
        raise fields.error(None, "must set one of 'methods', 'hosts', 'headers', 'paths' "
                                 "when 'protocols' is 'http'")
    if fields.get("request_buffering", bool, True) is False:
        raise fields.error("request_buffering", "false is not served by gatewayd: request "
                                                "bodies are always read before proxying")
    route = Route(
        name=name, paths=paths, methods=methods, service=service,
        strip_path=fields.get("strip_path", bool, True),
        preserve_host=fields.get("preserve_host", bool, False),
        protocols=protocols, hosts=hosts, snis=snis, headers=headers,
        regex_priority=fields.get("regex_priority", int, 0),
        path_handling=fields.one_of("path_handling", "v0", ("v0", "v1")),
        https_redirect_status_code=fields.one_of("https_redirect_status_code", 426,
                                                 (426, 301, 302, 307, 308)),
        request_buffering=fields.get("request_buffering", bool, True),
        response_buffering=fields.get("response_buffering", bool, True),
        tags=fields.tags(), id=fields.uuid(), source=current.name)
    current.routes[name] = (route, fields)
    for index, plugin in enumerate(fields.get("plugins", list, [])):
        where = f"{entity}.plugins[{index}]"
        current.plugins.append((_plugin_dict(current, plugin, where, route=name), where))


def _headers(fields: _Fields) -> Mapping[str, tuple[str, ...]] | None:
    raw = fields.get("headers", dict)
    if raw is None:
        return None
    headers = {}
    for name, values in raw.items():
        if not isinstance(name, str) or name.lower() == "host":
            raise fields.error(f"headers.{name}", "invalid header name (use hosts for Host)")
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise fields.error(f"headers.{name}", "expected a non-empty list of strings")
        for value in values:
            if value.startswith("~*"):
                try:
                    compile_header_regex(value)
                except ValueError as error:
                    raise fields.error(f"headers.{name}",
                                       f"invalid regex: {value[2:]!r} ({error})") from None
        headers[name.lower()] = tuple(values)
    return MappingProxyType(headers)


_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _path_problem(path: str) -> str | None:
    """Kong's router_path typedef: ``/`` or ``~/``, no empty segment, valid
    %-escapes; a prefix in normalised form, a regex Kong's router compiles."""
    if not path.startswith(("/", "~/")):
        return f"should start with: / (fixed path) or ~/ (regex path), got {path!r}"
    if "//" in path:
        return f"must not have empty segments, got {path!r}"
    bad = _PERCENT.search(path)
    if bad:
        return f"invalid url-encoded value: {path[bad.start():bad.start() + 3]!r}"
    if not path.startswith("~"):
        normalized = normalize_path(path)
        if normalized != path:
            return f"non-normalized path, consider use {normalized!r} instead"
        return None
    try:
        compile_path_regex(path)
    except ValueError as error:
        return f"invalid regex: {path[1:]!r} ({error})"
    return None


_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_LABELS = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                     r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$")


def _host_problem(host: str, *, wildcard_port: bool) -> str | None:
    """Kong's hosts (one wildcard, leftmost or rightmost label, optional port) and
    snis (the same, without a port): a name Kong's router can compare."""
    if host.count("*") > 1:
        return f"invalid wildcard: must have at most one wildcard, got {host!r}"
    name, colon, port = host.rpartition(":") if host.count(":") == 1 or "]:" in host \
        else (host, "", "")
    if colon:
        if not wildcard_port:
            return f"must not have a port, got {host!r}"
        if not port.isascii() or not port.isdigit() or int(port) > 65535:
            return f"invalid port number, got {host!r}"
    if "*" in name and not (name.startswith("*.") or name.endswith(".*")):
        return f"invalid wildcard: must be placed at leftmost or rightmost label, got {host!r}"
    if name.startswith("[") and name.endswith("]") or _IPV4.match(name):
        return None if wildcard_port else f"must not be an IP, got {host!r}"
    if not _LABELS.match(name.replace("*", "wildcard")):
        return f"invalid value: {host!r}"
    return None


def _reference(fields: _Fields, key: str, parent: str | None) -> str | None:
    """A ``service:``/``route:`` reference: a name, ``{name: ...}`` or ``{id: ...}``."""
    value = fields.get(key, (str, dict))
    if value is None:
        return parent
    if isinstance(value, dict):
        extra = set(value) - {"name", "id"}
        if extra or len(value) != 1 or not isinstance(next(iter(value.values())), str):
            raise fields.error(key, "expected a name, or a mapping with one of name or id")
        value = ("id:" if "id" in value else "") + next(iter(value.values()))
    if parent is not None and value != parent:
        raise fields.error(key, f"a nested entity belongs to {parent!r}, got {value!r}")
    return value


# --- plugins --------------------------------------------------------------------------------

_PLUGIN_FIELDS = ("name", "id", "enabled", "config", "protocols", "tags", "instance_name",
                  "service", "route", "consumer", "created_at", "updated_at")
_PLUGIN_UNSUPPORTED = ("consumer_group", "ordering", "partials")


def _plugin_dict(current: _File, raw: Any, entity: str, *, service: str | None = None,
                 route: str | None = None, consumer: str | None = None) -> dict[str, Any]:
    """Check a plugin's shape now; its references are resolved once the file is applied."""
    fields = _Fields(current, raw, entity, _PLUGIN_FIELDS, _PLUGIN_UNSUPPORTED)
    name = fields.get("name", str)
    if name is None:
        raise fields.error("name", "required field missing")
    if name not in current.schemas:
        raise fields.error("name", f"unknown plugin {name!r} (gatewayd serves "
                                   f"{', '.join(sorted(current.schemas))}; others can be "
                                   "installed as Python packages)")
    return {"fields": fields, "service": _reference(fields, "service", service),
            "route": _reference(fields, "route", route),
            "consumer": _consumer_reference(fields, consumer)}


def _build_plugin(current: _File, state: _State, raw: dict[str, Any], entity: str) -> Plugin:
    fields: _Fields = raw["fields"]
    name = fields.raw["name"]
    schema = current.schemas[name]
    service = _resolve(fields, "service", raw["service"], state.services)
    route = _resolve(fields, "route", raw["route"], state.routes)
    consumer = _resolve_consumer(fields, raw["consumer"], state.consumers)
    if consumer is not None and schema.no_consumer:
        raise fields.error("consumer", f"value must be null: {name} cannot be scoped to a "
                                       "consumer (it is what finds the consumer)")
    try:
        config = schema.validate_config(fields.raw.get("config"))
        protocols = schema.validate_protocols(fields.raw.get("protocols"))
    except SchemaError as error:
        raise current.error(fields.entity, error.message, error.path) from None
    instance_name = fields.get("instance_name", str)
    if instance_name is not None and not _NAME.match(instance_name):
        raise fields.error("instance_name", "must contain only letters, digits and . - _ ~")
    plugin_id = fields.uuid() or str(uuid.uuid5(
        _PLUGIN_NAMESPACE, f"{name}|service={service or ''}|route={route or ''}|consumer={consumer or ''}"))
    return Plugin(name=name, id=plugin_id, enabled=fields.get("enabled", bool, True),
                  config=config, service=service, route=route, consumer=consumer,
                  protocols=protocols,
                  tags=fields.tags(), instance_name=instance_name, source=current.name)


def _resolve(fields: _Fields, key: str, reference: str | None,
             known: Mapping[str, Service] | Mapping[str, Route]) -> str | None:
    if reference is None:
        return None
    if reference.startswith("id:"):
        wanted = reference[3:]
        for name, entity in known.items():
            if entity.id == wanted:
                return name
        raise fields.error(key, f"no {key} has id {wanted!r}")
    if reference not in known:
        raise fields.error(key, f"{key} {reference!r} is not defined")
    return reference


def _consumer_reference(fields: _Fields, parent: str | None) -> str | None:
    """A plugin's ``consumer:``: a username or custom_id, or ``{username|custom_id|id: ...}``."""
    value = fields.get("consumer", (str, dict))
    if value is None:
        return parent
    if isinstance(value, dict):
        if len(value) != 1 or not set(value) <= {"username", "custom_id", "id"} \
                or not isinstance(next(iter(value.values())), str):
            raise fields.error("consumer", "expected a name, or a mapping with one of "
                                           "username, custom_id or id")
        value = ("id:" if "id" in value else "") + next(iter(value.values()))
    if parent is not None and value != parent:
        raise fields.error("consumer", f"a nested plugin belongs to {parent!r}, got {value!r}")
    return value


def _resolve_consumer(fields: _Fields, reference: str | None,
                      consumers: Mapping[str, Consumer]) -> str | None:
    """The consumer's name (how decK keys it), from any of the ways a plugin names it."""
    if reference is None:
        return None
    for name, consumer in consumers.items():
        if reference in (name, consumer.username, consumer.custom_id, f"id:{consumer.id}"):
            return name
    shown = reference[3:] if reference.startswith("id:") else reference
    raise fields.error("consumer", f"consumer {shown!r} is not defined")


# --- consumers ------------------------------------------------------------------------------

_CONSUMER_FIELDS = ("username", "custom_id", "id", "tags", "keyauth_credentials", "plugins",
                    "created_at", "updated_at")
_CONSUMER_UNSUPPORTED = ("groups", "basicauth_credentials", "hmacauth_credentials",
                         "jwt_secrets", "oauth2_credentials", "acls", "mtls_auth_credentials")
_CREDENTIAL_FIELDS = ("key", "id", "tags", "ttl", "created_at")


def _add_consumer(current: _File, raw: Any, entity: str) -> None:
    """A consumer and its key-auth credentials; a later file's consumer of the same
    username (else custom_id) replaces the earlier one, as decK matches them."""
    if isinstance(raw, dict):
        name = raw.get("username") or raw.get("custom_id")
        entity = f"{entity} ({name})" if isinstance(name, str) else entity
    fields = _Fields(current, raw, entity, _CONSUMER_FIELDS, _CONSUMER_UNSUPPORTED)
    username = fields.get("username", str)
    custom_id = fields.get("custom_id", str)
    if username is None and custom_id is None:
        raise fields.error(None, "at least one of these fields must be non-empty: "
                                 "'custom_id', 'username'")
    name = username or custom_id
    assert name is not None
    if name in current.consumers:
        raise fields.error("username" if username else "custom_id", "defined twice in this file")
    consumer_id = fields.uuid() or str(uuid.uuid5(_CONSUMER_NAMESPACE, f"consumer:{name}"))
    credentials = []
    for index, item in enumerate(fields.get("keyauth_credentials", list, [])):
        where = f"keyauth_credentials[{index}]"
        if not isinstance(item, dict):
            raise fields.error(where, f"expected a mapping, got {kind_of(item)}")
        for key in item:
            if key not in _CREDENTIAL_FIELDS:
                raise fields.error(f"{where}.{key}", "unknown field")
        key = item.get("key")
        if not isinstance(key, str) or not key:
            raise fields.error(f"{where}.key", "required: a non-empty string")
        if item.get("ttl") is not None:
            raise fields.error(f"{where}.ttl", "not served by gatewayd")
        credential_id = item.get("id")
        if credential_id is not None and (not isinstance(credential_id, str)
                                          or not _UUID.match(credential_id)):
            raise fields.error(f"{where}.id", "expected a UUID")
        tags = _tags(item.get("tags"))
        if tags is None:
            raise fields.error(f"{where}.tags", "expected a list of non-empty strings")
        credentials.append(KeyCredential(
            key=key, tags=tags,
            id=credential_id or str(uuid.uuid5(_CONSUMER_NAMESPACE, f"keyauth:{name}:{index}"))))
    current.consumers[name] = Consumer(
        id=consumer_id, username=username, custom_id=custom_id, tags=fields.tags(),
        keyauth_credentials=tuple(credentials), source=current.name)
    for index, plugin in enumerate(fields.get("plugins", list, [])):
        where = f"{entity}.plugins[{index}]"
        current.plugins.append((_plugin_dict(current, plugin, where, consumer=name), where))


def _check_keys(current: _File, consumers: Mapping[str, Consumer]) -> None:
    """Kong keeps key-auth keys unique; the message names the consumers, never the key."""
    owners: dict[str, str] = {}
    for name, consumer in consumers.items():
        for credential in consumer.keyauth_credentials:
            if credential.key in owners:
                raise current.error(f"consumers ({name})", "the same key is already a credential "
                                    f"of consumer {owners[credential.key]!r}; keys must be unique",
                                    "keyauth_credentials")
            owners[credential.key] = name


_CONSUMER_NAMESPACE = uuid.UUID("8d2e6f1a-3c4b-5d7e-8f90-1a2b3c4d5e6f")
