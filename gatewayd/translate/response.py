"""Gemini ``generateContent`` answer -> Anthropic Message.

The answer is run through the stream translator as a single chunk and the events folded
into a message, so streaming and non-streaming clients see the same blocks and stop reasons.
"""

import json
from collections.abc import Callable

from .request import Prepared
from .signatures import SignatureMemory
from .stream import StreamTranslator, new_tool_id, usage_from_gemini

__all__ = ["count_tokens_from_gemini", "message_from_gemini", "usage_from_gemini"]


def message_from_gemini(
    resp: dict,
    prepared: Prepared,
    *,
    message_id: str,
    model: str,
    new_tool_id: Callable[[], str] = new_tool_id,
    memory: SignatureMemory | None = None,
) -> dict:
    """A complete Anthropic Message for one Gemini answer (or a blocked prompt: a refusal)."""
    translator = StreamTranslator(
        prepared, message_id=message_id, model=model, new_tool_id=new_tool_id, memory=memory
    )
    translator.start()
    events = translator.feed(resp) + translator.finish()
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
    for index, pieces in arguments.items():
        content[index]["input"] = json.loads("".join(pieces))
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": translator.stop_reason,
        "stop_sequence": translator.stop_sequence,
        "usage": translator.usage,
    }


def count_tokens_from_gemini(resp: dict) -> dict:
    """A countTokens answer -> the ``/v1/messages/count_tokens`` answer."""
    return {"input_tokens": int(resp.get("totalTokens") or 0)}
