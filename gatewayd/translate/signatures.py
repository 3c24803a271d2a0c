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

    def remember(self, text: TextDigest, signature: str) -> None:
        key = text.digest()
        self._entries[key] = signature
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def recall(self, text: str) -> str | None:
        key = TextDigest.of(text).digest()
        signature = self._entries.get(key)
        if signature is not None:
            self._entries.move_to_end(key)
        return signature

    def __len__(self) -> int:
        return len(self._entries)


class TextDigest:
    """The sha256 of a text's stripped form, fed piece by piece as a stream arrives.

    It keeps no more of the text than its trailing whitespace, so a long answer
    streamed to a slow client costs no memory for the sake of its signature.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._started = False
        self._pending = ""  # whitespace that counts only if more text follows

    @classmethod
    def of(cls, text: str) -> "TextDigest":
        digest = cls()
        digest.update(text)
        return digest

    def update(self, piece: str) -> None:
        if not self._started:
            piece = piece.lstrip()
            if not piece:
                return
            self._started = True
        body = piece.rstrip()
        if body:
            self._hash.update((self._pending + body).encode("utf-8"))
            self._pending = piece[len(body):]
        else:
            self._pending += piece

    def digest(self) -> bytes:
        return self._hash.digest()
