"""JSON to and from the bytes on the wire, with orjson.

orjson writes JSON about ten times as fast as the standard library's encoder
(a 2.4 KB log record: 1.4 µs against 15), and straight to UTF-8 bytes, which
is the form every answer, event, upstream body and log line leaves in.  What
orjson refuses and JSON allows, integers past 64 bits or nesting deeper than
254 levels, goes through the standard library, so nothing a client sent
becomes unsayable; so do keys that are not strings, which the standard library
writes as strings (``{1: x}`` as ``{"1": x}``), so that orjson need not look
for them in every dict.  Reading works the same way round: orjson reads what it
can, and what it refuses (integers past 64 bits, an escaped lone surrogate, a
byte-order mark) the standard library reads as it always did.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "line", "loads", "loads_client"]


def loads(data: bytes | str) -> Any:
    """The upstream's JSON as Python values; what orjson refuses and the standard library
    takes (an escaped lone surrogate) is read by the latter."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def loads_client(data: bytes) -> Any:
    """A client's request body, read as the standard library reads it.

    orjson reads it unless it holds a run of 19 digits or more: orjson would make an
    integer past 64 bits a float, where a client's tool input must come back as it
    was sent.  What orjson refuses the standard library reads, or refuses with its
    own message.  ``NaN`` and ``Infinity``, which the standard library would take,
    are not JSON (nor Anthropic's), and neither reader takes them.
    """
    if _LONG_RUN not in data.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data, parse_constant=_not_json)


#: A digit run that may be an integer past 64 bits (2**63 has 19 digits), found with every
#: digit made a zero: a tenth of the time of a regular expression's search, which on a
#: 77 KB Claude Code body took longer than parsing it.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not a JSON value")


_fallback = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_fallback_any = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _fallback(value).encode("utf-8")


def line(value: Any) -> bytes:
    """``value`` as one line of compact JSON (a log record); what JSON has no type for is
    written as its ``str``."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return (_fallback_any(value) + "\n").encode("utf-8")
