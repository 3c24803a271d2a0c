"""Anthropic content blocks <-> the stream events that carry them.

``fold`` builds the blocks a client ends up with from ``content_block_*`` events (the
non-streaming answer is folded from the stream translation); ``block_events`` streams a
finished block again, the way Anthropic streams each kind.
"""

import json

from gatewayd import jsonwire

Event = tuple[str, dict]


def fold(events: list[Event]) -> list[dict]:
    """The content blocks that ``content_block_start``/``_delta`` events describe, in order."""
    content: list[dict] = []
    arguments: dict[int, list[str]] = {}
    for name, data in events:
        if name == "content_block_start":
            content.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block = content[data["index"]]
            delta = data["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                arguments.setdefault(data["index"], []).append(delta["partial_json"])
            elif kind == "citations_delta":
                block["citations"] = [*(block.get("citations") or ()), delta["citation"]]
    for index, pieces in arguments.items():
        content[index]["input"] = json.loads("".join(pieces))
    return content


def block_events(index: int, block: dict) -> list[Event]:
    """``content_block_start``, its deltas and ``content_block_stop`` for one finished block."""
    kind = block["type"]
    deltas: list[dict] = []
    if kind == "text":
        start = {"type": "text", "text": ""}
        if "citations" in block:
            start["citations"] = []
            deltas.extend({"type": "citations_delta", "citation": c} for c in block["citations"])
        if block["text"]:
            deltas.append({"type": "text_delta", "text": block["text"]})
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        if block["thinking"]:
            deltas.append({"type": "thinking_delta", "thinking": block["thinking"]})
        if block["signature"]:
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        arguments = jsonwire.dumps(block["input"]).decode("utf-8")
        deltas.append({"type": "input_json_delta", "partial_json": arguments})
    else:
        start = block  # result blocks arrive whole in their start event
    events: list[Event] = [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
    ]
    events.extend(
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        for delta in deltas
    )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events
