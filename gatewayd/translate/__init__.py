"""Anthropic Messages API <-> Gemini (Vertex AI v1, Gemini API v1beta): pure dict translation."""

from .errors import TranslationError
from .grounding import GroundedTranslator, translator_for
from .models import ModelProfile
from .request import (
    SIGNATURE_NEXT,
    SIGNATURE_PREVIOUS,
    SIGNATURE_THOUGHT,
    SKIP_SIGNATURE,
    Prepared,
    count_tokens_body,
    prepare,
)
from .response import count_tokens_from_gemini, message_from_gemini, usage_from_gemini
from .schema import clean_schema
from .signatures import SignatureMemory
from .stream import GeminiSSEDecoder, StreamTranslator, encode_event, new_tool_id

__all__ = [
    "SIGNATURE_NEXT",
    "SIGNATURE_PREVIOUS",
    "SIGNATURE_THOUGHT",
    "SKIP_SIGNATURE",
    "GeminiSSEDecoder",
    "GroundedTranslator",
    "ModelProfile",
    "Prepared",
    "SignatureMemory",
    "StreamTranslator",
    "TranslationError",
    "clean_schema",
    "count_tokens_body",
    "count_tokens_from_gemini",
    "encode_event",
    "message_from_gemini",
    "new_tool_id",
    "prepare",
    "translator_for",
    "usage_from_gemini",
]
