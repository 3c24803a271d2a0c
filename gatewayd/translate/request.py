"""Anthropic Messages request -> Gemini ``generateContent`` request.

Everything a real Claude Code request carries must translate: ``role: "system"`` messages inside
``messages`` become user-role notes in place, cache_control/metadata/context_management are
dropped, thinking history is kept only where it carries one of our signatures.

Server tools: web search becomes Gemini's ``googleSearch`` grounding tool where the target takes
it (alone on every model; next to function declarations only on Gemini 3 through the Gemini API,
Google's "tool combination"); any other server tool, and web search where it cannot go, is left
out and named in ``Prepared.dropped_tools`` (the log record says so).
``output_config.format`` (structured outputs, e.g. Claude Code's title call) becomes
``responseMimeType: application/json`` with the cleaned schema as ``responseSchema``.
``tool_choice.disable_parallel_tool_use`` has no Gemini switch: the answer keeps the first call.
"""

import base64
import binascii
import hashlib
import json
import mimetypes
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from attrs import define, field, frozen

from .errors import TranslationError
from .images import GEMINI_IMAGE_TYPES, gif_to_png
from .models import ModelProfile
from .signatures import SignatureMemory
from .schema import clean_schema_keyed, declaration_parameters, schema_key

# A thinking block's signature is one of ours when it starts with one of these; what follows is
# Gemini's thoughtSignature. "n": it belongs to the next text/tool_use part of the message;
# "t": it belongs to the thought part this thinking block was made from.
SIGNATURE_NEXT = "gws1n."
SIGNATURE_THOUGHT = "gws1t."
SIGNATURE_PREVIOUS = "gws1p."  # belongs to the text part just before the thinking block
# Google's documented stand-in for a function call whose real signature is unknown.
SKIP_SIGNATURE = "skip_thought_signature_validator"
SYSTEM_NOTE = "<system-note>\n{}\n</system-note>"
_CONTINUE_NOTE = SYSTEM_NOTE.format(
    "Continue your previous reply exactly where it stopped, without repeating any of it."
)

_VALID_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.\-]{0,63}\Z")
_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_.\-]")
# Blocks produced by Anthropic-hosted tools: nothing Gemini can use, so history drops them.
_SERVER_BLOCKS = frozenset(
    {
        "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
        "code_execution_tool_result", "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result", "mcp_tool_use", "mcp_tool_result",
        "container_upload", "tool_search_tool_result",
    }
)
_EFFORT_LEVEL = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH", "max": "HIGH"}
_EFFORT_BUDGET = {"low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
_LEVEL_ORDER = ("MINIMAL", "LOW", "MEDIUM", "HIGH")


@frozen
class Prepared:
    """A translated request plus what the response side needs to translate back."""

    body: dict
    tool_names: Mapping[str, str] = field(factory=dict)  # gemini function name -> anthropic name
    stop_sequences: tuple[str, ...] = ()  # the client's, matched in the answer's text here
    stream: bool = False
    requested_model: str = ""
    include_thoughts: bool = False
    dropped_tools: tuple[str, ...] = ()  # server tools we could not offer (by name)
    single_tool_call: bool = False  # disable_parallel_tool_use: keep only the first call
    grounded: bool = False  # googleSearch went upstream: the answer may carry groundingMetadata


def prepare(body: dict, profile: ModelProfile, memory: SignatureMemory | None = None) -> Prepared:
    """Translate a ``/v1/messages`` body for ``profile``'s model; raises TranslationError.

    ``memory`` restores the signatures of final answers' text (see :mod:`.signatures`).
    """
    if not isinstance(body, dict):
        raise TranslationError("body", "must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("model", "is required and must be a string")
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise TranslationError("max_tokens", "is required and must be a positive integer")
    builder = _Builder(profile, memory=memory if profile.is_gemini3 else None)
    gemini = builder.build(body)
    config = gemini.setdefault("generationConfig", {})
    limit = min(max_tokens, profile.output_limit)
    if profile.max_tokens is not None:
        limit = min(limit, profile.max_tokens)
    config["maxOutputTokens"] = limit
    _sampling(body, config)
    # Not sent upstream: Gemini strips a matched sequence and reports a plain STOP, so only
    # finding the sequence in the text ourselves tells stop_sequence from end_turn.
    stops = _stop_sequences(body.get("stop_sequences"))
    include_thoughts = _thinking(body, profile, config)
    _response_format(body, profile, config)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise TranslationError("stream", "must be a boolean")
    return Prepared(
        body=gemini,
        tool_names=builder.names.to_anthropic,
        stop_sequences=stops,
        stream=stream,
        requested_model=model,
        include_thoughts=include_thoughts,
        dropped_tools=tuple(builder.dropped_tools),
        single_tool_call=builder.single_tool_call,
        grounded=builder.grounded,
    )


def count_tokens_body(body: dict, profile: ModelProfile) -> dict:
    """Translate a ``/v1/messages/count_tokens`` body to a countTokens request body."""
    if not isinstance(body, dict):
        raise TranslationError("body", "must be a JSON object")
    gemini = _Builder(profile).build(body)
    gemini.pop("toolConfig", None)
    if any("googleSearch" in tool for tool in gemini.get("tools", ())):
        gemini["tools"] = [tool for tool in gemini["tools"] if "googleSearch" not in tool]
        if not gemini["tools"]:
            del gemini["tools"]
    if profile.api == "gemini":
        return {"generateContentRequest": {"model": f"models/{profile.model_id}", **gemini}}
    return gemini


@define
class _Names:
    """Reversible Anthropic tool name <-> Gemini function name mapping."""

    to_gemini: dict[str, str] = field(factory=dict)
    to_anthropic: dict[str, str] = field(factory=dict)

    def gemini(self, name: str) -> str:
        known = self.to_gemini.get(name)
        if known is not None:
            return known
        candidate = name if _VALID_NAME.match(name) else _sanitize(name)
        if candidate in self.to_anthropic:
            candidate = candidate[:55] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
        self.to_gemini[name] = candidate
        self.to_anthropic[candidate] = name
        return candidate


def _sanitize(name: str) -> str:
    cleaned = _INVALID_CHARS.sub("_", name)
    if not cleaned or not (cleaned[0].isalpha() or cleaned[0] == "_"):
        cleaned = "_" + cleaned
    if len(cleaned) > 64:
        cleaned = cleaned[:55] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return cleaned


@define
class _Turn:
    """One Anthropic message as Gemini parts, before pairing calls with responses."""

    role: str
    parts: list = field(factory=list)
    calls: list = field(factory=list)  # (tool_use id, gemini function name) in part order
    responses: list = field(factory=list)  # (tool_use id, functionResponse part)


@define
class _Builder:
    profile: ModelProfile
    memory: SignatureMemory | None = None
    names: _Names = field(factory=_Names)
    dropped_tools: list = field(factory=list)
    call_names: dict = field(factory=dict)  # tool_use id -> gemini function name
    web_search: str | None = None  # the name of a declared web search server tool
    single_tool_call: bool = False
    grounded: bool = False

    def build(self, body: dict) -> dict:
        messages = body.get("messages")
        if messages is None:
            raise TranslationError("messages", "is required")
        if not isinstance(messages, list):
            raise TranslationError("messages", "must be a list")
        gemini: dict = {}
        # Tools first: they fix the function names history refers to.
        declarations = self._tools(body.get("tools"))
        turns = [self._turn(message, f"messages.{i}") for i, message in enumerate(messages)]
        contents = _assemble(turns, self.profile)
        if not contents:
            raise TranslationError("messages", "must contain at least one non-empty message")
        gemini["contents"] = contents
        system = _system(body.get("system"))
        if system:
            gemini["systemInstruction"] = {"parts": system}
        tools = [{"functionDeclarations": declarations}] if declarations else []
        if self.web_search is not None:
            if not declarations or (self.profile.api == "gemini" and self.profile.is_gemini3):
                tools.append({"googleSearch": {}})
                self.grounded = True
            else:
                self.dropped_tools.append(self.web_search)
        if tools:
            gemini["tools"] = tools
        if declarations:
            tool_config = self._tool_choice(body.get("tool_choice"))
            if tool_config:
                gemini["toolConfig"] = tool_config
        return gemini

    def _tools(self, tools: Any) -> list:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise TranslationError("tools", "must be a list")
        declarations = []
        for i, tool in enumerate(tools):
            where = f"tools.{i}"
            if not isinstance(tool, dict):
                raise TranslationError(where, "must be an object")
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise TranslationError(f"{where}.name", "is required")
            kind = tool.get("type")
            if isinstance(kind, str) and kind.startswith("web_search_") and self.web_search is None:
                self.web_search = name
                continue
            if kind not in (None, "custom"):
                self.dropped_tools.append(name)
                continue
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise TranslationError(f"{where}.input_schema", "is required and must be an object")
            declaration = {"name": self.names.gemini(name)}
            description = tool.get("description")
            description = description if isinstance(description, str) else ""
            if schema.get("properties") or schema.get("additionalProperties") not in (None, False):
                parameters = declaration_parameters(schema_key(schema), self.profile.api)
                if parameters.json_schema is not None:
                    declaration["parametersJsonSchema"] = parameters.json_schema
                else:
                    declaration["parameters"] = parameters.schema
                if parameters.rules:
                    rules = "Arguments: " + " ".join(parameters.rules)
                    description = f"{description}\n\n{rules}" if description else rules
            if description:
                declaration["description"] = description
            declarations.append(declaration)
        return declarations

    def _tool_choice(self, choice: Any) -> dict | None:
        if choice is None:
            return None
        if not isinstance(choice, dict):
            raise TranslationError("tool_choice", "must be an object")
        kind = choice.get("type")
        self.single_tool_call = choice.get("disable_parallel_tool_use") is True and kind != "none"
        if kind == "auto":
            config = {"mode": "AUTO"}
        elif kind == "any":
            config = {"mode": "ANY"}
        elif kind == "none":
            config = {"mode": "NONE"}
        elif kind == "tool":
            name = choice.get("name")
            if not isinstance(name, str) or name not in self.names.to_gemini:
                raise TranslationError("tool_choice.name", f"names no declared tool: {name!r}")
            config = {"mode": "ANY", "allowedFunctionNames": [self.names.to_gemini[name]]}
        else:
            raise TranslationError("tool_choice.type", f"unknown tool_choice type {kind!r}")
        return {"functionCallingConfig": config}

    def _turn(self, message: Any, where: str) -> _Turn:
        if not isinstance(message, dict):
            raise TranslationError(where, "must be an object")
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        elif not isinstance(content, list):
            raise TranslationError(f"{where}.content", "must be a string or a list of blocks")
        if role == "assistant":
            return self._assistant(content, where)
        if role == "user":
            return self._user(content, where)
        if role == "system":
            return self._system_note(content, where)
        raise TranslationError(f"{where}.role", f"unknown role {role!r}")

    def _system_note(self, blocks: list, where: str) -> _Turn:
        texts = []
        for j, block in enumerate(blocks):
            text = _text_of(block, f"{where}.content.{j}")
            if text.strip():
                texts.append(text)
        parts = [{"text": SYSTEM_NOTE.format("\n".join(texts))}] if texts else []
        return _Turn("user", parts)

    def _user(self, blocks: list, where: str) -> _Turn:
        turn = _Turn("user")
        for j, block in enumerate(blocks):
            path = f"{where}.content.{j}"
            kind = _block_type(block, path)
            if kind == "tool_result":
                self._tool_result(block, path, turn)
            elif kind in ("thinking", "redacted_thinking") or kind in _SERVER_BLOCKS:
                continue
            else:
                turn.parts.extend(_media_or_text(block, kind, path, self.profile.api))
        return turn

    def _tool_result(self, block: dict, where: str, turn: _Turn) -> None:
        tool_use_id = block.get("tool_use_id")
        name = self.call_names.get(tool_use_id) if isinstance(tool_use_id, str) else None
        if name is None:
            raise TranslationError(
                f"{where}.tool_use_id", f"matches no earlier tool_use: {tool_use_id!r}"
            )
        content = block.get("content", "")
        texts: list[str] = []
        extra: list[dict] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for k, item in enumerate(content):
                path = f"{where}.content.{k}"
                for part in _media_or_text(item, _block_type(item, path), path, self.profile.api):
                    if "text" in part:
                        texts.append(part["text"])
                    else:
                        extra.append(part)
        else:
            raise TranslationError(f"{where}.content", "must be a string or a list of blocks")
        if extra:
            # Images and documents cannot go inside a functionResponse: they follow the
            # responses, so the result says so and a note ties them to this call.
            texts.append(f"[{len(extra)} attachment(s) follow this result as separate parts]")
            note = f"Attachment(s) of the {self.names.to_anthropic.get(name, name)} result above:"
            extra.insert(0, {"text": SYSTEM_NOTE.format(note)})
        key = "error" if block.get("is_error") else "output"
        part = {"functionResponse": {"name": name, "response": {key: "\n".join(texts)}}}
        turn.responses.append((tool_use_id, part))
        turn.parts.extend(extra)

    def _assistant(self, blocks: list, where: str) -> _Turn:
        turn = _Turn("model")
        pending = None  # a Gemini signature waiting for the next text/tool_use part
        for j, block in enumerate(blocks):
            path = f"{where}.content.{j}"
            kind = _block_type(block, path)
            if kind == "text":
                text = _text_of(block, path)
                if not text.strip():
                    continue
                part = {"text": text}
                remembered = self.memory.recall(text) if self.memory is not None else None
                if remembered is not None and pending is None:
                    part["thoughtSignature"] = remembered
            elif kind == "tool_use":
                part = self._tool_use(block, path)
                turn.calls.append((block["id"], part["functionCall"]["name"]))
            elif kind == "thinking":
                signature = block.get("signature")
                if not isinstance(signature, str):
                    continue
                if signature.startswith(SIGNATURE_NEXT):
                    pending = signature[len(SIGNATURE_NEXT):]
                elif signature.startswith(SIGNATURE_PREVIOUS):
                    last = turn.parts[-1] if turn.parts else None
                    if last is not None and "text" in last and not last.get("thought"):
                        last.setdefault("thoughtSignature", signature[len(SIGNATURE_PREVIOUS):])
                elif signature.startswith(SIGNATURE_THOUGHT):
                    thought = block.get("thinking")
                    if isinstance(thought, str) and thought.strip():
                        sig = signature[len(SIGNATURE_THOUGHT):]
                        turn.parts.append({"text": thought, "thought": True, "thoughtSignature": sig})
                continue
            elif kind == "web_search_tool_result":
                note = _search_results_note(block)
                if note:
                    turn.parts.append({"text": note})  # what the search found stays in the history
                continue
            elif kind == "redacted_thinking" or kind in _SERVER_BLOCKS:
                continue
            else:
                raise TranslationError(f"{path}.type", f"{kind!r} is not allowed in an assistant message")
            if pending is not None:
                part["thoughtSignature"] = pending
                pending = None
            turn.parts.append(part)
        return turn

    def _tool_use(self, block: dict, where: str) -> dict:
        tool_id = block.get("id")
        if not isinstance(tool_id, str) or not tool_id:
            raise TranslationError(f"{where}.id", "is required")
        name = block.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(f"{where}.name", "is required")
        args = block.get("input")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise TranslationError(f"{where}.input", "must be an object")
        gemini_name = self.names.gemini(name)
        self.call_names[tool_id] = gemini_name
        return {"functionCall": {"name": gemini_name, "args": args}}


def _assemble(turns: list[_Turn], profile: ModelProfile) -> list[dict]:
    """Turn per-message parts into Gemini contents that satisfy the function-calling rules.

    A model content with N calls is followed by exactly one user content whose first N parts
    are the N responses in call order (a missing result becomes an error response); whatever
    else the following user messages hold (text, system notes, tool-result images) comes after.
    """
    contents: list[dict] = []
    group: dict | None = None  # {"calls": [(id, name)], "responses": {id: part}, "extra": [...]}

    def close() -> None:
        nonlocal group
        if group is None:
            return
        parts = [
            group["responses"].get(call_id) or _missing_response(name)
            for call_id, name in group["calls"]
        ]
        parts.extend(group["extra"])
        contents.append({"role": "user", "parts": parts})
        group = None

    for turn in turns:
        if turn.role == "model":
            if not turn.parts:
                continue
            close()
            if turn.calls and contents and contents[-1]["role"] == "model":
                # A function call turn must follow a user turn: join it to the model text before.
                contents[-1]["parts"] = contents[-1]["parts"] + turn.parts
            else:
                contents.append({"role": "model", "parts": turn.parts})
            if turn.calls:
                group = {"calls": turn.calls, "responses": {}, "extra": []}
            continue
        if group is not None:
            wanted = {call_id for call_id, _ in group["calls"]}
            for call_id, part in turn.responses:
                if call_id in wanted and call_id not in group["responses"]:
                    group["responses"][call_id] = part
                else:
                    group["extra"].append(_response_as_text(part))
            group["extra"].extend(turn.parts)
            continue
        parts = [_response_as_text(part) for _, part in turn.responses] + turn.parts
        if parts:
            contents.append({"role": "user", "parts": parts})
    close()
    if profile.is_gemini3:
        _stand_in_signatures(contents)
    if contents and contents[-1]["role"] == "model" and not profile.accepts_prefill:
        contents.append({"role": "user", "parts": [{"text": _CONTINUE_NOTE}]})
    return contents


def _search_results_note(block: dict) -> str:
    """A web_search_tool_result block (from Anthropic or from our grounding) as model text."""
    content = block.get("content")
    if isinstance(content, dict):
        return f"[Web search failed: {content.get('error_code', 'unknown error')}]"
    if not isinstance(content, list):
        return ""
    lines = [
        f"- {item.get('title') or item.get('url')}: {item.get('url')}"
        for item in content
        if isinstance(item, dict) and isinstance(item.get("url"), str)
    ]
    return "[Web search results:\n" + "\n".join(lines) + "]" if lines else ""


def _missing_response(name: str) -> dict:
    error = "No result was provided for this tool call."
    return {"functionResponse": {"name": name, "response": {"error": error}}}


def _response_as_text(part: dict) -> dict:
    """A tool result that answers no pending call is kept as a note rather than lost."""
    response = part["functionResponse"]
    body = json.dumps(response["response"], ensure_ascii=False)
    return {"text": SYSTEM_NOTE.format(f"Result of an earlier {response['name']} call: {body}")}


def _stand_in_signatures(contents: list[dict]) -> None:
    """Gemini 3 refuses a function-call step without a thoughtSignature on its first call.

    Steps whose signature we never had (history from another model, or ours dropped by the
    client) get Google's documented stand-in; it is harmless outside the validated turn.
    """
    for content in contents:
        if content["role"] != "model":
            continue
        for i, part in enumerate(content["parts"]):
            if "functionCall" in part:
                if "thoughtSignature" not in part:
                    content["parts"][i] = {**part, "thoughtSignature": SKIP_SIGNATURE}
                break


def _system(system: Any) -> list:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"text": system}] if system.strip() else []
    if not isinstance(system, list):
        raise TranslationError("system", "must be a string or a list of text blocks")
    parts = []
    for i, block in enumerate(system):
        text = _text_of(block, f"system.{i}")
        if text.strip():
            parts.append({"text": text})
    return parts


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, dict):
        raise TranslationError(where, "must be an object")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise TranslationError(f"{where}.type", "is required")
    return kind


def _text_of(block: Any, where: str) -> str:
    if _block_type(block, where) != "text":
        raise TranslationError(f"{where}.type", "must be 'text'")
    text = block.get("text")
    if not isinstance(text, str):
        raise TranslationError(f"{where}.text", "must be a string")
    return text


def _media_or_text(block: dict, kind: str, where: str, api: str) -> list[dict]:
    """User-side content blocks (also inside tool results) as Gemini parts; empty text dropped."""
    if kind == "text":
        text = _text_of(block, where)
        return [{"text": text}] if text.strip() else []
    if kind == "image":
        return [_image(_source(block, where, "image/jpeg", api), where)]
    if kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            data = source.get("data")
            if not isinstance(data, str):
                raise TranslationError(f"{where}.source.data", "must be a string")
            return _document_label(block) + [{"text": data}] if data.strip() else []
        if isinstance(source, dict) and source.get("type") == "content":
            inner = source.get("content")
            if isinstance(inner, str):
                return [{"text": inner}] if inner.strip() else []
            if not isinstance(inner, list):
                raise TranslationError(f"{where}.source.content", "must be a list of blocks")
            parts = []
            for k, item in enumerate(inner):
                path = f"{where}.source.content.{k}"
                parts.extend(_media_or_text(item, _block_type(item, path), path, api))
            return parts
        return _document_label(block) + [_source(block, where, "application/pdf", api)]
    if kind == "search_result":
        texts = [block.get("title"), block.get("source")]
        for k, item in enumerate(block.get("content") or ()):
            texts.append(_text_of(item, f"{where}.content.{k}"))
        text = "\n".join(t for t in texts if isinstance(t, str) and t.strip())
        return [{"text": text}] if text else []
    if kind == "tool_reference":
        name = block.get("tool_name")
        return [{"text": f"Tool loaded: {name}"}] if isinstance(name, str) and name else []
    if kind in _SERVER_BLOCKS or kind in ("thinking", "redacted_thinking"):
        return []
    raise TranslationError(f"{where}.type", f"unknown content block type {kind!r}")


def _document_label(block: dict) -> list[dict]:
    """A document's ``title`` and ``context`` (what the client says it is) as a text part."""
    label = [
        f"{key}: {block[key]}" for key in ("title", "context") if isinstance(block.get(key), str) and block[key].strip()
    ]
    return [{"text": SYSTEM_NOTE.format("Document " + "; ".join(label))}] if label else []


def _image(part: dict, where: str) -> dict:
    """An image part in a type Gemini reads: a base64 GIF becomes PNG, anything else is a 400."""
    if "inlineData" in part:
        mime = part["inlineData"]["mimeType"]
        if mime == "image/gif":
            try:
                png = gif_to_png(base64.b64decode(part["inlineData"]["data"]))
            except ValueError as error:
                raise TranslationError(f"{where}.source.data", str(error)) from None
            return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode("ascii")}}
    else:
        mime = part["fileData"]["mimeType"]
    if mime not in GEMINI_IMAGE_TYPES:
        readable = ", ".join(sorted(GEMINI_IMAGE_TYPES))
        how = " by URL; send it as base64 and it is converted to PNG" if mime == "image/gif" else ""
        raise TranslationError(f"{where}.source", f"Gemini cannot read an {mime} image{how} (it reads {readable})")
    return part


def _source(block: dict, where: str, default_mime: str, api: str) -> dict:
    source = block.get("source")
    if not isinstance(source, dict):
        raise TranslationError(f"{where}.source", "is required")
    kind = source.get("type")
    if kind == "base64":
        mime = source.get("media_type")
        data = source.get("data")
        if not isinstance(mime, str) or not mime:
            raise TranslationError(f"{where}.source.media_type", "is required")
        if not isinstance(data, str) or not data:
            raise TranslationError(f"{where}.source.data", "is required")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise TranslationError(f"{where}.source.data", "is not valid base64") from None
        return {"inlineData": {"mimeType": mime, "data": data}}
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise TranslationError(f"{where}.source.url", "is required")
        if api == "gemini" and url.startswith("gs://"):
            # The Gemini API takes Files API and HTTPS URIs, not Cloud Storage (Vertex does).
            raise TranslationError(f"{where}.source.url", "gs:// URLs need a Vertex AI target")
        mime = mimetypes.guess_type(urlsplit(url).path)[0] or default_mime
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise TranslationError(f"{where}.source.type", f"unsupported source type {kind!r}")


def _sampling(body: dict, config: dict) -> None:
    for key, target, low, high in (
        # Anthropic's range, not Gemini's 0..2: a client asking for 1.5 means something Claude refuses.
        ("temperature", "temperature", 0.0, 1.0),
        ("top_p", "topP", 0.0, 1.0),
    ):
        value = body.get(key)
        if value is None:
            continue
        if not _is_number(value) or not low <= value <= high:
            raise TranslationError(key, f"must be a number from {low:g} to {high:g}")
        config[target] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k) or top_k < 1:
            raise TranslationError("top_k", "must be a positive integer")
        config["topK"] = top_k


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise TranslationError("stop_sequences", "must be a list of strings")
    seen: list[str] = []
    for sequence in value:
        if sequence and sequence not in seen:
            seen.append(sequence)
    return tuple(seen)


def _thinking(body: dict, profile: ModelProfile, config: dict) -> bool:
    """Map thinking + output_config.effort to thinkingConfig; return whether thoughts are shown.

    The Anthropic ``thinking`` type decides whether thoughts come back; the budget or the
    effort decides how hard the model thinks. Neither given means no extended thinking, as on
    Anthropic: budget 0 where the model allows it (2.5 Flash, Flash-Lite), else the least it
    takes (2.5 Pro's 128, Gemini 3's lowest level). Gemini 2.0 gets no thinkingConfig at all.
    """
    thinking = body.get("thinking")
    kind = None
    budget = None
    display = None
    if thinking is not None:
        if not isinstance(thinking, dict):
            raise TranslationError("thinking", "must be an object")
        kind = thinking.get("type")
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not _is_int(budget) or budget < 0:
                raise TranslationError("thinking.budget_tokens", "must be a non-negative integer")
        elif kind not in ("adaptive", "disabled"):
            raise TranslationError("thinking.type", f"unknown thinking type {kind!r}")
        display = thinking.get("display")
    effort = None
    output_config = body.get("output_config")
    if isinstance(output_config, dict):
        effort = output_config.get("effort")
        if effort is not None and effort not in _EFFORT_LEVEL:
            raise TranslationError("output_config.effort", f"unknown effort {effort!r}")
    if not profile.supports_thinking:
        return False
    if kind is None and effort is None:
        kind = "disabled"  # Anthropic's default is no extended thinking; Gemini's is to think
    include = kind in ("enabled", "adaptive") and display != "omitted"
    thinking_config: dict = {}
    if profile.is_gemini3:
        level = _level(kind, budget, effort, profile)
        if level is not None:
            thinking_config["thinkingLevel"] = level
    else:
        value = _budget(kind, budget, effort, profile)
        if value is not None:
            thinking_config["thinkingBudget"] = value
    if include:
        thinking_config["includeThoughts"] = True
    if thinking_config:
        config["thinkingConfig"] = thinking_config
    return include


def _response_format(body: dict, profile: ModelProfile, config: dict) -> None:
    """Structured outputs: ``output_config.format`` (or the older top-level ``output_format``)."""
    output_config = body.get("output_config")
    spec = output_config.get("format") if isinstance(output_config, dict) else None
    if spec is None:
        spec = body.get("output_format")
    if spec is None:
        return
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        raise TranslationError("output_config.format", "must be {\"type\": \"json_schema\", \"schema\": {...}}")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise TranslationError("output_config.format.schema", "is required and must be an object")
    config["responseMimeType"] = "application/json"
    config["responseSchema"] = clean_schema_keyed(schema_key(schema), profile.api)


def _level(kind: str | None, budget: int | None, effort: str | None, profile: ModelProfile) -> str | None:
    levels = profile.thinking_levels
    if kind == "disabled":
        return levels[0]
    if kind == "enabled":
        wanted = "LOW" if budget < 4096 else "MEDIUM" if budget < 16384 else "HIGH"
    elif effort is not None:
        wanted = _EFFORT_LEVEL[effort]
    else:
        return None  # adaptive: the model's own default (dynamic) thinking
    if wanted in levels:
        return wanted
    # Pro has no MEDIUM: round up, like Gemini's own default does.
    above = [lv for lv in levels if _LEVEL_ORDER.index(lv) > _LEVEL_ORDER.index(wanted)]
    return above[0] if above else levels[-1]


def _budget(kind: str | None, budget: int | None, effort: str | None, profile: ModelProfile) -> int | None:
    low, high = profile.thinking_budget_range
    if kind == "disabled":
        return 0 if not profile.is_pro else low
    if kind == "enabled":
        wanted = budget
    elif effort is not None:
        wanted = _EFFORT_BUDGET[effort]
    else:
        return -1  # adaptive: dynamic budget
    return max(low, min(high, wanted))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
