"""What the translator needs to know about the Gemini model it targets.

Gemini generations differ in what they accept (output limit, thinking knobs, prefill); the
profile derives those facts from the model name so the request builder never guesses.
"""

import functools
import re

from attrs import field, frozen

_VERSION = re.compile(r"gemini-(\d+)(?:\.(\d+))?")

# The largest maxOutputTokens each family takes, per API: the one table the request builder
# clamps to and the fake's limits are tested against (tests/test_translate_request.py).
# gemini-2.0: 8192; gemini-2.5: 65535 on Vertex ("from 1 (inclusive) to 65536 (exclusive)",
# BerriAI/litellm#10548), 65536 on the Gemini API (its model pages); Gemini 3: 65536.
OUTPUT_LIMITS = {
    ("2.0", "vertex"): 8192,
    ("2.0", "gemini"): 8192,
    ("2.5", "vertex"): 65535,
    ("2.5", "gemini"): 65536,
    ("3", "vertex"): 65536,
    ("3", "gemini"): 65536,
}

# Gemini 2.5 thinkingBudget ranges (inclusive); -1 asks for a dynamic budget.
_BUDGET_PRO = (128, 32768)
_BUDGET_FLASH = (0, 24576)
_BUDGET_FLASH_LITE = (512, 24576)


@functools.lru_cache(maxsize=64)
def _generation(model_id: str) -> tuple[int, int]:
    """Kept per name: every request asks several of the profile's questions, each of them this."""
    match = _VERSION.search(model_id)
    if match is None:
        return (3, 0)
    return (int(match.group(1)), int(match.group(2) or 0))


@functools.lru_cache(maxsize=64)
def _family(model_id: str) -> str:
    major, minor = _generation(model_id)
    if major >= 3:
        return "3"
    return "2.5" if (major, minor) >= (2, 5) else "2.0"


@frozen
class ModelProfile:
    """The target model: its name, which API serves it, and an optional operator output cap."""

    name: str
    api: str = "vertex"  # "vertex" (Vertex AI v1) or "gemini" (Gemini API v1beta)
    max_tokens: int | None = None
    # Derived once: a request asks several questions of them.
    #: The bare model id, without any ``publishers/google/models/`` style prefix.
    model_id: str = field(init=False, eq=False, repr=False)
    #: "2.0", "2.5" or "3" (every 3.x behaves alike for translation).
    family: str = field(init=False, eq=False, repr=False)

    @model_id.default
    def _bare_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @family.default
    def _family_of_name(self) -> str:
        return _family(self.model_id)

    @property
    def generation(self) -> tuple[int, int]:
        """(major, minor) from the name; unknown names count as the newest generation we know."""
        return _generation(self.model_id)

    @property
    def is_gemini3(self) -> bool:
        return self.family == "3"

    @property
    def is_pro(self) -> bool:
        return "-pro" in self.model_id

    @property
    def is_flash_lite(self) -> bool:
        return "flash-lite" in self.model_id

    @property
    def supports_thinking(self) -> bool:
        """gemini-2.0 rejects any thinkingConfig."""
        return self.family != "2.0"

    @property
    def output_limit(self) -> int:
        """The largest maxOutputTokens the model accepts on this API."""
        return OUTPUT_LIMITS[self.family, self.api]

    @property
    def thinking_budget_range(self) -> tuple[int, int]:
        """Gemini 2.5's accepted thinkingBudget range (2.5-pro cannot turn thinking off)."""
        if self.is_pro:
            return _BUDGET_PRO
        if self.is_flash_lite:
            return _BUDGET_FLASH_LITE
        return _BUDGET_FLASH

    @property
    def thinking_levels(self) -> tuple[str, ...]:
        """Gemini 3 thinkingLevel values, lowest first (Pro has no MINIMAL or MEDIUM)."""
        if self.is_pro:
            return ("LOW", "HIGH")
        return ("MINIMAL", "LOW", "MEDIUM", "HIGH")

    @property
    def accepts_prefill(self) -> bool:
        """Whether a request may end in a model turn (3.5-flash-lite and 3.6+ flash reject it)."""
        if not self.is_gemini3:
            return True
        version = self.generation
        if self.is_flash_lite:
            return version < (3, 5)
        if "flash" in self.model_id:
            return version < (3, 6)
        return True
