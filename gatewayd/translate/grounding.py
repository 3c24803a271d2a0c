"""Gemini's Google Search grounding -> Anthropic's web search tool blocks.

A request whose web search tool went upstream as ``googleSearch`` gets, for its answer's
``groundingMetadata``, what Anthropic's API returns for its own search: a ``server_tool_use``
block (name ``web_search``, input ``{"query": ...}``) and a ``web_search_tool_result`` block
per query in ``webSearchQueries``, ``web_search_result`` items from the ``groundingChunks``,
the answer's text split where ``groundingSupports`` cite it into text blocks with
``web_search_result_location`` citations, and ``usage.server_tool_use.web_search_requests``.

Gemini does not say which query found which source, so every source is listed under the
first query.  Anthropic puts the search blocks before the text that cites them, and Gemini
sends the metadata with its last chunks, so a grounded stream holds its content blocks until
the answer is complete (the message_start goes out at once).
"""

import base64
import json
from collections.abc import Callable

from .blocks import Event, block_events, fold
from .request import SIGNATURE_NEXT, Prepared
from .signatures import SignatureMemory
from .stream import StreamTranslator, new_tool_id

__all__ = ["GroundedTranslator", "translator_for"]

CITED_TEXT_LIMIT = 150  # Anthropic's cited_text is at most this long


def translator_for(
    prepared: Prepared,
    *,
    message_id: str,
    model: str,
    new_tool_id: Callable[[], str] = new_tool_id,
    memory: SignatureMemory | None = None,
) -> "StreamTranslator | GroundedTranslator":
    """The translator for ``prepared``'s answer: grounded requests need the search blocks."""
    translator = StreamTranslator(
        prepared, message_id=message_id, model=model, new_tool_id=new_tool_id, memory=memory
    )
    if prepared.grounded:
        return GroundedTranslator(translator, new_tool_id)
    return translator


class GroundedTranslator:
    """A :class:`StreamTranslator` whose content is rebuilt with the grounding metadata."""

    def __init__(self, inner: StreamTranslator, new_tool_id: Callable[[], str]) -> None:
        self._inner = inner
        self._new_tool_id = new_tool_id
        self._held: list[Event] = []
        self._metadata: dict = {}
        self._searches = 0

    @property
    def usage(self) -> dict:
        usage = self._inner.usage
        if self._searches:
            usage["server_tool_use"] = {"web_search_requests": self._searches, "web_fetch_requests": 0}
        return usage

    @property
    def usage_metadata(self) -> dict:
        return self._inner.usage_metadata

    @property
    def response_model(self) -> str | None:
        return self._inner.response_model

    @property
    def complete(self) -> bool:
        return self._inner.complete

    @property
    def stop_reason(self) -> str | None:
        return self._inner.stop_reason

    @property
    def stop_sequence(self) -> str | None:
        return self._inner.stop_sequence

    def start(self) -> list[Event]:
        return self._inner.start()

    def feed(self, chunk: dict) -> list[Event]:
        candidates = chunk.get("candidates")
        metadata = candidates[0].get("groundingMetadata") if candidates else None
        if isinstance(metadata, dict):
            self._metadata = {**self._metadata, **metadata}
        passed: list[Event] = []
        for event in self._inner.feed(chunk):
            (passed if event[0] in ("message_start", "ping") else self._held).append(event)
        return passed

    def finish(self) -> list[Event]:
        events = self._inner.finish()
        passed = [e for e in events if e[0] in ("message_start", "ping")]
        self._held.extend(e for e in events if e[0].startswith("content_block"))
        content = fold(self._held)
        self._held = []
        search = self._search_blocks()
        if search:
            content = _cite(content, self._metadata)
            at = 0
            while at < len(content) and _leading_thought(content[at]):
                at += 1
            content[at:at] = search
        for index, block in enumerate(content):
            passed.extend(block_events(index, block))
        for name, data in events:
            if name == "message_delta":
                passed.append((name, {**data, "usage": self.usage}))
            elif name == "message_stop":
                passed.append((name, data))
        return passed

    def _search_blocks(self) -> list[dict]:
        queries = [q for q in self._metadata.get("webSearchQueries") or () if isinstance(q, str)]
        sources = _sources(self._metadata)
        if not queries and not sources:
            return []
        blocks: list[dict] = []
        for i, query in enumerate(queries or [""]):
            tool_id = "srvtoolu_" + self._new_tool_id().removeprefix("toolu_")
            results = [
                {
                    "type": "web_search_result",
                    "url": web["uri"],
                    "title": web.get("title") or web["uri"],
                    "encrypted_content": _opaque({"uri": web["uri"]}),
                    "page_age": None,
                }
                for web in (sources if i == 0 else ())
            ]
            blocks.append({"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {"query": query}})
            blocks.append({"type": "web_search_tool_result", "tool_use_id": tool_id, "content": results})
        self._searches = len(blocks) // 2
        return blocks


def _leading_thought(block: dict) -> bool:
    """A thinking block of the model's own thoughts (not a signature for the next part)."""
    return block["type"] == "thinking" and not block["signature"].startswith(SIGNATURE_NEXT)


def _sources(metadata: dict) -> list[dict]:
    """The web sources of ``groundingChunks`` (None where a chunk is no web page)."""
    sources = []
    for chunk in metadata.get("groundingChunks") or ():
        web = chunk.get("web") if isinstance(chunk, dict) else None
        sources.append(web if isinstance(web, dict) and isinstance(web.get("uri"), str) else None)
    return sources


def _opaque(value: dict) -> str:
    """A value Anthropic encrypts and clients only send back: here plain base64 JSON."""
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _cite(content: list[dict], metadata: dict) -> list[dict]:
    """Split the text blocks where ``groundingSupports`` cite them; the cited pieces get citations."""
    sources = _sources(metadata)
    texts = [block["text"] for block in content if block["type"] == "text"]
    full = "".join(texts)
    spans: list[tuple[int, int, list[dict]]] = []
    cursor = 0
    for support in metadata.get("groundingSupports") or ():
        located = _locate(support.get("segment") or {}, full, cursor)
        if located is None:
            continue
        start, end = located
        webs = [
            (i, sources[i])
            for i in support.get("groundingChunkIndices") or ()
            if isinstance(i, int) and 0 <= i < len(sources) and sources[i] is not None
        ]
        if not webs or start < cursor or end <= start:
            continue
        cited = full[start:end].strip()[:CITED_TEXT_LIMIT]
        citations = [
            {
                "type": "web_search_result_location",
                "url": web["uri"],
                "title": web.get("title") or web["uri"],
                "encrypted_index": _opaque({"chunk": i}),
                "cited_text": cited,
            }
            for i, web in webs
        ]
        spans.append((start, end, citations))
        cursor = end
    if not spans:
        return content
    result: list[dict] = []
    offset = 0
    for block in content:
        if block["type"] != "text":
            result.append(block)
            continue
        begin, finish = offset, offset + len(block["text"])
        offset = finish
        at = begin
        for start, end, citations in spans:
            start, end = max(start, begin), min(end, finish)
            if start >= end:
                continue
            if start > at and full[at:start].strip():
                result.append({"type": "text", "text": full[at:start]})
            else:
                start = at  # blank between two citations: no block of its own
            result.append({"type": "text", "text": full[start:end], "citations": citations})
            at = end
        if at < finish or at == begin:
            result.append({"type": "text", "text": full[at:finish]})
    return result


def _locate(segment: dict, full: str, cursor: int) -> tuple[int, int] | None:
    """Where a support's segment is in the answer text: by its text, else by its byte offsets."""
    text = segment.get("text")
    if isinstance(text, str) and text:
        at = full.find(text, cursor)
        if at < 0:
            at = full.find(text)
        if at >= 0:
            return at, at + len(text)
    end = segment.get("endIndex")
    if not isinstance(end, int):
        return None
    start = segment.get("startIndex") or 0
    encoded = full.encode()
    if not 0 <= start < end <= len(encoded):
        return None
    begin = len(encoded[:start].decode(errors="ignore"))
    return begin, begin + len(encoded[start:end].decode(errors="ignore"))
