"""A bounded memory of the thought signatures that came on final text parts.

A signature Gemini puts on the text that ends an answer has nowhere to go in
Anthropic's content without adding a block after the text, and clients such
as Claude Code take the last block as the answer.  So those signatures are
kept here, keyed by a digest of the text, and restored when the client sends
that text back.  Gemini does not require them (only function-call signatures
are validated), so a restart or another instance losing them costs nothing
but the hint.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict


class SignatureMemory:
    """Least-recently-used map from an answer's text to its signature."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, str] = OrderedDict()

    def remember(self, text: str, signature: str) -> None:
        key = _key(text)
        self._entries[key] = signature
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def recall(self, text: str) -> str | None:
        key = _key(text)
        signature = self._entries.get(key)
        if signature is not None:
            self._entries.move_to_end(key)
        return signature

    def __len__(self) -> int:
        return len(self._entries)


def _key(text: str) -> bytes:
    return hashlib.sha256(text.strip().encode("utf-8")).digest()
