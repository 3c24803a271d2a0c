"""JSON Schema (what Anthropic tools declare) to the OpenAPI-subset Schema Gemini's `parameters` takes.

Both APIs reject unknown keywords with a 400, so the output holds only fields of the
``Schema`` message (aiplatform v1 ``openapi.proto``; generativelanguage v1beta ``content.proto``).
Constraints that have no field become a note in the description so the model still sees them.

Why ``parameters`` and not ``parametersJsonSchema``: both APIs' FunctionDeclaration protos have
``parameters_json_schema`` (mutually exclusive with ``parameters``; the fake enforces that), but
Google documents it for newer models only and does not publish which JSON Schema keywords each
model honours, while ``parameters`` is one closed, published field table that every generation
(2.0 included) and both APIs validate the same way.  So gatewayd sends ``parameters`` and keeps
the meaning itself: ``$ref``/``$defs`` inlined, ``const`` as an enum, ``"null"`` in type arrays
as ``nullable``, ``allOf`` merged, dropped constraints spelled out in the description.
"""

import json
import marshal
import math
from functools import lru_cache
from typing import Any

from attrs import frozen

_COMMON = frozenset(
    {
        "type", "format", "title", "description", "nullable", "default", "items", "minItems",
        "maxItems", "enum", "properties", "propertyOrdering", "required", "minProperties",
        "maxProperties", "minimum", "maximum", "minLength", "maxLength", "pattern", "example",
        "anyOf",
    }
)
# Vertex also has additionalProperties, ref and defs; we inline references ourselves.
ALLOWED_KEYS = {"vertex": _COMMON | {"additionalProperties"}, "gemini": _COMMON}

_TYPES = {
    "string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
    "array": "ARRAY", "object": "OBJECT",
}
# Formats Gemini acts on; any other value is rejected for STRING ("only 'enum' and 'date-time'").
_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}
# Keywords copied through unchanged when the schema is otherwise understood.
_PLAIN = (
    "title", "description", "minItems", "maxItems", "minProperties", "maxProperties", "minimum",
    "maximum", "minLength", "maxLength", "pattern",
)
_MAX_DEPTH = 32


def clean_schema(schema: dict, api: str = "vertex") -> dict:
    """Return a Gemini ``Schema`` dict equivalent (as far as Gemini can say it) to ``schema``."""
    return _cleaner(schema, api, hoist=False).clean(schema, 0, ())


def _cleaner(schema: dict, api: str, hoist: bool) -> "_Cleaner":
    if api not in ALLOWED_KEYS:
        raise ValueError(f"unknown api {api!r}")
    defs = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update(schema[key])
    return _Cleaner(api, defs, hoist)


def schema_key(schema: dict) -> bytes:
    """A schema as a cache key, so a client's fixed tool list is cleaned once.

    marshal's version 2 keeps key order and tells 1, 1.0 and true apart, as JSON text does
    (version 3 on marks shared objects, which would make equal schemas differ), in a third of
    ``json.dumps``'s time: Claude Code sends some 25 tool schemas, 77 KB, with every request.
    """
    return marshal.dumps(schema, 2)


@lru_cache(maxsize=512)
def clean_schema_keyed(key: bytes, api: str) -> dict:
    """clean_schema of the schema ``key`` (:func:`schema_key`) stands for.

    The cached dict is shared: callers must not mutate it.
    """
    return clean_schema(marshal.loads(key), api)


@frozen
class Parameters:
    """A tool's ``input_schema`` as a FunctionDeclaration takes it.

    ``schema`` goes in ``parameters`` (always a top-level OBJECT, which Vertex requires), or, when
    ``json_schema`` is set, the client's schema goes unchanged in ``parametersJsonSchema``: the
    Gemini API refuses an OBJECT without properties in ``parameters``, so a free-form object
    (``additionalProperties`` only) cannot be said there.  ``rules`` are constraints Gemini cannot
    enforce (alternative sets of required properties), for the declaration's description.
    """

    schema: dict
    json_schema: dict | None = None
    rules: tuple[str, ...] = ()


@lru_cache(maxsize=512)
def declaration_parameters(key: bytes, api: str) -> Parameters:
    """A tool's input schema (as its :func:`schema_key`) for ``api``'s FunctionDeclaration.

    The cached value is shared: callers must not mutate it.
    """
    schema = marshal.loads(key)
    cleaner = _cleaner(schema, api, hoist=True)
    cleaned = cleaner.clean(schema, 0, ())
    if api == "gemini" and _has_empty_object(cleaned):
        return Parameters(cleaned, json_schema=schema)
    if "type" not in cleaned:
        cleaned["type"] = "OBJECT"
    return Parameters(cleaned, rules=tuple(cleaner.hoisted))


def _has_empty_object(schema: dict) -> bool:
    if schema.get("type") == "OBJECT" and not schema.get("properties"):
        return True
    nested = [*(schema.get("properties") or {}).values(), *(schema.get("anyOf") or ())]
    if isinstance(schema.get("items"), dict):
        nested.append(schema["items"])
    return any(_has_empty_object(sub) for sub in nested)


# Keywords a branch of anyOf/oneOf may hold and still be one alternative set of an object's
# properties (e.g. {"anyOf": [{"required": ["path"]}, {"required": ["url"]}]}).
_ALTERNATIVE_KEYS = frozenset({"type", "properties", "required", "title", "description"})


class _Cleaner:
    def __init__(self, api: str, defs: dict, hoist: bool = False) -> None:
        self.api = api
        self.defs = defs
        self.hoist = hoist  # top-level rules go to ``hoisted`` (the declaration's description)
        self.hoisted: list[str] = []

    def clean(self, schema: Any, depth: int, refs: tuple[str, ...]) -> dict:
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self._inline(schema, ref, depth, refs)
        if isinstance(schema.get("allOf"), list):
            schema = self._merge_all_of(schema)
        out: dict = {}
        notes: list[str] = []
        nullable = bool(schema.get("nullable"))

        types = schema.get("type")
        if isinstance(types, str):
            types = [types]
        if isinstance(types, list):
            if "null" in types:
                nullable = True
            types = [t for t in types if t in _TYPES]
        else:
            types = []

        keyword = "anyOf" if isinstance(schema.get("anyOf"), list) else "oneOf"
        branches = schema.get(keyword)
        if _alternative_objects(branches):
            schema = self._merge_alternatives(schema, keyword, depth, notes)
            types = ["object"]
            branches = None
        if isinstance(branches, list):
            kept = []
            for branch in branches:
                if isinstance(branch, dict) and branch.get("type") == "null" and len(branch) == 1:
                    nullable = True
                    continue
                kept.append(self.clean(branch, depth + 1, refs))
            kept = _join_string_enums(kept)
            if len(kept) == 1 and not types:
                out.update(kept[0])
            elif kept:
                out["anyOf"] = kept

        if len(types) > 1:
            out["anyOf"] = [{"type": _TYPES[t]} for t in types]
        elif types:
            out["type"] = _TYPES[types[0]]

        for key in _PLAIN:
            if key in schema:
                out[key] = schema[key]

        gtype = out.get("type")
        self._enum(schema, out, notes)
        if gtype == "INTEGER":
            _integer_bounds(schema, out)
        else:
            for key, word in (("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")):
                if _is_number(schema.get(key)):
                    notes.append(f"must be {word} {schema[key]}")
        if _is_number(schema.get("multipleOf")):
            notes.append(f"must be a multiple of {schema['multipleOf']}")

        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), ()):
            out["format"] = fmt

        if "default" in schema and schema["default"] is not None:
            out["default"] = schema["default"]
        examples = schema.get("examples")
        if "example" in schema:
            out["example"] = schema["example"]
        elif isinstance(examples, list) and examples:
            out["example"] = examples[0]

        props = schema.get("properties")
        if isinstance(props, dict):
            out["properties"] = {
                name: self.clean(sub, depth + 1, refs) for name, sub in props.items()
            }
            required = schema.get("required")
            if isinstance(required, list):
                present = [r for r in required if isinstance(r, str) and r in props]
                if present:
                    out["required"] = present
            if "type" not in out and "anyOf" not in out:
                out["type"] = "OBJECT"
        items = schema.get("items")
        if isinstance(items, list):
            items = items[0] if items else None
        if isinstance(items, dict):
            out["items"] = self.clean(items, depth + 1, refs)
        elif out.get("type") == "ARRAY":
            prefix = schema.get("prefixItems")
            if isinstance(prefix, list) and prefix:
                out["items"] = self.clean(prefix[0], depth + 1, refs)

        if self.api == "vertex" and "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if isinstance(extra, bool):
                out["additionalProperties"] = extra
            elif isinstance(extra, dict):
                cleaned = self.clean(extra, depth + 1, refs)
                out["additionalProperties"] = cleaned if cleaned else True

        if nullable:
            out["nullable"] = True
        if notes:
            text = "; ".join(notes)
            desc = out.get("description")
            out["description"] = f"{desc} ({text})" if desc else f"({text})"
        return out

    def _merge_alternatives(self, schema: dict, keyword: str, depth: int, notes: list[str]) -> dict:
        """Object alternatives as one OBJECT: every property, required only what all branches
        require; which set is required is stated, since Gemini's anyOf needs typed branches and
        cannot say "one of these required sets"."""
        branches = schema[keyword]
        merged = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        props = dict(merged.get("properties") or {})
        for branch in branches:
            for name, sub in (branch.get("properties") or {}).items():
                props.setdefault(name, sub)
        sets = [[r for r in branch.get("required") or () if isinstance(r, str)] for branch in branches]
        common = [r for r in sets[0] if all(r in other for other in sets[1:])]
        required = list(merged.get("required") or [])
        required.extend(r for r in common if r not in required)
        merged["properties"] = props
        if required:
            merged["required"] = required
        alternatives = [[r for r in group if r not in required] for group in sets]
        if any(alternatives) and (keyword == "oneOf" or all(alternatives)):
            word = "exactly one" if keyword == "oneOf" else "at least one"
            listed = " or ".join("(" + ", ".join(group) + ")" for group in alternatives)
            rule = f"{word} of these sets of properties is required: {listed}"
            if self.hoist and depth == 0:
                self.hoisted.append(rule[:1].upper() + rule[1:] + ".")
            else:
                notes.append(rule)
        return merged

    def _inline(self, schema: dict, ref: str, depth: int, refs: tuple[str, ...]) -> dict:
        name = ref.rsplit("/", 1)[-1]
        target = self.defs.get(name)
        if target is None or ref in refs:
            # Unknown or recursive reference: Gemini cannot express it, so accept any object.
            out = {"type": "OBJECT"}
        else:
            out = self.clean(target, depth + 1, refs + (ref,))
        for key in ("description", "title"):
            if isinstance(schema.get(key), str):
                out[key] = schema[key]
        return out

    def _merge_all_of(self, schema: dict) -> dict:
        """Fold allOf branches into one schema: properties and required are unioned, first value wins."""
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        props = dict(merged.get("properties") or {})
        required = list(merged.get("required") or [])
        for branch in schema["allOf"]:
            if isinstance(branch, dict) and isinstance(branch.get("$ref"), str):
                branch = self.defs.get(branch["$ref"].rsplit("/", 1)[-1], {})
            if not isinstance(branch, dict):
                continue
            if isinstance(branch.get("allOf"), list):
                branch = self._merge_all_of(branch)
            for key, value in branch.items():
                if key == "properties" and isinstance(value, dict):
                    for name, sub in value.items():
                        props.setdefault(name, sub)
                elif key == "required" and isinstance(value, list):
                    required.extend(r for r in value if r not in required)
                else:
                    merged.setdefault(key, value)
        if props:
            merged["properties"] = props
        if required:
            merged["required"] = required
        return merged

    def _enum(self, schema: dict, out: dict, notes: list[str]) -> None:
        values = None
        if "const" in schema:
            values = [schema["const"]]
        elif isinstance(schema.get("enum"), list):
            values = schema["enum"]
        if values is None:
            return
        if None in values:
            out["nullable"] = True
            values = [v for v in values if v is not None]
        gtype = out.get("type")
        if all(isinstance(v, str) for v in values) and gtype in (None, "STRING"):
            out["type"] = "STRING"
            out["enum"] = list(values)
        else:
            # Gemini enums are strings only: say the allowed values instead.
            notes.append("one of " + ", ".join(json.dumps(v) for v in values))


def _alternative_objects(branches: Any) -> bool:
    """Whether ``branches`` are alternative property sets of one object (no other type)."""
    return (
        isinstance(branches, list)
        and len(branches) > 1
        and all(
            isinstance(b, dict)
            and b.keys() <= _ALTERNATIVE_KEYS
            and b.get("type", "object") == "object"
            and ("required" in b or "properties" in b)
            for b in branches
        )
    )


def _join_string_enums(branches: list[dict]) -> list[dict]:
    """anyOf of plain string enums (e.g. an enum plus a const) becomes one enum."""
    if len(branches) < 2 or not all(set(b) <= {"type", "enum"} and "enum" in b for b in branches):
        return branches
    values: list[str] = []
    for branch in branches:
        values.extend(v for v in branch["enum"] if v not in values)
    return [{"type": "STRING", "enum": values}]


def _integer_bounds(schema: dict, out: dict) -> None:
    """An exclusive bound on an integer is an inclusive bound one step inside it."""
    low, high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(low):
        value = math.floor(low) + 1
        out["minimum"] = max(out.get("minimum", value), value)
    if _is_number(high):
        value = math.ceil(high) - 1
        out["maximum"] = min(out.get("maximum", value), value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
