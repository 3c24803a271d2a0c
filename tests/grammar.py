"""The Anthropic Messages stream grammar, checked on every stream a test sees.

message_start first; content blocks opened at the next index, given only deltas of their own
kind, and closed before the next opens; one message_delta after the last block; one
message_stop, last.  A stream may instead end in one ``error`` event.  ``ping`` may come
anywhere between message_start and the end.
"""

from collections.abc import Iterable
from typing import Any

_DELTAS = {
    "text": {"text_delta", "citations_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "redacted_thinking": set(),
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
}


def check_stream(events: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Raise AssertionError naming the first event that breaks the grammar."""
    events = list(events)
    assert events, "empty stream"
    assert events[0][0] == "message_start", f"first event is {events[0][0]}, not message_start"
    open_block: tuple[int, str] | None = None
    next_index = 0
    state = "blocks"  # -> "delta" after message_delta -> "done" after message_stop / error
    for position, (name, data) in enumerate(events[1:], start=1):
        where = f"event {position} ({name} {data})"
        assert state != "done", f"{where} after the end of the message"
        assert data.get("type") == name, f"{where}: data type {data.get('type')!r} differs from the event name"
        if name == "ping":
            continue
        if name == "error":
            state = "done"
            continue
        if name == "content_block_start":
            assert state == "blocks", f"{where} after message_delta"
            assert open_block is None, f"{where} while block {open_block[0]} is open"
            assert data["index"] == next_index, f"{where}: expected index {next_index}"
            open_block = (next_index, data["content_block"]["type"])
            next_index += 1
        elif name == "content_block_delta":
            assert open_block is not None and data["index"] == open_block[0], f"{where}: block {data['index']} is not open"
            allowed = _DELTAS.get(open_block[1], set())
            assert data["delta"]["type"] in allowed, f"{where}: a {data['delta']['type']} in a {open_block[1]} block"
        elif name == "content_block_stop":
            assert open_block is not None and data["index"] == open_block[0], f"{where}: block {data['index']} is not open"
            open_block = None
        elif name == "message_delta":
            assert state == "blocks", f"{where}: a second message_delta"
            assert open_block is None, f"{where} while block {open_block[0]} is open"
            state = "delta"
        elif name == "message_stop":
            assert state == "delta", f"{where} without a message_delta before it"
            state = "done"
        else:
            raise AssertionError(f"{where}: not a Messages stream event")
    assert state == "done", f"the stream ends without message_stop (last event: {events[-1][0]})"


_RAW = frozenset({"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop", "error"})


def check_sdk_stream(events: Iterable[Any]) -> list[Any]:
    """Check the raw events among what the anthropic SDK's stream yields; return them all.

    ``MessageStream`` also yields its own derived events (``text``, ``input_json``, ...): those
    are not on the wire and are skipped here.
    """
    events = list(events)
    check_stream((event.type, event.model_dump()) for event in events if event.type in _RAW)
    return events
