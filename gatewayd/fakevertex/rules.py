"""What Vertex AI (v1) and the Gemini API (v1beta) refuse, with Google's own 400 messages.

Pure: JSON-decoded bodies in, a canonical lowerCamelCase copy out, or :class:`Rejected`.
The structural pass follows the proto field tables in :mod:`.protos` (proto3 JSON: either
spelling of a field name, ``null`` means absent, a single value may stand for a repeated field);
the semantic pass follows /work/shared/gemini-api-rules.md and the error texts quoted in public
issue threads.  ``api`` is ``"vertex"`` or ``"gemini"``.
"""

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from . import catalog
from .errors import Rejected
from .protos import TABLES, Field

_PACKAGES = {"vertex": "google.cloud.aiplatform.v1", "gemini": "google.ai.generativelanguage.v1beta"}
_SCALAR_NAMES = {"string": "TYPE_STRING", "bool": "TYPE_BOOL", "int": "TYPE_INT32", "float": "TYPE_FLOAT", "bytes": "TYPE_BYTES"}

VERTEX_LEARN_MORE = "https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"
SKIP_SIGNATURE = "skip_thought_signature_validator"
GEMINI_SKIP_SIGNATURE = "context_engineering_is_the_way_to_go"

_FUNCTION_NAME = {
    "vertex": re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}"),
    "gemini": re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,63}"),
}
_FUNCTION_NAME_MESSAGE = {
    "vertex": "Invalid function name. Must start with a letter or an underscore. Must be alphameric "
    "(a-z, A-Z, 0-9), underscores (_), dots (.) or dashes (-), with a maximum length of 64.",
    "gemini": "Invalid function name. Must start with a letter or an underscore. Must be alphameric "
    "(a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.",
}
MAX_FUNCTION_DECLARATIONS = 128


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def encode_bytes(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_bytes(value: str) -> bytes | None:
    """Proto3 JSON bytes: standard or URL-safe base64, padding optional."""
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Structural pass: the proto field tables.


class _Walker:
    def __init__(self, api: str) -> None:
        self.api = api
        self.messages, self.enums = TABLES[api]
        self.errors: list[tuple[str, str]] = []

    def fail(self, field_path: str, message: str) -> None:
        self.errors.append((field_path, message))

    def type_url(self, message: str) -> str:
        if message.startswith("google."):
            return f"type.googleapis.com/{message}"
        return f"type.googleapis.com/{_PACKAGES[self.api]}.{message}"

    def message(self, value: Any, message: str, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, f"Invalid value at '{path}' ({self.type_url(message)}), {_show(value)}")
            return None
        fields = self.messages[message]
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key if key in fields else _snake(key)
            spec = fields.get(name) if name == key or camel(name) == key else None
            if spec is None:
                where = f" at '{path}'" if path else ""
                self.fail(path, f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.')
                continue
            if item is None:
                continue
            child = f"{path}.{name}" if path else name
            if spec.card != "repeated" and isinstance(item, list):
                where = f" at '{path}'" if path else ""
                self.fail(
                    path,
                    f'Invalid JSON payload received. Unknown name "{key}"{where}: '
                    "Proto field is not repeating, cannot start list.",
                )
                continue
            converted = self.field(item, spec, child)
            if converted is not None:
                out[camel(name)] = converted
        return out

    def field(self, value: Any, spec: Field, path: str) -> Any:
        if spec.card == "repeated":
            items = value if isinstance(value, list) else [value]
            return [self.single(item, spec.kind, f"{path}[{index}]") for index, item in enumerate(items)]
        if spec.card == "map":
            if not isinstance(value, dict):
                self.fail(path, f"Invalid value at '{path}' (map), {_show(value)}")
                return None
            return {
                key: self.single(item, spec.kind, f"{path}[{index}].value")
                for index, (key, item) in enumerate(value.items())
            }
        return self.single(value, spec.kind, path)

    def single(self, value: Any, kind: str, path: str) -> Any:
        if kind.startswith("msg:"):
            return self.message(value, kind[4:], path)
        if kind.startswith("enum:"):
            return self.enum(value, kind[5:], path)
        if kind in ("value", "list"):
            return value
        if kind == "struct":
            if not isinstance(value, dict):
                self.fail(path, f"Invalid value at '{path}' (type.googleapis.com/google.protobuf.Struct), {_show(value)}")
            return value
        return self.scalar(value, kind, path)

    def enum(self, value: Any, enum: str, path: str) -> Any:
        names = self.enums[enum]
        if isinstance(value, str) and value.upper() in names:
            return value.upper()
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            return names[value]
        self.fail(path, f"Invalid value at '{path}' ({self.type_url(enum)}), {_show(value)}")
        return None

    def scalar(self, value: Any, kind: str, path: str) -> Any:
        ok = {
            "string": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int": _is_int(value),
            "float": _is_number(value),
            "bytes": isinstance(value, str),
        }[kind]
        if not ok:
            self.fail(path, f"Invalid value at '{path}' ({_SCALAR_NAMES[kind]}), {_show(value)}")
            return None
        if kind == "bytes" and decode_bytes(value) is None:
            self.fail(path, f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for {_show(value)}")
            return None
        if kind == "int":
            return int(float(value))
        if kind == "float":
            return float(value)
        return value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str) and re.fullmatch(r"-?\d+", value) is not None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def structure(body: Any, message: str, api: str) -> dict[str, Any]:
    """Check ``body`` against the proto ``message`` of ``api``; return it in lowerCamelCase."""
    walker = _Walker(api)
    out = walker.message(body, message, "")
    if walker.errors:
        violations = tuple({"field": field, "description": text} for field, text in walker.errors)
        raise Rejected(
            400,
            "\n".join(text for _, text in walker.errors),
            ({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": list(violations)},),
        )
    assert out is not None
    return out


# ---------------------------------------------------------------------------------------------
# Semantic pass.


def _bad(api: str, path: str, message: str) -> Rejected:
    """Gemini API field errors read ``* GenerateContentRequest.<path>: <message>\\n``."""
    if api == "gemini":
        return Rejected(400, f"* GenerateContentRequest.{path}: {message}\n")
    return Rejected(400, message)


_DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult")


def check_contents(contents: list[dict[str, Any]], api: str, where: str = "contents") -> None:
    for index, content in enumerate(contents):
        check_content(content, api, f"{where}[{index}]")


def check_content(content: dict[str, Any], api: str, path: str) -> None:
    role = content.get("role", "")
    if path.startswith("contents") and role not in ("", "user", "model"):
        raise Rejected(400, "Please use a valid role: user, model.")
    parts = content.get("parts", [])
    if not parts:
        if api == "gemini":
            raise _bad(api, f"{path}.parts", "contents.parts must not be empty.")
        raise Rejected(
            400,
            "Unable to submit request because it must include at least one parts field, which describes "
            f"the prompt input. Learn more: {VERTEX_LEARN_MORE}",
        )
    for index, part in enumerate(parts):
        check_part(part, api, f"{path}.parts[{index}]")


def check_part(part: dict[str, Any], api: str, path: str) -> None:
    set_fields = [name for name in _DATA_FIELDS if name in part]
    signed = "thoughtSignature" in part
    if api == "gemini" and part.get("text") == "":
        set_fields.remove("text")  # proto3: an empty string is the unset default
    if len(set_fields) != 1 and not (signed and not set_fields):
        raise _bad(api, f"{path}.data", "required oneof field 'data' must have one initialized field")
    for key in ("inlineData", "fileData"):
        if key in part:
            check_media(part[key], api)
    for index, item in enumerate(part.get("functionResponse", {}).get("parts", [])):
        for key in ("inlineData", "fileData"):
            if key in item:
                check_media(item[key], api)
    if part.get("text") == "" and api == "vertex" and not signed:
        raise Rejected(
            400,
            "Unable to submit request because it has an empty text parameter. Add a value to the "
            f"parameter and try again. Learn more: {VERTEX_LEARN_MORE}",
        )


# Image types both APIs take; image/gif is refused (Google's image-understanding pages list these
# five; the error text is the one quoted in /work/shared/gemini-api-rules.md).
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})


def check_media(data: dict[str, Any], api: str) -> None:
    """inlineData / fileData: supported image types; no ``gs://`` URI on the Gemini API
    (googleapis/python-genai#71: the Gemini API takes Files API and HTTPS URIs only)."""
    mime = data.get("mimeType", "")
    if mime.startswith("image/") and mime not in IMAGE_TYPES:
        raise Rejected(400, f"Unsupported MIME type: {mime}")
    uri = data.get("fileUri", "")
    if api == "gemini" and uri.startswith("gs://"):
        raise Rejected(400, f"Invalid or unsupported file uri: {uri}")


def _is_user(content: dict[str, Any]) -> bool:
    return content.get("role", "") in ("", "user")


def _calls(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [part for part in content.get("parts", []) if "functionCall" in part]


def _responses(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [part for part in content.get("parts", []) if "functionResponse" in part]


def check_function_turns(contents: list[dict[str, Any]]) -> None:
    for index, content in enumerate(contents):
        calls = _calls(content)
        if content.get("role") != "model" or not calls:
            continue
        previous = contents[index - 1] if index else None
        if previous is None or not _is_user(previous):
            raise Rejected(
                400,
                "Please ensure that function call turn comes immediately after a user turn or after a "
                "function response turn.",
            )
        if index + 1 < len(contents) and len(_responses(contents[index + 1])) != len(calls):
            raise Rejected(
                400,
                "Please ensure that the number of function response parts is equal to the number of "
                "function call parts of the function call turn.",
            )


def check_tools(request: dict[str, Any], api: str, model: str = "") -> None:
    tools = request.get("tools", [])
    searching = any("googleSearch" in tool for tool in tools)
    calling = any(tool.get("functionDeclarations") for tool in tools)
    if searching and calling and not (api == "gemini" and catalog.is_gemini3(model)):
        # Built-in tools next to function declarations ("tool combination") are a Gemini 3
        # feature of the Gemini API; elsewhere generateContent refuses the pair.
        raise Rejected(400, "Tool use with function calling is unsupported")
    declarations = [
        (tool_index, decl_index, decl)
        for tool_index, tool in enumerate(request.get("tools", []))
        for decl_index, decl in enumerate(tool.get("functionDeclarations", []))
    ]
    if api == "vertex" and len(declarations) > MAX_FUNCTION_DECLARATIONS:
        raise Rejected(
            400,
            f"Unable to submit request because it has more than {MAX_FUNCTION_DECLARATIONS} function "
            f"declarations (found {len(declarations)}). Reduce the number of function declarations and try again.",
        )
    for tool_index, decl_index, decl in declarations:
        path = f"tools[{tool_index}].function_declarations[{decl_index}]"
        name = decl.get("name", "")
        if not _FUNCTION_NAME[api].fullmatch(name):
            raise _bad(api, f"{path}.name", _FUNCTION_NAME_MESSAGE[api])
        if "parameters" in decl:
            check_parameters(decl["parameters"], api, f"{path}.parameters")
        if "parameters" in decl and "parametersJsonSchema" in decl:
            raise _bad(
                api,
                f"{path}.parameters_json_schema",
                f"Unable to submit request because function `{name}` sets both `parameters` and "
                "`parameters_json_schema`; they are mutually exclusive.",
            )


def check_parameters(schema: dict[str, Any], api: str, path: str) -> None:
    """Vertex: the top-level schema must be an OBJECT (BerriAI/litellm#19139, genkit-ai/genkit#1134,
    vercel/ai#12183).  Gemini API: every OBJECT, nested ones included, needs non-empty
    ``properties`` (agno-agi/agno#2112, BerriAI/litellm#9289)."""
    if api == "vertex":
        if schema.get("type") != "OBJECT":
            raise Rejected(
                400,
                "Unable to submit request because functionDeclaration parameters schema should be of type "
                f"OBJECT. Learn more: {VERTEX_LEARN_MORE}",
            )
        return
    for where, sub in _schemas(schema, path):
        if sub.get("type") == "OBJECT" and not sub.get("properties"):
            raise _bad(api, f"{where}.properties", "should be non-empty for OBJECT type")


def _schemas(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """``schema`` and every schema nested in it, with their field paths."""
    found = [(path, schema)]
    for index, sub in enumerate(schema.get("properties", {}).values()):
        found.extend(_schemas(sub, f"{path}.properties[{index}].value"))
    if "items" in schema:
        found.extend(_schemas(schema["items"], f"{path}.items"))
    for index, sub in enumerate(schema.get("anyOf", [])):
        found.extend(_schemas(sub, f"{path}.any_of[{index}]"))
    return found


def _range(name: str, value: float, low: str, high: str) -> Rejected:
    return Rejected(
        400,
        f"Unable to submit request because it has a {name} value of {value:g} but the supported range is "
        f"from {low} (inclusive) to {high} (exclusive). Update the value and try again.",
    )


def check_generation_config(config: dict[str, Any], api: str, model: str) -> None:
    stops = config.get("stopSequences", [])
    if len(stops) > 5:
        if api == "gemini":
            raise _bad(api, "generation_config.stop_sequences", "the number of stop_sequences must not exceed 5")
        raise _range("stopSequences", len(stops), "1", "6")
    temperature = config.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise _range("temperature", temperature, "0", "2.0001")
    top_p = config.get("topP")
    if top_p is not None and not 0 <= top_p <= 1:
        raise _range("topP", top_p, "0", "1.0001")
    max_tokens = config.get("maxOutputTokens")
    high = catalog.max_output_tokens_exclusive(model, api)
    if max_tokens is not None and not 1 <= max_tokens < high:
        raise _range("maxOutputTokens", max_tokens, "1", str(high))
    if "thinkingConfig" in config:
        check_thinking(config["thinkingConfig"], api, model)


def check_thinking(thinking: dict[str, Any], api: str, model: str) -> None:
    family = catalog.family(model)
    budget = thinking.get("thinkingBudget")
    level = thinking.get("thinkingLevel")
    if family == "2.0":
        if api == "gemini":
            raise Rejected(400, "thinking_config is not supported.")
        raise Rejected(
            400, f"Unable to submit request because thinking is not supported by this model. Learn more: {VERTEX_LEARN_MORE}"
        )
    if budget is not None and level is not None:
        raise Rejected(400, "You can only set only one of thinking budget and thinking level.")
    if family == "2.5":
        if level is not None:
            raise Rejected(400, "Thinking level is not supported for this model.")
        if budget == 0 and model.startswith("gemini-2.5-pro"):
            if api == "gemini":
                raise Rejected(400, "Budget 0 is invalid. This model only works in thinking mode.")
            raise Rejected(400, "Unable to submit request because The model does not support setting thinking_budget to 0")
    if family == "3":
        if budget is not None:
            raise Rejected(400, "Thinking budget is not supported for this model. Use thinking level instead.")
        if level is not None and level != "THINKING_LEVEL_UNSPECIFIED" and level not in catalog.thinking_levels(model):
            raise Rejected(400, f"Thinking level {level} is not supported for this model.")


def current_turn_start(contents: list[dict[str, Any]]) -> int:
    """Index of the last user content with ordinary (non-functionResponse) parts, else 0."""
    for index in range(len(contents) - 1, -1, -1):
        content = contents[index]
        if _is_user(content) and any("functionResponse" not in part for part in content.get("parts", [])):
            return index
    return 0


def sentinels(api: str) -> frozenset[bytes]:
    values = [SKIP_SIGNATURE] + ([GEMINI_SKIP_SIGNATURE] if api == "gemini" else [])
    return frozenset(decode_bytes(value) or b"" for value in values)


def signature_anchor(part: dict[str, Any]) -> str:
    """What a signature is bound to: a call of the function it came with, or a text part.

    Google's thought-signature pages: return each signature on the part it came with, unchanged;
    a signature moved to another call, or merged onto two parts, is not valid.  The args are not
    part of the binding: clients send a call back with their own defaults filled in (Claude Code
    adds ``"replace_all": false`` to an Edit), and nothing Google publishes says it checks them.
    """
    if "functionCall" in part:
        return "call:" + str(part["functionCall"].get("name", ""))
    return "text"


def check_signatures(
    contents: list[dict[str, Any]], api: str, known: Callable[[bytes], str | None]
) -> None:
    start = current_turn_start(contents)
    for index in range(start + 1, len(contents)):
        content = contents[index]
        calls = _calls(content)
        if content.get("role") != "model" or not calls or "thoughtSignature" in calls[0]:
            continue
        name = calls[0]["functionCall"].get("name", "")
        if api == "gemini":
            raise Rejected(
                400,
                "Function call is missing a thought_signature in functionCall parts. This is required for "
                "tools to work correctly, and missing thought_signature may lead to degraded model "
                f"performance. Additional data, function call `default_api:{name}` , position {index + 1}. "
                "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
            )
        raise Rejected(
            400,
            f"Unable to submit request because function call `{name}` in the {index + 1}. content block is "
            "missing a `thought_signature`. Learn more: "
            "https://docs.cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures",
        )
    accepted = sentinels(api)
    used: set[bytes] = set()
    prefix = "Unable to submit request because " if api == "vertex" else ""
    for content in contents:
        for part in content.get("parts", []):
            if "thoughtSignature" not in part:
                continue
            raw = decode_bytes(part["thoughtSignature"]) or b""
            if raw in accepted:
                continue
            if known(raw) != signature_anchor(part) or raw in used:
                raise Rejected(400, f"{prefix}Thought signature is not valid.")
            used.add(raw)


def check_generate(
    body: Any, *, api: str, model: str, known_signature: Callable[[bytes], str | None] = lambda raw: None
) -> dict[str, Any]:
    """``known_signature(raw)`` is the anchor (see :func:`signature_anchor`) a signature was
    issued on, or None for one this server never issued."""
    request = structure(body, "GenerateContentRequest", api)
    contents = request.get("contents", [])
    if not contents:
        raise _bad(api, "contents", "contents is not specified")
    check_contents(contents, api)
    if "systemInstruction" in request:
        check_content(request["systemInstruction"], api, "system_instruction")
    if "cachedContent" in request and any(key in request for key in ("systemInstruction", "tools", "toolConfig")):
        raise Rejected(
            400,
            "CachedContent can not be used with GenerateContent request setting system_instruction, tools or "
            "tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request.",
        )
    check_tools(request, api, model)
    check_generation_config(request.get("generationConfig", {}), api, model)
    check_function_turns(contents)
    if catalog.is_gemini3(model):
        check_signatures(contents, api, known_signature)
    if contents[-1].get("role") == "model" and model in catalog.PREFILL_REJECTED:
        raise Rejected(400, "Requests ending with a model turn are not supported.")
    return request


def check_count_tokens(body: Any, *, api: str, model: str) -> dict[str, Any]:
    """Validate a ``countTokens`` body (Vertex: contents, systemInstruction, tools, generationConfig;
    Gemini API: contents or generateContentRequest)."""
    request = structure(body, "CountTokensRequest", api)
    check_contents(request.get("contents", []), api)
    if "systemInstruction" in request:
        check_content(request["systemInstruction"], api, "system_instruction")
    check_tools(request, api)
    nested = request.get("generateContentRequest")
    if nested is not None:
        if "contents" in request:
            raise Rejected(400, "contents and generate_content_request are mutually exclusive.")
        check_contents(nested.get("contents", []), api)
        check_tools(nested, api)
    return request
