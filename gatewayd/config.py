"""Kong declarative (decK) configuration, read into frozen values.

gatewayd is configured with the same state files a Kong AI Gateway user feeds to
``deck gateway apply``: ``_format_version: "3.0"`` plus ``services``, ``routes`` and
``plugins``.  A directory is read like successive applies of its files in name
order: a later service or route of the same name replaces the earlier one, a
later plugin with the same name and scope replaces the earlier one.

``${{ env "DECK_NAME" }}`` is expanded as decK does (only ``DECK_`` names, an unset
one is an error), with one deliberate difference: the value is inserted into the
parsed YAML value rather than into the file text, so a multi-line, quote-laden
service-account JSON inside ``"..."`` arrives byte for byte, and YAML errors never
print it.
"""

from __future__ import annotations

import math
import re
import secrets as _secrets
import uuid
from decimal import Decimal
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml
from attrs import evolve, field, frozen

from gatewayd.plugin_schemas import PLUGIN_SCHEMAS, SchemaError

__all__ = ["Config", "ConfigError", "Consumer", "KeyCredential", "Plugin", "Route", "Service",
           "load_config"]


class ConfigError(Exception):
    """A state file gatewayd (or Kong) would refuse.

    ``str()`` reads ``<file>: <entity>: <field>: <problem>`` and never holds the
    value of an environment variable the file expanded.
    """

    def __init__(self, file: str, message: str, *, entity: str | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.entity = entity
        self.field = field
        self.message = message
        super().__init__(": ".join(part for part in (file, entity, field, message) if part))


_DEFAULT_PORTS = {"https": 443, "grpcs": 443, "wss": 443, "tls": 443}


@frozen
class Service:
    """A Kong Gateway Service: where matching requests go (the AI plugins may override it)."""

    name: str
    host: str
    protocol: str = "http"
    port: int = 80
    path: str | None = None
    retries: int = 5
    connect_timeout: int = 60000
    write_timeout: int = 60000
    read_timeout: int = 60000
    enabled: bool = True
    tls_verify: bool | None = None
    tls_verify_depth: int | None = None
    tags: tuple[str, ...] = ()
    id: str | None = None
    source: str = ""

    @property
    def url(self) -> str:
        port = "" if _DEFAULT_PORTS.get(self.protocol, 80) == self.port else f":{self.port}"
        return f"{self.protocol}://{self.host}{port}{self.path or ''}"


@frozen
class Route:
    """A Kong Route: which requests reach a service; ``paths`` match by prefix."""

    name: str
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None
    strip_path: bool = True
    service: str | None = None
    preserve_host: bool = False
    protocols: tuple[str, ...] = ("http", "https")
    hosts: tuple[str, ...] | None = None
    headers: Mapping[str, tuple[str, ...]] | None = field(default=None, hash=False)
    regex_priority: int = 0
    path_handling: str = "v0"
    https_redirect_status_code: int = 426
    request_buffering: bool = True
    response_buffering: bool = True
    tags: tuple[str, ...] = ()
    id: str | None = None
    source: str = ""


@frozen
class Plugin:
    """A configured plugin; ``config`` is Kong-validated with every default filled in."""

    name: str
    id: str
    enabled: bool
    config: Mapping[str, Any] = field(hash=False)
    service: str | None = None
    route: str | None = None
    protocols: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    instance_name: str | None = None
    source: str = ""


@frozen
class KeyCredential:
    """A key-auth credential; ``repr`` never shows the key."""

    key: str = field(repr=False)
    id: str
    tags: tuple[str, ...] = ()


@frozen
class Consumer:
    """A Kong Consumer: who a request comes from, once key-auth has found its key."""

    id: str
    username: str | None = None
    custom_id: str | None = None
    tags: tuple[str, ...] = ()
    keyauth_credentials: tuple[KeyCredential, ...] = ()
    source: str = ""

    @property
    def name(self) -> str:
        """What decK keys a consumer by: its username, else its custom_id."""
        return self.username or self.custom_id or self.id


@frozen
class Config:
    """One consistent snapshot of the gateway's entities; a reload builds a new one."""

    services: Mapping[str, Service] = field(hash=False)
    routes: tuple[Route, ...]
    plugins: tuple[Plugin, ...]
    sources: tuple[str, ...]
    files: Mapping[str, Mapping[str, Any]] = field(hash=False, factory=dict)
    """Per source file: its ``_format_version`` and, if given, ``_transform`` and ``_info``."""
    consumers: Mapping[str, Consumer] = field(hash=False, factory=dict)
    """By name (username, else custom_id), as decK matches them across files."""

    def plugins_for(self, route: Route) -> Mapping[str, Plugin]:
        """The enabled plugins that run for ``route``, one per name, Kong's precedence:
        route and service > route > service > global."""
        best: dict[str, tuple[int, Plugin]] = {}
        for plugin in self.plugins:
            if not plugin.enabled:
                continue
            if plugin.route is not None and plugin.route != route.name:
                continue
            if plugin.service is not None and plugin.service != route.service:
                continue
            rank = 2 * (plugin.route is not None) + (plugin.service is not None)
            held = best.get(plugin.name)
            if held is None or rank > held[0]:
                best[plugin.name] = (rank, plugin)
        return MappingProxyType({name: best[name][1] for name in sorted(best)})


def load_config(path: str, environ: Mapping[str, str]) -> Config:
    """Read a decK state file, or a directory of them applied in name order."""
    state = _State()
    for file in _state_files(path):
        text = _read_text(file)
        document, secrets = _load_yaml(text, environ, file)
        try:
            _apply_file(state, file, document)
        except ConfigError as error:
            raise _redacted(error, secrets) from None
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


def _redacted(error: ConfigError, secrets: Mapping[str, str]) -> ConfigError:
    """Belt and braces: an expanded value that reached a message is put back as its template."""
    parts = [error.entity, error.field, error.message]
    for value, template in sorted(secrets.items(), key=lambda item: -len(item[0])):
        if len(value) >= 6:
            parts = [part.replace(value, template) if part else part for part in parts]
    return ConfigError(error.file, parts[2] or "", entity=parts[0], field=parts[1])


# --- decK templates and YAML ----------------------------------------------------------------
#
# decK renders each file with Go's text/template, delimiters ${{ }}, before parsing it
# (go-database-reconciler, pkg/file/template.go): env "NAME" reads NAME, which must start
# with DECK_ and be set; toBool/toInt/toFloat convert; indent N pads continuation lines;
# lines whose first non-blank character is "#" are left alone.  Here each expression
# becomes a placeholder, the YAML is parsed, and the placeholders are swapped for the
# values: a plain scalar that is exactly one expression is typed from the value as YAML
# would type it after decK's text substitution (8192 -> int, true -> bool), anything
# else is the value verbatim, whatever the quoting around it.

_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")
_ACTION = re.compile(r'''env\s+(?:"([^"\\]*)"|`([^`]*)`)((?:\s*\|\s*(?:toBool|toInt|toFloat|indent\s+\d+))*)''')
_PIPE = re.compile(r"\|\s*(toBool|toInt|toFloat|indent)\s*(\d+)?")
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


@frozen
class _Expansion:
    template: str
    text: str
    block_text: str
    """The value in a block scalar (| or >), where decK's indent padding is consumed."""


def _load_yaml(text: str, environ: Mapping[str, str], file: str) -> tuple[Any, dict[str, str]]:
    """Parse one state file with its ${{ env }} expressions expanded; also return the
    expanded values (value -> template) so no message can show them."""
    nonce = _secrets.token_hex(6)
    while nonce in text:
        nonce = _secrets.token_hex(6)
    marker = f"gwdeckenv{nonce}"
    expansions: dict[str, _Expansion] = {}
    rendered = _render(text, environ, file, marker, expansions)
    shown = {placeholder: expansion.template for placeholder, expansion in expansions.items()}
    loader = _Loader(rendered, {p: e.text for p, e in expansions.items()})
    try:
        node = loader.get_single_node()
        if node is not None:
            _substitute(node, marker, expansions, set())
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        raise ConfigError(file, _yaml_message(error, rendered, marker, shown)) from None
    except yaml.YAMLError as error:
        raise ConfigError(file, f"invalid YAML: {_unmark(str(error), shown)}") from None
    finally:
        loader.dispose()
    values = {}
    for expansion in expansions.values():
        values[expansion.text] = values[expansion.block_text] = expansion.template
    return document, values


def _render(text: str, environ: Mapping[str, str], file: str, marker: str,
            expansions: dict[str, _Expansion]) -> str:
    out: list[str] = []
    trim_next = False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        position = 0
        for match in _EXPRESSION.finditer(line):
            literal = line[position:match.start()]
            out.append(literal.lstrip() if trim_next else literal)
            body = match.group(1)
            if body.startswith("- "):
                _trim_tail(out)
                body = body[2:]
            trim_next = body.endswith(" -")
            if trim_next:
                body = body[:-2]
            placeholder = f"{marker}x{len(expansions)}x"
            expansions[placeholder] = _expand(body, match.group(0), environ, file, number)
            out.append(placeholder)
            position = match.end()
        rest = line[position:]
        if "${{" in rest:
            raise ConfigError(file, f"line {number}: unclosed ${{{{ (a template expression "
                                    f"ends with }}}} on the same line)")
        if trim_next and rest.strip() == "":
            out.append("")
            continue
        out.append(rest.lstrip() if trim_next else rest)
        trim_next = False
    return "".join(out)


def _trim_tail(out: list[str]) -> None:
    while out:
        out[-1] = out[-1].rstrip()
        if out[-1]:
            return
        out.pop()


def _expand(body: str, template: str, environ: Mapping[str, str], file: str,
            line: int) -> _Expansion:
    match = _ACTION.fullmatch(body.strip())
    if match is None:
        raise ConfigError(file, f"line {line}: unsupported template expression {template} "
                                f'(gatewayd expands env "DECK_NAME", optionally piped to '
                                f"toBool, toInt, toFloat or indent N)")
    name = match.group(1) if match.group(1) is not None else match.group(2)
    if not name.startswith("DECK_"):
        raise ConfigError(file, f"line {line}: environment variables in the state file must be "
                                f"prefixed with 'DECK_', found: '{name}'")
    if name not in environ:
        raise ConfigError(file, f"line {line}: environment variable '{name}' present in state "
                                f"file but not set")
    pipes = _PIPE.findall(match.group(3))
    return _Expansion(template=template,
                      text=_pipeline(environ[name], pipes, name, file, line, indent=True),
                      block_text=_pipeline(environ[name], pipes, name, file, line, indent=False))


def _pipeline(value: Any, pipes: list[tuple[str, str]], name: str, file: str, line: int,
              *, indent: bool) -> str:
    for function, argument in pipes:
        if not isinstance(value, str):
            raise ConfigError(file, f"line {line}: {function} needs a string, got {_kind(value)}")
        try:
            if function == "toBool":
                value = _GO_BOOLS[value]
            elif function == "toInt":
                if not re.fullmatch(r"[+-]?\d+", value):
                    raise ValueError
                value = int(value)
            elif function == "toFloat":
                value = float(value)
            elif not argument:
                raise ConfigError(file, f"line {line}: indent needs a number of spaces")
            elif indent:
                value = value.replace("\n", "\n" + " " * int(argument))
        except (KeyError, ValueError):
            raise ConfigError(file, f"line {line}: the value of {name} cannot be read by "
                                    f"{function}") from None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    """A float as Go's text/template prints it (%v: shortest, exponent past 1e21)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    exact = Decimal(repr(value)).normalize()
    exponent = exact.adjusted()
    if -4 <= exponent < 21:
        return format(exact, "f")
    sign, digits, _ = exact.as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


class _Loader(yaml.SafeLoader):
    """SafeLoader that types a plain scalar holding one placeholder by the value it stands for."""

    def __init__(self, stream: str, exact: Mapping[str, str]) -> None:
        super().__init__(stream)
        self._exact = exact

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit and implicit[0] and value in self._exact:
            text = self._exact[value]
            if "\n" in text or "\r" in text:
                return self.DEFAULT_SCALAR_TAG
            return super().resolve(kind, text, implicit)
        return super().resolve(kind, value, implicit)


def _substitute(node: yaml.Node, marker: str, expansions: Mapping[str, _Expansion],
                seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if marker in node.value:
            block = node.style in ("|", ">")
            value = re.sub(
                re.escape(marker) + r"x\d+x",
                lambda m: expansions[m.group(0)].block_text if block else expansions[m.group(0)].text,
                node.value)
            if block:
                # Chomping ran on the placeholder; decK's YAML would run it on the value.
                value = value.rstrip("\n") + ("\n" if node.value.endswith("\n") else "")
            node.value = value
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _substitute(item, marker, expansions, seen)
    elif isinstance(node, yaml.MappingNode):
        for key, item in node.value:
            _substitute(key, marker, expansions, seen)
            _substitute(item, marker, expansions, seen)


def _yaml_message(error: yaml.MarkedYAMLError, rendered: str, marker: str,
                  shown: Mapping[str, str]) -> str:
    """Where and what, without the snippet PyYAML prints (it could hold an expanded line)."""
    mark = error.problem_mark or error.context_mark
    where = ""
    if mark is not None:
        where = f"line {mark.line + 1}"
        lines = rendered.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        if marker not in line[:mark.column]:
            where += f", column {mark.column + 1}"
        where += ": "
    parts = [part for part in (error.context, error.problem) if part]
    return f"invalid YAML at {where}{_unmark('; '.join(parts), shown)}"


def _unmark(message: str, shown: Mapping[str, str]) -> str:
    for placeholder, template in shown.items():
        message = message.replace(placeholder, template)
    return message


# --- applying one file ----------------------------------------------------------------------

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

    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self.routes: dict[str, Route] = {}
        self.plugins: dict[tuple[str, str | None, str | None], Plugin] = {}
        self.consumers: dict[str, Consumer] = {}
        self.sources: list[str] = []
        self.files: dict[str, Mapping[str, Any]] = {}

    def freeze(self) -> Config:
        return Config(services=MappingProxyType(dict(self.services)),
                      routes=tuple(self.routes.values()), plugins=tuple(self.plugins.values()),
                      sources=tuple(self.sources), files=MappingProxyType(dict(self.files)),
                      consumers=MappingProxyType(dict(self.consumers)))


class _File:
    """What one file contributes, checked against the state it is applied to."""

    def __init__(self, name: str, select_tags: tuple[str, ...],
                 defaults: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
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
        raise ConfigError(file, f"a state file is a mapping, got {_kind(document)}")
    meta = _file_meta(file, document)
    for key in document:
        if key in _TOP_LEVEL:
            continue
        if key in _DECK_KEYS_UNSUPPORTED:
            if document[key] in (None, [], {}, ""):
                continue
            raise ConfigError(file, "not supported by gatewayd yet", field=str(key))
        raise ConfigError(file, f"unknown top-level key (decK state files have "
                                f"{', '.join(_TOP_LEVEL)}, ...)", field=str(key))
    info = meta.get("_info", {})
    current = _File(file, tuple(info.get("select_tags") or ()), info.get("defaults") or {})
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
    for raw, entity in current.plugins:
        plugin = _build_plugin(current, state, raw, entity)
        state.plugins[(plugin.name, plugin.service, plugin.route)] = plugin
    state.consumers.update(current.consumers)
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
        shown = repr(version) if isinstance(version, str) else f"{version!r} (a {_kind(version)})"
        raise ConfigError(file, f'gatewayd reads Kong 3.x state: expected the string "3.0", '
                                f'got {shown}', field="_format_version")
    meta: dict[str, Any] = {"_format_version": version}
    if "_transform" in document:
        if not isinstance(document["_transform"], bool):
            raise ConfigError(file, f"expected a boolean, got {_kind(document['_transform'])}",
                              field="_transform")
        meta["_transform"] = document["_transform"]
    if "_info" in document:
        meta["_info"] = _info(file, document["_info"])
    return meta


def _info(file: str, info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    if not isinstance(info, dict):
        raise ConfigError(file, f"expected a mapping, got {_kind(info)}", field="_info")
    for key in info:
        if key not in _INFO_KEYS:
            raise ConfigError(file, "unknown field", field=f"_info.{key}")
    if _tags(info.get("select_tags")) is None:
        raise ConfigError(file, "expected a list of non-empty strings", field="_info.select_tags")
    defaults = info.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(file, f"expected a mapping, got {_kind(defaults)}", field="_info.defaults")
    for key, value in defaults.items():
        if key not in _INFO_DEFAULTS_KEYS:
            raise ConfigError(file, "unknown field", field=f"_info.defaults.{key}")
        if not isinstance(value, dict):
            raise ConfigError(file, f"expected a mapping, got {_kind(value)}",
                              field=f"_info.defaults.{key}")
    return dict(info)


def _entity_list(current: _File, document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise current.error(None, f"expected a list, got {_kind(value)}", key)
    return value


def _kind(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)


class _Fields:
    """Typed reads from one entity's mapping, with errors that name the entity and field."""

    def __init__(self, current: _File, raw: Any, entity: str, known: Iterable[str],
                 unsupported: Iterable[str] = ()) -> None:
        if not isinstance(raw, dict):
            raise current.error(entity, f"expected a mapping, got {_kind(raw)}")
        self.current, self.raw = current, raw
        name = raw.get("name")
        self.entity = f"{entity} ({name})" if isinstance(name, str) else entity
        known = set(known)
        for key in raw:
            if key in unsupported and raw[key] not in (None, [], {}):
                raise self.error(str(key), "not supported by gatewayd yet")
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
            raise self.error(key, f"expected {_KIND_WORDS.get(wanted, wanted)}, got {_kind(value)}")
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
            raise self.error(key, f"expected a list of strings, got {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{key}[{index}]", f"expected a non-empty string, got {_kind(item)}")
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
        tls_verify_depth=fields.integer("tls_verify_depth", None, 0, 64),
        tags=fields.tags(), id=fields.uuid(), source=current.name)
    current.services[name] = service
    for index, route in enumerate(fields.get("routes", list, [])):
        _add_route(current, route, f"{entity}.routes[{index}]", name)
    for index, plugin in enumerate(fields.get("plugins", list, [])):
        where = f"{entity}.plugins[{index}]"
        current.plugins.append((_plugin_dict(current, plugin, where, service=name), where))


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
    port = fields.integer("port", _DEFAULT_PORTS.get(protocol, 80), 0, 65535)
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
        port = _DEFAULT_PORTS.get(protocol, 80)
    return protocol, parts.hostname, port, parts.path or None


# --- routes ---------------------------------------------------------------------------------

_ROUTE_FIELDS = ("name", "id", "protocols", "methods", "hosts", "paths", "headers",
                 "https_redirect_status_code", "regex_priority", "strip_path", "path_handling",
                 "preserve_host", "request_buffering", "response_buffering", "tags", "service",
                 "plugins", "created_at", "updated_at")
_ROUTE_UNSUPPORTED = ("snis", "sources", "destinations", "expression", "priority")
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
    for path in paths:
        if path.startswith("~"):
            raise fields.error("paths", f"regex paths are not supported yet, got {path!r}")
        if not path.startswith("/"):
            raise fields.error("paths", f"should start with: / (got {path!r})")
    methods = fields.strings("methods")
    for method in methods or ():
        if not re.fullmatch(r"[A-Z]+", method):
            raise fields.error("methods", f"invalid value: {method!r} (methods are upper case)")
    hosts = fields.strings("hosts")
    headers = _headers(fields)
    if {"http", "https"} & set(protocols) and not (paths or methods or hosts or headers):
        raise fields.error(None, "must set one of 'methods', 'hosts', 'headers', 'paths' "
                                 "when 'protocols' is 'http' or 'https'")
    route = Route(
        name=name, paths=paths, methods=methods, service=service,
        strip_path=fields.get("strip_path", bool, True),
        preserve_host=fields.get("preserve_host", bool, False),
        protocols=protocols, hosts=hosts, headers=headers,
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
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise fields.error(f"headers.{name}", "expected a list of strings")
        headers[name.lower()] = tuple(values)
    return MappingProxyType(headers)


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
                  "service", "route", "created_at", "updated_at")
_PLUGIN_UNSUPPORTED = ("consumer", "consumer_group", "ordering", "partials")


def _plugin_dict(current: _File, raw: Any, entity: str, *, service: str | None = None,
                 route: str | None = None) -> dict[str, Any]:
    """Check a plugin's shape now; its references are resolved once the file is applied."""
    fields = _Fields(current, raw, entity, _PLUGIN_FIELDS, _PLUGIN_UNSUPPORTED)
    name = fields.get("name", str)
    if name is None:
        raise fields.error("name", "required field missing")
    if name not in PLUGIN_SCHEMAS:
        raise fields.error("name", f"unknown plugin {name!r} (gatewayd supports "
                                   f"{', '.join(sorted(PLUGIN_SCHEMAS))})")
    return {"fields": fields, "service": _reference(fields, "service", service),
            "route": _reference(fields, "route", route)}


def _build_plugin(current: _File, state: _State, raw: dict[str, Any], entity: str) -> Plugin:
    fields: _Fields = raw["fields"]
    name = fields.raw["name"]
    schema = PLUGIN_SCHEMAS[name]
    service = _resolve(fields, "service", raw["service"], state.services)
    route = _resolve(fields, "route", raw["route"], state.routes)
    try:
        config = schema.validate_config(fields.raw.get("config"))
        protocols = schema.validate_protocols(fields.raw.get("protocols"))
    except SchemaError as error:
        raise current.error(fields.entity, error.message, error.path) from None
    instance_name = fields.get("instance_name", str)
    if instance_name is not None and not _NAME.match(instance_name):
        raise fields.error("instance_name", "must contain only letters, digits and . - _ ~")
    plugin_id = fields.uuid() or str(uuid.uuid5(
        _PLUGIN_NAMESPACE, f"{name}|service={service or ''}|route={route or ''}|consumer="))
    return Plugin(name=name, id=plugin_id, enabled=fields.get("enabled", bool, True),
                  config=config, service=service, route=route, protocols=protocols,
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


# --- consumers ------------------------------------------------------------------------------

_CONSUMER_FIELDS = ("username", "custom_id", "id", "tags", "keyauth_credentials", "created_at",
                    "updated_at")
_CONSUMER_UNSUPPORTED = ("plugins", "groups", "basicauth_credentials", "hmacauth_credentials",
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
            raise fields.error(where, f"expected a mapping, got {_kind(item)}")
        for key in item:
            if key not in _CREDENTIAL_FIELDS:
                raise fields.error(f"{where}.{key}", "unknown field")
        key = item.get("key")
        if not isinstance(key, str) or not key:
            raise fields.error(f"{where}.key", "required: a non-empty string")
        if item.get("ttl") is not None:
            raise fields.error(f"{where}.ttl", "not supported by gatewayd yet")
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
