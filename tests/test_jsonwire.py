"""JSON on the wire (gatewayd.jsonwire): orjson's bytes, and the standard library's for what
orjson refuses, so that anything a client could send can be said again."""

from __future__ import annotations

import datetime
import json

from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert jsonwire.line({"a": when, 7: "int key"}) == b'{"a":"%s","7":"int key"}\n' % str(when).encode()


def test_upstream_json_is_read_from_bytes_or_text_lone_surrogates_included():
    assert jsonwire.loads(b'{"a":[1,"\xc3\xa9"]}') == jsonwire.loads('{"a":[1,"é"]}') == {"a": [1, "é"]}
    assert jsonwire.loads(b'["\\ud800"]') == ["\ud800"]  # orjson refuses it; json takes it


CLIENT_BODIES = [
    b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"h\\u00e9"}]}',
    b'{"id": 123456789012345678901234567890}',  # past 64 bits: orjson refuses, json reads
    b'["\\ud800", "\\udfff x"]',  # escaped lone surrogates
    b'\xef\xbb\xbf{"bom": true}',  # a UTF-8 byte-order mark
    b'{"a": 1, "a": 2}',  # a repeated name: the last one, as json reads it
    b'{"big": 1e400, "neg": -0, "f": 1.5E-3, "deep": [[[[[]]]]]}',
    b' \t\r\n{"space": "around"} \n',
]


def test_a_client_body_reads_as_the_standard_library_reads_it():
    for raw in CLIENT_BODIES:
        assert jsonwire.loads_client(raw) == json.loads(raw), raw
        assert repr(jsonwire.loads_client(raw)) == repr(json.loads(raw)), raw  # -0 stays 0, 1e400 inf


def test_a_client_body_that_is_not_json_is_refused_nan_and_infinity_included():
    for raw in (b'{"t": NaN}', b'{"t": Infinity}', b'[-Infinity]', b'{"a":', b'{"a": 1} x', b"\xff"):
        try:
            jsonwire.loads_client(raw)
        except ValueError:
            continue
        raise AssertionError(f"{raw!r} was read")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_any_json_a_client_sends_reads_the_same_as_with_the_standard_library(value, ascii_only):
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert repr(jsonwire.loads_client(raw)) == repr(json.loads(raw))


def test_upstream_json_keeps_an_integer_past_64_bits_whole_from_bytes_or_text():
    """orjson reads 2**64 as a float; a model's call arguments must keep it as it came."""
    raw = '{"args": {"id": 18446744073709551616, "n": 9223372036854775807, "x": 1.5}}'
    for data in (raw, raw.encode()):
        assert repr(jsonwire.loads(data)) == repr(json.loads(raw))
    assert jsonwire.exact(raw.encode()) is jsonwire.INEXACT
    assert jsonwire.exact(b'{"a": 1}') == {"a": 1}
    assert jsonwire.exact(b'{"a": "\xed\xa0\x80"}') is jsonwire.INEXACT  # not UTF-8
