"""Gemini ``generateContent`` answer -> Anthropic Message.

The answer is run through the stream translator as a single chunk and the events folded
into a message, so streaming and non-streaming clients see the same blocks and stop reasons.
"""

from collections.abc import Callable

from .blocks import fold
from .grounding import translator_for
from .request import Prepared
from .signatures import SignatureMemory
from .stream import new_tool_id, usage_from_gemini

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
    translator = translator_for(
        prepared, message_id=message_id, model=model, new_tool_id=new_tool_id, memory=memory
    )
    content = fold(translator.feed(resp) + translator.finish())
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
