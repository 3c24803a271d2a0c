"""A small DSL for Kong's plugin config schemas, and the validator that applies them.

Kong validates a plugin's ``config`` against the plugin's schema and fills in
defaults before any request sees it; gatewayd does the same so a decK file that
Kong would refuse is refused here too, and the edge reads one complete dict.
Each plugin's room (``gatewayd/plugins/...``) transcribes its published schema
(Kong/developer.konghq.com, ``app/_schemas/gateway/plugins/<version>/<Plugin>.json``)
with these helpers: every field name, type, default, ``one_of`` list, bound and
required flag.  Kong's rules for absent
values are kept: a missing field takes its default, else null; a missing
record is filled with its own defaults unless it is ``nullable`` (Kong's
``required = false`` records such as ``embeddings`` or ``model.options.gemini``,
which stay null); strings must not be empty unless ``len_min=0``.

No silent ignore: a field gatewayd accepts but does not serve carries
``refused="why"``, and a value outside its default (or null, or an empty list)
is refused at load with "not served by gatewayd (why)"; single values of a
served field are refused the same way through ``refused_values``.  A decK dump,
which writes every default, still loads.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from attrs import field, frozen


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


class SchemaError(ValueError):
    """A value does not fit its schema; ``path`` locates it (``config.targets[0].weight``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@frozen
class Field:
    """One node of a schema tree; build it with the helpers below."""

    type: str
    required: bool = False
    default: Any = NO_DEFAULT
    nullable: bool = False
    one_of: tuple[Any, ...] | None = None
    between: tuple[float, float] | None = None
    len_min: int | None = None
    match: str | None = None
    match_err: str = "invalid value"
    encrypted: bool = False
    referenceable: bool = False
    fields: tuple[tuple[str, Field], ...] = ()
    elements: Field | None = None
    values: Field | None = None
    #: Why gatewayd does not serve this field: any value but its default is refused at load.
    refused: str | None = None
    #: Values of an otherwise served field that are refused at load, each with its reason.
    refused_values: tuple[tuple[Any, str], ...] = ()

    @property
    def secret(self) -> bool:
        """Never echo the value of an encrypted field in an error message."""
        return self.encrypted

    def field_named(self, name: str) -> Field | None:
        for key, sub in self.fields:
            if key == name:
                return sub
        return None


def _refusing(kw: dict[str, Any]) -> dict[str, Any]:
    """``refusing={value: why}`` as the frozen ``refused_values`` pairs."""
    refusing = kw.pop("refusing", None)
    if refusing:
        kw["refused_values"] = tuple(refusing.items())
    return kw


def string(**kw: Any) -> Field:
    return Field("string", **_refusing(kw))


def integer(**kw: Any) -> Field:
    return Field("integer", **_refusing(kw))


def number(**kw: Any) -> Field:
    return Field("number", **_refusing(kw))


def boolean(**kw: Any) -> Field:
    return Field("boolean", **_refusing(kw))


def anything(**kw: Any) -> Field:
    return Field("any", **_refusing(kw))


def record(fields: Mapping[str, Field], **kw: Any) -> Field:
    return Field("record", fields=tuple(fields.items()), **_refusing(kw))


def array(elements: Field, **kw: Any) -> Field:
    return Field("array", elements=elements, **_refusing(kw))


def set_of(elements: Field, **kw: Any) -> Field:
    return Field("set", elements=elements, **_refusing(kw))


def map_of(values: Field, **kw: Any) -> Field:
    return Field("map", values=values, **_refusing(kw))


def secret_string(**kw: Any) -> Field:
    """Kong's ``encrypted = true, referenceable = true`` strings (keys, passwords)."""
    return Field("string", encrypted=True, referenceable=True, **_refusing(kw))


def ref_string(**kw: Any) -> Field:
    """Kong's ``referenceable = true`` strings (may name a vault secret)."""
    return Field("string", referenceable=True, **_refusing(kw))


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "record", type(None): "null"}


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _shown(value: Any, spec: Field) -> str:
    """The value as an error message may show it: never a secret, never a blob."""
    if spec.secret:
        return f"a {type_name(value)}"
    if isinstance(value, str) and (len(value) > 80 or "\n" in value):
        return f"a string of {len(value)} characters"
    return _quote(value)


def validate(spec: Field, value: Any, path: str) -> Any:
    """Check ``value`` against ``spec`` and return it with Kong's defaults filled in."""
    if value is None:
        return _missing(spec, path)
    if spec.refused is not None and value != spec.default and value not in ([], {}):
        raise SchemaError(path, f"not served by gatewayd ({spec.refused})")
    kind = spec.type
    if kind == "any":
        return copy.deepcopy(value)
    if kind == "record":
        return _record(spec, value, path)
    if kind in ("array", "set"):
        return _array(spec, value, path)
    if kind == "map":
        return _map(spec, value, path)
    value = _scalar(spec, value, path)
    _check_value(spec, value, path)
    return value


def _missing(spec: Field, path: str) -> Any:
    if spec.default is not NO_DEFAULT:
        return copy.deepcopy(spec.default)
    if spec.required:
        raise SchemaError(path, "required field missing")
    if spec.type == "record" and not spec.nullable:
        return _record(spec, {}, path)
    return None


def _record(spec: Field, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected a record, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str) or spec.field_named(key) is None:
            raise SchemaError(f"{path}.{key}", "unknown field")
    return {name: validate(sub, value.get(name), f"{path}.{name}") for name, sub in spec.fields}


def _array(spec: Field, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise SchemaError(path, f"expected {'a set' if spec.type == 'set' else 'an array'}, "
                                f"got {type_name(value)}")
    assert spec.elements is not None
    items = []
    for index, item in enumerate(value):
        checked = validate(spec.elements, item, f"{path}[{index}]")
        if checked is None:
            raise SchemaError(f"{path}[{index}]", "null is not allowed in a list")
        if spec.type == "set" and checked in items:
            continue
        items.append(checked)
    if spec.len_min is not None and len(items) < spec.len_min:
        raise SchemaError(path, f"length must be at least {spec.len_min}")
    return items


def _map(spec: Field, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected a map, got {type_name(value)}")
    assert spec.values is not None
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise SchemaError(path, f"map keys must be strings, got {type_name(key)}")
        result[key] = validate(spec.values, item, f"{path}.{key}")
    return result


def _scalar(spec: Field, value: Any, path: str) -> Any:
    kind = spec.type
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "integer" and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if kind == "number" and not isinstance(value, bool) and isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(path, "expected a finite number")
        return value
    article = "an" if kind == "integer" else "a"
    raise SchemaError(path, f"expected {article} {kind}, got {type_name(value)}")


def _check_value(spec: Field, value: Any, path: str) -> None:
    if spec.one_of is not None and value not in spec.one_of:
        choices = ", ".join(_quote(choice) for choice in spec.one_of)
        raise SchemaError(path, f"expected one of {choices}, got {_shown(value, spec)}")
    for refused, why in spec.refused_values:
        if value == refused:
            raise SchemaError(path, f"{_shown(value, spec)} is not served by gatewayd ({why})")
    if spec.between is not None:
        low, high = spec.between
        if not low <= value <= high:
            raise SchemaError(path, f"value should be between {low} and {high}, "
                                    f"got {_shown(value, spec)}")
    if spec.type == "string":
        len_min = 1 if spec.len_min is None else spec.len_min
        if len(value) < len_min:
            raise SchemaError(path, f"length must be at least {len_min}")
        if spec.match is not None and not re.search(spec.match, value):
            raise SchemaError(path, spec.match_err)


@frozen
class PluginSchema:
    """A plugin's ``config`` tree and the ``protocols`` it may run on."""

    name: str
    config: Field
    protocols_allowed: tuple[str, ...]
    protocols_default: tuple[str, ...]
    #: Kong's ``consumer = typedefs.no_consumer``: authentication plugins cannot be scoped
    #: to the consumer they are meant to find.
    no_consumer: bool = False
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, eq=False)

    def validate_config(self, raw: Any) -> dict[str, Any]:
        """The plugin's ``config`` with Kong defaults; raises SchemaError."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise SchemaError("config", f"expected a record, got {type_name(raw)}")
        if self.normalize is not None:
            raw = self.normalize(raw)
        checked = validate(self.config, raw, "config")
        assert isinstance(checked, dict)
        return checked

    def validate_protocols(self, raw: Any) -> tuple[str, ...]:
        spec = set_of(string(one_of=self.protocols_allowed), default=list(self.protocols_default))
        return tuple(validate(spec, raw, "protocols"))
