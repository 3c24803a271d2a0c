"""clean_schema: JSON Schema in, only the Schema fields Gemini knows out."""

import json
from pathlib import Path

import pytest

from gatewayd.translate.schema import ALLOWED_KEYS, clean_schema

FIXTURE = Path(__file__).parent / "fixtures" / "claude_code" / "seed_question.json"


def unknown_keys(schema: dict, api: str, path: str = "") -> list[str]:
    """Every key the API would answer with 'Unknown name', with its path."""
    bad = [f"{path}.{k}" for k in schema if k not in ALLOWED_KEYS[api]]
    for name, sub in (schema.get("properties") or {}).items():
        bad += unknown_keys(sub, api, f"{path}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        bad += unknown_keys(schema["items"], api, f"{path}.items")
    for i, sub in enumerate(schema.get("anyOf") or ()):
        bad += unknown_keys(sub, api, f"{path}.anyOf.{i}")
    if isinstance(schema.get("additionalProperties"), dict):
        bad += unknown_keys(schema["additionalProperties"], api, f"{path}.additionalProperties")
    if "type" in schema:
        assert schema["type"] in {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"}, path
    if "enum" in schema:
        assert all(isinstance(v, str) for v in schema["enum"]), path
    return bad


@pytest.mark.parametrize("api", ["vertex", "gemini"])
def test_claude_code_tool_schemas_clean(api):
    tools = json.loads(FIXTURE.read_text())["body"]["tools"]
    for tool in tools:
        cleaned = clean_schema(tool["input_schema"], api)
        assert unknown_keys(cleaned, api) == [], tool["name"]


def test_nullable_type_array_and_notes():
    out = clean_schema(
        {"type": ["string", "null"], "format": "uri", "exclusiveMinimum": 3, "description": "d"},
        "vertex",
    )
    assert out == {"type": "STRING", "nullable": True, "description": "d (must be > 3)"}


def test_integer_exclusive_bounds_become_inclusive():
    out = clean_schema({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}, "vertex")
    assert out == {"type": "INTEGER", "minimum": 1, "maximum": 9}


def test_const_and_enum_union_becomes_one_string_enum():
    out = clean_schema(
        {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "string", "const": "c"}]}, "vertex"
    )
    assert out == {"type": "STRING", "enum": ["a", "b", "c"]}


def test_non_string_enum_is_described():
    out = clean_schema({"type": "integer", "enum": [1, 2]}, "vertex")
    assert out == {"type": "INTEGER", "description": "(one of 1, 2)"}


def test_refs_inlined_and_recursion_bounded():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "type": "object",
        "properties": {"head": {"$ref": "#/$defs/Node", "description": "first"}},
    }
    out = clean_schema(schema, "vertex")
    head = out["properties"]["head"]
    assert head["description"] == "first"
    assert head["properties"]["next"] == {"type": "OBJECT"}
    assert "$defs" not in out and "$schema" not in out


def test_one_of_and_all_of():
    out = clean_schema(
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"oneOf": [{"type": "integer"}, {"type": "null"}]}}, "required": ["b"]},
            ]
        },
        "gemini",
    )
    assert out == {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING"}, "b": {"type": "INTEGER", "nullable": True}},
        "required": ["a", "b"],
    }


def test_additional_properties_only_on_vertex():
    schema = {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": {}}
    assert clean_schema(schema, "vertex")["additionalProperties"] is True
    assert "additionalProperties" not in clean_schema(schema, "gemini")


def test_examples_default_and_formats():
    out = clean_schema(
        {"type": "number", "format": "double", "default": 1.5, "examples": [2.5], "multipleOf": 0.5},
        "vertex",
    )
    assert out == {
        "type": "NUMBER", "format": "double", "default": 1.5, "example": 2.5,
        "description": "(must be a multiple of 0.5)",
    }
    assert "format" not in clean_schema({"type": "string", "format": "email"}, "vertex")
    assert clean_schema({"type": "string", "format": "date-time"}, "vertex")["format"] == "date-time"


def test_required_names_must_exist():
    out = clean_schema({"type": "object", "properties": {"a": {}}, "required": ["a", "b"]}, "vertex")
    assert out["required"] == ["a"]
