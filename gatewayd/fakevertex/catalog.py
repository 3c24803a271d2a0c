"""The models the fake serves and what each generation accepts."""

KNOWN_MODELS = frozenset(
    {
        "gemini-2.0-flash",
        "gemini-2.0-flash-001",
        "gemini-2.0-flash-lite",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash-lite",
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
        "gemini-3.1-pro-preview",
    }
)

# Models that reject a request ending in a model turn (prefill); none of them is served here,
# but the rule is kept so the validator can be exercised against it.
PREFILL_REJECTED = frozenset(
    {"gemini-3.5-flash-lite", "gemini-3.6-flash", "gemini-3.7-flash", "gemini-3.8-flash"}
)


def family(model: str) -> str:
    """``"2.0"``, ``"2.5"`` or ``"3"`` (every gemini-3.x)."""
    if model.startswith("gemini-2.0"):
        return "2.0"
    if model.startswith("gemini-2.5"):
        return "2.5"
    if model.startswith("gemini-3"):
        return "3"
    return "other"


def is_gemini3(model: str) -> bool:
    return family(model) == "3"


# The exclusive upper bound Google quotes in its maxOutputTokens error, per family and API:
# gemini-2.0 "from 1 (inclusive) to 8193 (exclusive)"; gemini-2.5 on Vertex "to 65536
# (exclusive)" (BerriAI/litellm#10548; Vertex's 2.5 Flash page gives 65,535), while the Gemini
# API's 2.5 model pages give an output limit of 65,536; Gemini 3 takes 65,536 on both.
_MAX_OUTPUT_EXCLUSIVE = {
    ("2.0", "vertex"): 8193,
    ("2.0", "gemini"): 8193,
    ("2.5", "vertex"): 65536,
    ("2.5", "gemini"): 65537,
}


def max_output_tokens_exclusive(model: str, api: str) -> int:
    return _MAX_OUTPUT_EXCLUSIVE.get((family(model), api), 65537)


def thinking_levels(model: str) -> frozenset[str]:
    """Thinking levels a Gemini 3 model takes (Google's per-model table)."""
    if model.startswith("gemini-3-pro"):
        return frozenset({"LOW", "HIGH"})
    if model.startswith("gemini-3.1-pro"):
        return frozenset({"LOW", "MEDIUM", "HIGH"})
    if model.startswith("gemini-3.7-flash"):
        return frozenset({"LOW", "MEDIUM", "HIGH"})
    return frozenset({"MINIMAL", "LOW", "MEDIUM", "HIGH"})
