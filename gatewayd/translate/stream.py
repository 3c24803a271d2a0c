"""Gemini ``streamGenerateContent?alt=sse`` -> Anthropic Messages stream events, sans I/O.

``GeminiSSEDecoder`` turns bytes into chunk dicts; ``StreamTranslator`` turns chunk dicts into
``(event, data)`` pairs. A non-streaming answer is the same translation fed one chunk
(``response.message_from_gemini``), so both paths agree on blocks and stop reasons.

Stop sequences are not sent upstream (Gemini would strip the match and report a plain STOP,
so an answer cut by a sequence could not be told from one that ended): every client sequence
is found in the text here, the text is cut before it, and a short tail is held back while
streaming so a sequence split across chunks is caught.
"""

from collections.abc import Callable

from gatewayd import jsonwire
from gatewayd.ids import base62_id

from .errors import TranslationError
from .signatures import SignatureMemory, TextDigest
from .request import SIGNATURE_NEXT, SIGNATURE_PREVIOUS, SIGNATURE_THOUGHT, Prepared

Event = tuple[str, dict]

REFUSAL_REASONS = frozenset(
    {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
    }
)
# Gemini ends the turn without a usable call; the client gets a note instead of silence.
BROKEN_CALL_REASONS = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})


def new_tool_id() -> str:
    """A fresh Anthropic-style tool_use id (Gemini's calls carry none on Vertex v1)."""
    return "toolu_" + base62_id(24)


def usage_from_gemini(usage_metadata: dict) -> dict:
    """Gemini usageMetadata -> Anthropic usage; cached prompt tokens are cache reads, the
    tool-use prompt (grounding) is input, thoughts are output (both billed so by Google)."""
    prompt = (usage_metadata.get("promptTokenCount") or 0) + (
        usage_metadata.get("toolUsePromptTokenCount") or 0
    )
    cached = usage_metadata.get("cachedContentTokenCount") or 0
    output = (usage_metadata.get("candidatesTokenCount") or 0) + (
        usage_metadata.get("thoughtsTokenCount") or 0
    )
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def stop_reason(finish_reason: str | None, blocked: bool, tool_used: bool) -> str:
    """Anthropic's stop_reason for how Gemini ended a turn, no stop sequence matched: its
    ``finishReason``, whether the prompt was blocked, and whether a tool call came."""
    if finish_reason is None and blocked:
        return "refusal"
    if finish_reason in REFUSAL_REASONS:
        return "refusal"
    if finish_reason == "MAX_TOKENS":
        return "max_tokens"
    if tool_used:
        return "tool_use"
    return "end_turn"


def encode_event(event: str, data: dict) -> bytes:
    """One Anthropic SSE event on the wire."""
    return b"event: %s\ndata: %s\n\n" % (event.encode("ascii"), jsonwire.dumps(data))


class GeminiSSEDecoder:
    """Server-sent events (``data: {json}`` + blank line, CRLF or LF) -> chunk dicts.

    Any split of the byte stream gives the same chunks: line ends are made LF as bytes
    arrive (a CR ending one read swallows an LF starting the next), only text up to the
    last blank line is parsed, and the rest waits.  Each event is one ``json.loads`` of
    text decoded once per read: this runs for every chunk of every stream.
    """

    def __init__(self) -> None:
        self._buffer = b""  # the event being received, line ends already LF
        self._cr = False  # the last byte fed was a CR

    def feed(self, data: bytes) -> list[dict]:
        if not self._buffer and not self._cr and data[:6] == b"data: ":
            # What nearly every read of a stream is: one whole event of one data line.
            # Its JSON is parsed from the bytes in place; anything else, or anything
            # wrong, takes the general path below, which says what was wrong.
            if data[-4:] == b"\r\n\r\n":
                payload = data[6:-4]
            elif data[-2:] == b"\n\n" and data[-3:-2] != b"\r":
                payload = data[6:-2]
            else:
                payload = None
            if payload is not None and b"\n" not in payload and b"\r" not in payload:
                chunk = jsonwire.exact(payload)  # strict UTF-8, as the general path's decode
                if isinstance(chunk, dict):
                    return [chunk]
        if self._cr and data[:1] == b"\n":
            data = data[1:]
        if not data:
            return []
        self._cr = data[-1:] == b"\r"
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        scan = max(len(self._buffer) - 1, 0)  # the buffer holds no blank line
        buffer = self._buffer + data if self._buffer else data
        end = buffer.rfind(b"\n\n", scan)
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 2 :]
        return self._events(buffer[:end])

    def close(self) -> list[dict]:
        """End of stream: an event not followed by a blank line still counts."""
        buffer, self._buffer, self._cr = self._buffer, b"", False
        return self._events(buffer) if buffer else []

    def _events(self, block: bytes) -> list[dict]:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TranslationError("stream", f"invalid UTF-8 in an upstream event: {e}") from None
        chunks: list[dict] = []
        for event in text.split("\n\n"):
            if event.startswith("data: ") and "\n" not in event:
                payload = event[6:]  # the usual shape: one data line
            else:
                data = []
                for line in event.split("\n"):
                    if line.startswith("data:"):
                        data.append(line[6:] if line.startswith("data: ") else line[5:])
                    # Comments (":...") and other fields (event:, id:, retry:) carry nothing for us.
                if not data:
                    continue
                payload = "\n".join(data)
            try:
                chunk = jsonwire.loads(payload)
            except ValueError as e:
                raise TranslationError("stream", f"invalid JSON in an upstream event: {e}") from None
            if not isinstance(chunk, dict):
                raise TranslationError("stream", "upstream event is not a JSON object")
            chunks.append(chunk)
        return chunks


class StreamTranslator:
    """Gemini response chunks -> Anthropic stream events, in order.

    ``feed`` starts the message itself if ``start`` was not called first (then message_start
    carries the prompt token count of the first chunk).
    """

    def __init__(
        self,
        prepared: Prepared,
        *,
        message_id: str,
        model: str,
        new_tool_id: Callable[[], str] = new_tool_id,
        memory: SignatureMemory | None = None,
    ) -> None:
        self._prepared = prepared
        self._memory = memory
        self._message_id = message_id
        self._model = model
        self._new_tool_id = new_tool_id
        self._sequences = prepared.stop_sequences
        self._hold = max((len(s) for s in self._sequences), default=1) - 1
        self._started = False
        self._finished = False
        self._index = -1
        self._open: str | None = None  # "text" | "thinking" while a block is open
        self._signed = False  # the open thinking block has its signature
        self._last_block: str | None = None  # the kind of the block closed last
        self._text_signature: str | None = None  # for the open text block, sent after it
        # The open text block's text so far, as a digest: kept only for ``memory``.
        self._block_text: TextDigest | None = TextDigest() if memory is not None else None
        self._trailing: tuple[TextDigest | None, str] | None = None  # (text, signature) of a closed text block
        self._tail = ""  # text held back while looking for stop sequences
        self._usage_metadata: dict = {}
        self._usage: dict | None = None  # usage_from_gemini(self._usage_metadata), once asked for
        self.response_model: str | None = None  # the modelVersion Gemini reports
        self._finish_reason: str | None = None
        self._finish_message: str | None = None
        self._block_reason: str | None = None
        self._tool_used = False
        self._matched: str | None = None  # stop sequence found in the text
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None

    @property
    def usage(self) -> dict:
        """Anthropic's usage so far: a dict of the caller's own, translated once per usageMetadata."""
        if self._usage is None:
            self._usage = usage_from_gemini(self._usage_metadata)
        return dict(self._usage)

    @property
    def usage_metadata(self) -> dict:
        """Gemini's latest ``usageMetadata`` (a running total: each chunk's replaces the last)."""
        return self._usage_metadata

    @property
    def complete(self) -> bool:
        """Whether the upstream said its answer is over (a stream cut short did not)."""
        return self._finish_reason is not None or self._block_reason is not None

    def start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        usage = self.usage
        usage["output_tokens"] = max(usage["output_tokens"], 1)
        message = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def feed(self, chunk: dict) -> list[Event]:
        events = [] if self._started else self._start_after(chunk)
        if isinstance(chunk.get("modelVersion"), str):
            self.response_model = chunk["modelVersion"]
        self._take_usage(chunk)
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self._block_reason = feedback["blockReason"]
        candidates = chunk.get("candidates")
        if not candidates:
            return events
        candidate = candidates[0]
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if parts and self._matched is None:
            for part in parts:
                self._part(part, events)
                if self._matched is not None:
                    break
        if candidate.get("finishReason"):
            self._finish_reason = candidate["finishReason"]
            self._finish_message = candidate.get("finishMessage")
        return events

    def finish(self) -> list[Event]:
        """Close the open block and end the message; call once, after the last chunk."""
        if self._finished:
            return []
        self._finished = True
        events = self.start()
        self._close(events)
        reason, sequence = self._stop()
        if self._finish_reason in BROKEN_CALL_REASONS:
            note = f"[gatewayd: Gemini ended the turn with {self._finish_reason}"
            if self._finish_message:
                note += f": {self._finish_message}"
            self._open_block(events, {"type": "text", "text": ""}, "text")
            self._delta(events, {"type": "text_delta", "text": note + "]"})
            self._close(events)
        if self._trailing is not None and self._memory is not None:
            text, signature = self._trailing
            assert text is not None  # kept whenever there is a memory
            self._memory.remember(text, signature)
        self._trailing = None
        self.stop_reason, self.stop_sequence = reason, sequence
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": self.usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start_after(self, chunk: dict) -> list[Event]:
        self._take_usage(chunk)
        return self.start()

    def _take_usage(self, chunk: dict) -> None:
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict) and usage is not self._usage_metadata:
            self._usage_metadata, self._usage = usage, None

    def _stop(self) -> tuple[str, str | None]:
        if self._matched is not None:
            return "stop_sequence", self._matched
        return stop_reason(self._finish_reason, bool(self._block_reason), self._tool_used), None

    def _part(self, part: dict, events: list[Event]) -> None:
        signature = part.get("thoughtSignature")
        if part.get("thought"):
            if self._open != "thinking" or self._signed:
                self._close(events)
                self._open_block(events, {"type": "thinking", "thinking": "", "signature": ""}, "thinking")
            text = part.get("text")
            if text:
                self._delta(events, {"type": "thinking_delta", "thinking": text})
            if signature:
                self._delta(events, {"type": "signature_delta", "signature": SIGNATURE_THOUGHT + signature})
                self._signed = True
            return
        if "text" in part and signature and (part["text"] or "text" in (self._open, self._last_block)):
            # A text part's signature follows its text block, so the text stays
            # one block, as Anthropic streams it; it goes back on that text part.
            self._text(part["text"], events)
            if self._matched is not None:
                # Cut at a stop sequence: the answer is over and its text stays last.
                self._trailing = (self._block_text, signature)
                return
            if self._open == "text":
                self._text_signature = signature
            else:
                # Its text block is closed (a thought came between): the signature goes on a
                # block of its own that hands it back to that text part.
                self._signature(SIGNATURE_PREVIOUS + signature, events)
            return
        if signature:
            self._signature(SIGNATURE_NEXT + signature, events)
        if "text" in part:
            text = part["text"]
            if text:
                self._text(text, events)
        elif "functionCall" in part:
            if self._tool_used and self._prepared.single_tool_call:
                return  # the client asked for one call per turn (disable_parallel_tool_use)
            self._close(events)
            call = part["functionCall"]
            name = call.get("name", "")
            block = {
                "type": "tool_use",
                "id": self._new_tool_id(),
                "name": self._prepared.tool_names.get(name, name),
                "input": {},
            }
            self._open_block(events, block, "tool_use")
            args = jsonwire.dumps(call.get("args") or {}).decode("utf-8")
            self._delta(events, {"type": "input_json_delta", "partial_json": args})
            self._close(events)
            self._tool_used = True

    def _signature(self, signature: str, events: list[Event]) -> None:
        """A signature riding on a non-thought part goes on a thinking block of its own."""
        if self._open != "thinking" or self._signed:
            self._close(events)
            self._open_block(events, {"type": "thinking", "thinking": "", "signature": ""}, "thinking")
        self._delta(events, {"type": "signature_delta", "signature": signature})
        self._close(events)

    def _text(self, text: str, events: list[Event]) -> None:
        if not self._sequences:
            self._emit_text(text, events)
            return
        buffer = self._tail + text
        found = -1
        for sequence in self._sequences:
            at = buffer.find(sequence)
            if at >= 0 and (found < 0 or at < found):
                found, self._matched = at, sequence
        if found >= 0:
            self._tail = ""
            self._emit_text(buffer[:found], events)
            self._close(events)
            return
        keep = min(self._hold, len(buffer))
        tail = buffer[len(buffer) - keep :] if keep else ""
        # The old tail is in ``buffer``: forget it before a block closes and flushes it.
        self._tail = ""
        self._emit_text(buffer[: len(buffer) - keep], events)
        if tail and self._open != "text":
            # Held text still belongs to a text block: open it so the tail is flushed into it.
            self._close(events)
            self._open_block(events, {"type": "text", "text": ""}, "text")
        self._tail = tail

    def _emit_text(self, text: str, events: list[Event]) -> None:
        if not text:
            return
        if self._open != "text":
            self._close(events)
            self._open_block(events, {"type": "text", "text": ""}, "text")
        self._delta(events, {"type": "text_delta", "text": text})
        if self._block_text is not None:
            self._block_text.update(text)

    def _open_block(self, events: list[Event], block: dict, kind: str) -> None:
        if self._trailing is not None:
            _, signature = self._trailing
            self._trailing = None
            self._signature(SIGNATURE_PREVIOUS + signature, events)
        if kind == "text" and self._memory is not None:
            self._block_text = TextDigest()
        self._index += 1
        self._open = kind
        self._signed = False
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block})
        )

    def _delta(self, events: list[Event], delta: dict) -> None:
        events.append(("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}))

    def _close(self, events: list[Event]) -> None:
        if self._open is None:
            return
        if self._tail:
            tail, self._tail = self._tail, ""
            self._delta(events, {"type": "text_delta", "text": tail})
            if self._block_text is not None:
                self._block_text.update(tail)
        events.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._last_block, self._open = self._open, None
        if self._text_signature is not None:
            # Sent only if another block follows: a final answer's text must stay last.
            self._trailing = (self._block_text, self._text_signature)
            self._text_signature = None
