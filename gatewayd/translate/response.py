"""Gemini ``generateContent`` answer -> Anthropic Message.

The answer is run through the stream translator as a single chunk and the events folded
into a message, so streaming and non-streaming clients see the same blocks and stop reasons.
An answer of plain text alone, the most common, is put together directly: folding its
events would give one text block, and the same stop reason.
"""

from collections.abc import Callable

from .blocks import fold
from .grounding import translator_for
from .request import Prepared
from .signatures import SignatureMemory
from .stream import BROKEN_CALL_REASONS, new_tool_id, stop_reason, usage_from_gemini

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
    plain = _plain_text(resp, prepared)
    if plain is not None:
        text, finish_reason = plain
        metadata = resp.get("usageMetadata")
        content = [{"type": "text", "text": text}] if text else []
        stop, sequence = stop_reason(finish_reason, False, False), None
        usage = usage_from_gemini(metadata if isinstance(metadata, dict) else {})
    else:
        translator = translator_for(
            prepared, message_id=message_id, model=model, new_tool_id=new_tool_id, memory=memory
        )
        content = fold(translator.feed(resp) + translator.finish())
        stop, sequence, usage = translator.stop_reason, translator.stop_sequence, translator.usage
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": sequence,
        "usage": usage,
    }


def _plain_text(resp: dict, prepared: Prepared) -> tuple[str, str] | None:
    """The text and ``finishReason`` of an answer that is text parts alone and says how it
    ended; None when the translator has more to do (thoughts, signatures, calls, stop
    sequences to look for, grounding, a broken call, no ``finishReason``)."""
    if prepared.stop_sequences or prepared.grounded:
        return None
    candidates = resp.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else None
    if not isinstance(candidate, dict):
        return None
    finish_reason = candidate.get("finishReason")
    if not isinstance(finish_reason, str) or not finish_reason or finish_reason in BROKEN_CALL_REASONS:
        return None
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list | None):
        return None
    texts = []
    for part in parts or ():
        if not isinstance(part, dict) or part.keys() != {"text"} or not isinstance(part["text"], str):
            return None
        texts.append(part["text"])
    return "".join(texts), finish_reason


def count_tokens_from_gemini(resp: dict) -> dict:
    """A countTokens answer -> the ``/v1/messages/count_tokens`` answer."""
    return {"input_tokens": int(resp.get("totalTokens") or 0)}
