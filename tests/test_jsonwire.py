"""JSON on the wire (gatewayd.jsonwire): orjson's bytes, and the standard library's for what
orjson refuses, so that anything a client could send can be said again."""

from __future__ import annotations

import datetime
import json

from gatewayd import jsonwire


def test_compact_utf8_as_the_standard_library_writes_it():
    value = {"text": "héllo \u2028 \"q\" \\ \x01", "n": [1, 2.5, None, True], 3: "int key"}
    assert jsonwire.dumps(value) == json.dumps(
        value, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def test_integers_past_64_bits_and_deep_nesting_still_encode():
    big = {"input": {"id": 2**70}}
    assert json.loads(jsonwire.dumps(big)) == big
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    assert json.loads(jsonwire.dumps(deep)) == deep


def test_a_log_line_is_one_line_and_writes_unknown_types_as_text():
    when = datetime.timezone.utc
    encoded = jsonwire.line({"a": when, "big": 2**70})
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert json.loads(encoded) == {"a": str(when), "big": 2**70}


def test_upstream_json_is_read_from_bytes_or_text_lone_surrogates_included():
    assert jsonwire.loads(b'{"a":[1,"\xc3\xa9"]}') == jsonwire.loads('{"a":[1,"é"]}') == {"a": [1, "é"]}
    assert jsonwire.loads(b'["\\ud800"]') == ["\ud800"]  # orjson refuses it; json takes it
