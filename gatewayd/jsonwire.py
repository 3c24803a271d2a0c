"""JSON to and from the bytes on the wire, with orjson.

orjson writes JSON about ten times as fast as the standard library's encoder
(a 2.4 KB log record: 1.4 µs against 15), and straight to UTF-8 bytes, which
is the form every answer, event, upstream body and log line leaves in.  What
orjson refuses and JSON allows, integers past 64 bits or nesting deeper than
254 levels, goes through the standard library, so nothing a client sent
becomes unsayable.  Client requests are still parsed by the standard library
(:func:`json.loads` keeps lone surrogates and big integers as they came);
:func:`loads` is for what Google sends, and falls back the same way.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "line", "loads"]

#: Non-string keys as the standard library writes them (``{1: x}`` as ``{"1": x}``).
_OPTIONS = orjson.OPT_NON_STR_KEYS

def loads(data: bytes | str) -> Any:
    """The upstream's JSON as Python values; what orjson refuses and the standard library
    takes (an escaped lone surrogate) is read by the latter."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)

_fallback = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_fallback_any = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return _fallback(value).encode("utf-8")


def line(value: Any) -> bytes:
    """``value`` as one line of compact JSON (a log record); what JSON has no type for is
    written as its ``str``."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return (_fallback_any(value) + "\n").encode("utf-8")
