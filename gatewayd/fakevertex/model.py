"""The fake's deterministic scripted "model".

It reads only the **current user turn** of a (validated, lowerCamelCase) request — the user
contents (role ``user`` or unset) after the last ``model`` content, taken together as one, the
way a model sees consecutive user turns — and answers:

(a) If that content holds ``functionResponse`` parts: the text
    ``"Tool results: " + "; ".join(f"{name} {json.dumps(response)[:200]}")``, one entry per
    response in order (``json.dumps`` with its default separators, ``ensure_ascii=False``).
(b) Else, if its text (the text parts joined by newlines) holds directives
    ``[[call NAME {json args}]]`` (args optional, default ``{}``) whose NAME is a declared
    function: one model content with those function calls (parallel calls when several).
    Undeclared names are ignored.  Failing that, the phrase ``read the file PATH``
    (case-insensitive; PATH runs to whitespace or a quote, optional opening quote, trailing
    ``.,;:!?)`` stripped) when a function named ``Read`` is declared: ``Read {"file_path": PATH}``.
(c) Else text: a fixed three-sentence paragraph about Anna Komnene and the Alexiad when the text
    mentions "Alexiad" (any case), otherwise ``"Echo: "`` + the last 200 characters of the text
    with every ``[[...]]`` directive removed and surrounding whitespace stripped.

More directives in that text:

- ``[[fail CODE]]``: answer HTTP CODE with Google's error body (on the Gemini API a 429
  RESOURCE_EXHAUSTED carries a ``RetryInfo`` detail with ``retryDelay`` "12s", Vertex's does not;
  400, 500, 503, 504, ... their canned messages).
- ``[[chunks N]]``: a stream carries the text in N chunks (default: the server's --stream-chunks).
- ``[[stream-error CODE]]``: a stream sends its content chunks, then ends with
  ``data: {"error": {...}}`` instead of the final chunk (non-streaming calls answer normally).
- ``[[plan STEPS]]``: a scripted multi-step tool session.  STEPS is a JSON list; each step is
  ``{"NAME": {args}}`` (one call) or a list of such objects (parallel calls, in order).  The plan
  is read from the last user text that holds one (anywhere in ``contents``, so tool results in
  between do not hide it); the model has done K steps when K model contents with function calls
  follow that text, and answers with step K's calls (names must be declared), even right after
  function responses.  Once every step is done it answers ``"Plan done. "`` + the (a) text of
  the last results.  A client that runs the steps in order thus ends in a known state.
- ``[[finish REASON]]``: the answer ends with that finishReason (``MAX_TOKENS``, ``SAFETY``,
  ``RECITATION``, ...) instead of STOP; with MAX_TOKENS a scripted call is cut off (no parts).
- ``[[block REASON]]``: the prompt is blocked: no candidates, ``promptFeedback.blockReason``.
- ``[[say TEXT]]``: answer exactly TEXT (no "Echo: "), e.g. to end in a stop sequence;
  Gemini cuts the text before the first of ``stopSequences`` it contains and drops the rest.
- ``[[cached N]]``: usage reports ``cachedContentTokenCount`` N (N <= the prompt tokens).

Google Search grounding: a text answer to a request that offers the ``googleSearch`` tool
carries ``groundingMetadata`` the way Google documents it (see ``grounding``): the query (the
text after "query:" in the user text, else that text without directives), two web chunks with
Google's redirect URIs and the sites' domains as titles, one support per sentence of the answer
(UTF-8 byte offsets, ``startIndex`` left out when 0 as proto JSON does), and a search entry
point; in a stream it comes on the last chunk.

When ``generationConfig.thinkingConfig.includeThoughts`` is true the content starts with a thought
part ``{"text": THOUGHT, "thought": true}``.  Gemini 3 models put a ``thoughtSignature`` (opaque
base64 that the server remembers together with the part it was issued on, see ``sign``) on the
first functionCall part, or else on the last text part; Gemini 2.x never sends one.

Usage: ``promptTokenCount`` = len(request JSON) // 4 (at least 1), ``candidatesTokenCount`` =
ceil(len(answer text or JSON-encoded calls) / 4) so far, ``thoughtsTokenCount`` when there is a
thought, ``totalTokenCount`` their sum; on every stream chunk.  Streams: optional thought chunk,
the text in N chunks (calls: one chunk with all calls), then a last chunk with only
``finishReason: STOP`` and usage and no parts.
"""

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

from attrs import frozen

from . import catalog
from .errors import Rejected, canned

ALEXIAD = (
    "Anna Komnene (1083-1153?) was a Byzantine princess, scholar, physician, hospital administrator, "
    "and historian. She is known for writing the Alexiad, a historical account of the reign of her "
    "father, Emperor Alexios I Komnenos (r. 1081-1118). The Alexiad is a valuable primary source for "
    "understanding Byzantine history and the First Crusade."
)
THOUGHT = "**Considering the request**\n\nI am working out how best to answer the last message."

_DIRECTIVE = re.compile(r"\[\[.*?\]\]", re.S)
_FAIL = re.compile(r"\[\[fail\s+(\d{3})\]\]")
_STREAM_ERROR = re.compile(r"\[\[stream-error\s+(\d{3})\]\]")
_CHUNKS = re.compile(r"\[\[chunks\s+(\d+)\]\]")
_CALL = re.compile(r"\[\[call\s+([^\s\]]+)\s*")
_READ = re.compile(r"read the file\s+[\"'`]?([^\s\"'`]+)", re.I)
_PLAN = re.compile(r"\[\[plan\s+")
_FINISH = re.compile(r"\[\[finish\s+([A-Z_]+)\]\]")
_BLOCK = re.compile(r"\[\[block\s+([A-Z_]+)\]\]")
_SAY = re.compile(r"\[\[say\s(.*?)\]\]", re.S)
_CACHED = re.compile(r"\[\[cached\s+(\d+)\]\]")
_QUERY = re.compile(r"query:\s*(.+)", re.I | re.S)
_SENTENCE = re.compile(r"[^.!?]+[.!?]*\s*")
GROUNDING_REDIRECT = "https://vertexaisearch.cloud.google.com/grounding-api-redirect/"
GROUNDING_SITES = ("wikipedia.org", "britannica.com")


@frozen
class Reply:
    """What the model says: content parts, or an error; plus stream hints."""

    parts: tuple[dict[str, Any], ...] = ()
    error: Rejected | None = None
    chunks: int | None = None
    stream_error: int | None = None
    finish_reason: str = "STOP"
    block_reason: str | None = None
    cached: int = 0
    grounding: dict[str, Any] | None = None


def last_user_content(request: dict[str, Any]) -> dict[str, Any]:
    """The trailing user contents, their parts joined in order."""
    parts: list[dict[str, Any]] = []
    for content in reversed(request.get("contents", [])):
        if content.get("role", "") not in ("", "user"):
            break
        parts[:0] = content.get("parts", [])
    return {"role": "user", "parts": parts}


def user_text(content: dict[str, Any]) -> str:
    return "\n".join(
        part["text"] for part in content.get("parts", []) if "text" in part and not part.get("thought")
    )


def declared_functions(request: dict[str, Any]) -> set[str]:
    return {
        decl.get("name", "")
        for tool in request.get("tools", [])
        for decl in tool.get("functionDeclarations", [])
    }


def parse_calls(text: str, declared: set[str]) -> list[dict[str, Any]]:
    """The ``[[call NAME {args}]]`` directives of ``text`` naming declared functions."""
    calls = []
    decoder = json.JSONDecoder()
    for match in _CALL.finditer(text):
        name, position, args = match.group(1), match.end(), {}
        if text.startswith("{", position):
            try:
                args, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                continue
        if not text[position:].lstrip().startswith("]]"):
            continue
        if name in declared and isinstance(args, dict):
            calls.append({"name": name, "args": args})
    return calls


def read_file_call(text: str, declared: set[str]) -> list[dict[str, Any]]:
    match = _READ.search(text)
    if "Read" not in declared or match is None:
        return []
    path = match.group(1).rstrip(".,;:!?)")
    return [{"name": "Read", "args": {"file_path": path}}] if path else []


def plan_calls(request: dict[str, Any], declared: set[str]) -> tuple[list[dict[str, Any]], bool] | None:
    """``(calls of the next step, whether it is the last)`` of the latest plan, or None.

    None when no user text holds a plan; ``([], True)`` when every step is done.
    """
    contents = request.get("contents", [])
    decoder = json.JSONDecoder()
    for index in range(len(contents) - 1, -1, -1):
        content = contents[index]
        if content.get("role", "") not in ("", "user"):
            continue
        match = _PLAN.search(user_text(content))
        if match is None:
            continue
        try:
            steps, _ = decoder.raw_decode(user_text(content), match.end())
        except json.JSONDecodeError:
            return None
        if not isinstance(steps, list):
            return None
        done = sum(
            1
            for later in contents[index + 1 :]
            if later.get("role") == "model" and any("functionCall" in p for p in later.get("parts", []))
        )
        if done >= len(steps):
            return [], True
        step = steps[done]
        calls = [
            {"name": name, "args": args}
            for item in (step if isinstance(step, list) else [step])
            if isinstance(item, dict)
            for name, args in item.items()
            if name in declared and isinstance(args, dict)
        ]
        return calls, False
    return None


def _cut_at_stop(text: str, stops: list[str]) -> str:
    """Gemini ends the text before the first stop sequence it contains."""
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def answer_text(content: dict[str, Any]) -> str:
    responses = [part["functionResponse"] for part in content.get("parts", []) if "functionResponse" in part]
    if responses:
        return "Tool results: " + "; ".join(
            f"{response.get('name', '')} {json.dumps(response.get('response', {}), ensure_ascii=False)[:200]}"
            for response in responses
        )
    text = user_text(content)
    if "alexiad" in text.lower():
        return ALEXIAD
    return "Echo: " + _DIRECTIVE.sub("", text).strip()[-200:]


def script(
    request: dict[str, Any], *, model: str, sign: Callable[[dict[str, Any]], str], api: str = "vertex"
) -> Reply:
    """Decide the answer to ``request``; ``sign(part)`` issues a thought signature for ``part``."""
    content = last_user_content(request)
    text = user_text(content)
    fail = _FAIL.search(text)
    if fail:
        return Reply(error=canned(int(fail.group(1)), api))
    chunks = _CHUNKS.search(text)
    stream_error = _STREAM_ERROR.search(text)
    thinking = request.get("generationConfig", {}).get("thinkingConfig", {})
    parts: list[dict[str, Any]] = []
    if thinking.get("includeThoughts"):
        parts.append({"text": THOUGHT, "thought": True})
    block = _BLOCK.search(text)
    if block:
        return Reply(block_reason=block.group(1))
    finish = _FINISH.search(text)
    cached = _CACHED.search(text)
    said = _SAY.search(text)
    declared = declared_functions(request)
    calls: list[dict[str, Any]] = []
    plan = plan_calls(request, declared)
    prefix = ""
    if plan is not None:
        calls, finished = plan
        prefix = "Plan done. " if finished else ""
    elif not any("functionResponse" in part for part in content.get("parts", [])):
        calls = parse_calls(text, declared) or read_file_call(text, declared)
    finish_reason = finish.group(1) if finish else "STOP"
    if calls and finish_reason != "MAX_TOKENS":
        parts.extend({"functionCall": call} for call in calls)
    elif not calls:
        answer = said.group(1) if said else prefix + answer_text(content)
        answer = _cut_at_stop(answer, request.get("generationConfig", {}).get("stopSequences", []))
        if answer:
            parts.append({"text": answer})
    if catalog.is_gemini3(model) and parts:
        target = next((part for part in parts if "functionCall" in part), parts[-1])
        target["thoughtSignature"] = sign(target)
    searched = any("googleSearch" in tool for tool in request.get("tools", []))
    answer_parts = [part["text"] for part in parts if "text" in part and not part.get("thought")]
    return Reply(
        parts=tuple(parts),
        chunks=int(chunks.group(1)) if chunks else None,
        stream_error=int(stream_error.group(1)) if stream_error else None,
        finish_reason=finish_reason,
        cached=int(cached.group(1)) if cached else 0,
        grounding=grounding(text, answer_parts[0]) if searched and answer_parts else None,
    )


def grounding(text: str, answer: str) -> dict[str, Any]:
    """Google's ``groundingMetadata`` for ``answer``, searched for the query in ``text``."""
    asked = _QUERY.search(text)
    query = (asked.group(1) if asked else _DIRECTIVE.sub("", text)).strip()[:100]
    token = base64.urlsafe_b64encode(hashlib.sha256(query.encode()).digest()).decode().rstrip("=")
    chunks = [
        {"web": {"uri": f"{GROUNDING_REDIRECT}{token}{index}", "title": site}}
        for index, site in enumerate(GROUNDING_SITES)
    ]
    supports = []
    offset = 0
    for match in _SENTENCE.finditer(answer):
        sentence = match.group(0).rstrip()
        start = len(answer[: match.start()].encode())
        segment: dict[str, Any] = {"endIndex": start + len(sentence.encode()), "text": sentence}
        if start:
            segment = {"startIndex": start, **segment}
        index = offset % len(chunks)
        supports.append({"segment": segment, "groundingChunkIndices": [index], "confidenceScores": [0.9]})
        offset += 1
    rendered = f'<style>.container{{display:flex}}</style><div class="container"><a class="chip">{query}</a></div>'
    return {
        "webSearchQueries": [query],
        "searchEntryPoint": {"renderedContent": rendered},
        "groundingChunks": chunks,
        "groundingSupports": supports,
    }


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _output(part: dict[str, Any]) -> str:
    if "functionCall" in part:
        return json.dumps(part["functionCall"])
    return part.get("text", "")


def usage(prompt_tokens: int, parts: list[dict[str, Any]], *, thoughts: int = 0, cached: int = 0) -> dict[str, int]:
    candidates = _tokens("".join(_output(part) for part in parts if not part.get("thought")))
    metadata = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": candidates}
    if cached:
        metadata["cachedContentTokenCount"] = min(cached, prompt_tokens)
    if thoughts:
        metadata["thoughtsTokenCount"] = thoughts
    metadata["totalTokenCount"] = prompt_tokens + candidates + thoughts
    return metadata


def _thought_tokens(reply: Reply) -> int:
    return sum(_tokens(part["text"]) for part in reply.parts if part.get("thought"))


def response(reply: Reply, *, envelope: dict[str, Any], prompt_tokens: int) -> dict[str, Any]:
    """The whole ``generateContent`` answer.  ``envelope``: modelVersion, responseId, ..."""
    metadata = usage(prompt_tokens, list(reply.parts), thoughts=_thought_tokens(reply), cached=reply.cached)
    if reply.block_reason is not None:
        return {"promptFeedback": {"blockReason": reply.block_reason}, "usageMetadata": metadata, **envelope}
    return {"candidates": [_candidate(reply, list(reply.parts))], "usageMetadata": metadata, **envelope}


def _candidate(reply: Reply, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The last candidate of an answer: its parts (a content without parts has only a role)."""
    content: dict[str, Any] = {"role": "model"}
    if parts:
        content["parts"] = parts
    candidate: dict[str, Any] = {"content": content, "finishReason": reply.finish_reason}
    if reply.grounding is not None:
        candidate["groundingMetadata"] = reply.grounding
    return candidate


def split_text(text: str, count: int) -> list[str]:
    count = max(1, min(count, len(text)))
    bounds = [len(text) * index // count for index in range(count + 1)]
    return [text[bounds[index] : bounds[index + 1]] for index in range(count)]


def stream_chunks(
    reply: Reply, *, envelope: dict[str, Any], prompt_tokens: int, chunks: int
) -> list[dict[str, Any]]:
    """The ``streamGenerateContent`` chunks; the last one has no parts, only finishReason and usage."""
    if reply.block_reason is not None:
        return [response(reply, envelope=envelope, prompt_tokens=prompt_tokens)]
    pieces: list[list[dict[str, Any]]] = []
    for part in reply.parts:
        if part.get("thought") or "functionCall" in part:
            if pieces and "functionCall" in part and "functionCall" in pieces[-1][0]:
                pieces[-1].append(part)
            else:
                pieces.append([part])
            continue
        texts = split_text(part["text"], reply.chunks or chunks)
        for index, piece in enumerate(texts):
            chunk_part: dict[str, Any] = {"text": piece}
            if index == len(texts) - 1 and "thoughtSignature" in part:
                chunk_part["thoughtSignature"] = part["thoughtSignature"]
            pieces.append([chunk_part])
    thoughts = _thought_tokens(reply)
    seen: list[dict[str, Any]] = []
    out = []
    for chunk_parts in pieces:
        seen.extend(chunk_parts)
        out.append(
            {
                "candidates": [{"content": {"role": "model", "parts": chunk_parts}}],
                "usageMetadata": usage(prompt_tokens, seen, thoughts=thoughts, cached=reply.cached),
                **envelope,
            }
        )
    out.append(
        {
            "candidates": [_candidate(reply, [])],
            "usageMetadata": usage(prompt_tokens, seen, thoughts=thoughts, cached=reply.cached),
            **envelope,
        }
    )
    return out


def count_tokens(request: dict[str, Any], api: str) -> dict[str, Any]:
    """``countTokens``: len(JSON of what is counted) // 4; Vertex adds billable characters."""
    counted = request.get("generateContentRequest", request)
    counted = {key: value for key, value in counted.items() if key not in ("model", "endpoint", "instances")}
    total = max(1, len(json.dumps(counted)) // 4)
    if api == "gemini":
        return {"totalTokens": total}
    texts = [
        part.get("text", "")
        for content in [*counted.get("contents", []), counted.get("systemInstruction", {})]
        for part in content.get("parts", [])
    ]
    billable = sum(len(re.sub(r"\s", "", text)) for text in texts)
    return {
        "totalTokens": total,
        "totalBillableCharacters": billable,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
    }
