"""Kong 3.15's ``ai.proxy.usage`` from what the upstream reported, and its cost.

Pure functions: the handler hands in Gemini's ``usageMetadata`` (or the
Anthropic ``usage`` of a Claude model on Vertex) and the target's
:class:`Pricing`; the result keeps Kong's keys, which the rate limiter and the
prometheus plugin read from ``exchange.ai_usage``.

Which number goes where follows Kong 3.15.0.4's changelog: Gemini's reasoning
tokens (``thoughtsTokenCount``) are part of ``completion_tokens`` and shown as
``completion_tokens_details.reasoning_tokens``; ``toolUsePromptTokenCount``
(billed when grounding runs) is part of ``prompt_tokens``; cache reads and
cache writes are part of ``prompt_tokens``; ``total_tokens`` is Gemini's own
total.  Cost is computed only when both ``input_cost`` and ``output_cost`` are
set, per 1M tokens, as Kong does.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from attrs import frozen

_THRESHOLD = re.compile(r"\s*(\d+)\s*([kKmM]?)\s*\Z")
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_threshold(text: str) -> int:
    """``context_window_factor[].above``: a token count, ``200000`` or ``200k`` (``1m``).

    Raises ValueError for anything else.
    """
    match = _THRESHOLD.match(text)
    if match is None:
        raise ValueError("expected a token count such as 200000 or 200k")
    return int(match.group(1)) * _SCALE[match.group(2).lower()]


@frozen
class WindowFactor:
    above: int
    input_factor: float
    output_factor: float


@frozen
class Pricing:
    """A target's prices per 1M tokens (``model.options``); None where not configured."""

    input_cost: float | None = None
    output_cost: float | None = None
    cache_read_cost: float | None = None
    cache_write_cost: float | None = None
    #: ``cache_write_cost_list``: (ttl, cost), e.g. ("5m", 3.75), ("1h", 6.0).
    cache_write_costs: tuple[tuple[str, float], ...] = ()
    context_window: tuple[WindowFactor, ...] = ()
    #: ``service_tier_factor``: (tier word, factor).
    service_tiers: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "Pricing":
        """From a validated ``model.options``; ``above`` must already be checked."""
        return cls(
            input_cost=options.get("input_cost"),
            output_cost=options.get("output_cost"),
            cache_read_cost=options.get("cache_read_cost"),
            cache_write_cost=options.get("cache_write_cost"),
            cache_write_costs=tuple(
                (entry["ttl"], entry["cost"]) for entry in options.get("cache_write_cost_list") or ()
            ),
            context_window=tuple(
                WindowFactor(parse_threshold(entry["above"]), entry["input_factor"], entry["output_factor"])
                for entry in options.get("context_window_factor") or ()
            ),
            service_tiers=tuple(
                (entry["tier"], entry["factor"]) for entry in options.get("service_tier_factor") or ()
            ),
        )


@frozen
class Tokens:
    """One answer's tokens, as billed."""

    prompt: int = 0  # every input token: uncached + cache reads + cache writes + tool-use prompt
    cache_read: int = 0
    cache_write: int = 0
    #: Cache writes by TTL ("5m", "1h"), when the upstream says (Anthropic); they sum to ``cache_write``.
    cache_write_by_ttl: tuple[tuple[str, int], ...] = ()
    completion: int = 0  # every output token, reasoning included
    reasoning: int = 0
    total: int = 0
    service_tier: str | None = None


def tokens_from_gemini(metadata: Mapping[str, Any]) -> Tokens:
    """Gemini's ``usageMetadata`` as billed (Google's price list: thoughts are output)."""
    prompt = _int(metadata.get("promptTokenCount")) + _int(metadata.get("toolUsePromptTokenCount"))
    thoughts = _int(metadata.get("thoughtsTokenCount"))
    completion = _int(metadata.get("candidatesTokenCount")) + thoughts
    total = _int(metadata.get("totalTokenCount")) or prompt + completion
    tier = metadata.get("trafficType")
    return Tokens(
        prompt=prompt,
        cache_read=_int(metadata.get("cachedContentTokenCount")),
        completion=completion,
        reasoning=thoughts,
        total=total,
        service_tier=tier if isinstance(tier, str) else None,
    )


def tokens_from_anthropic(usage: Mapping[str, Any]) -> Tokens:
    """An Anthropic ``usage`` (Claude on Vertex) as billed: cache reads and writes are input."""
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + read + write
    completion = _int(usage.get("output_tokens"))
    by_ttl: tuple[tuple[str, int], ...] = ()
    creation = usage.get("cache_creation")
    if isinstance(creation, Mapping):
        by_ttl = tuple(
            (ttl, _int(creation.get(f"ephemeral_{ttl}_input_tokens"))) for ttl in ("5m", "1h")
        )
    tier = usage.get("service_tier")
    return Tokens(
        prompt=prompt,
        cache_read=read,
        cache_write=write,
        cache_write_by_ttl=by_ttl,
        completion=completion,
        total=prompt + completion,
        service_tier=tier if isinstance(tier, str) else None,
    )


def cost(tokens: Tokens, pricing: Pricing) -> float:
    """The answer's cost, in the unit of the configured prices (Kong: per 1M tokens).

    Zero unless both ``input_cost`` and ``output_cost`` are set.  Cache reads
    and writes cost ``input_cost`` where their own price is not set.  The
    largest ``context_window_factor`` whose ``above`` the prompt passes scales
    the input-side prices and the output price; the best-matching
    ``service_tier_factor`` scales the whole.
    """
    if pricing.input_cost is None or pricing.output_cost is None:
        return 0
    input_factor = output_factor = 1.0
    passed = [window for window in pricing.context_window if tokens.prompt > window.above]
    if passed:
        window = max(passed, key=lambda window: window.above)
        input_factor, output_factor = window.input_factor, window.output_factor
    read_price = pricing.input_cost if pricing.cache_read_cost is None else pricing.cache_read_cost
    write_price = pricing.input_cost if pricing.cache_write_cost is None else pricing.cache_write_cost
    write = tokens.cache_write * write_price
    ttl_prices = dict(pricing.cache_write_costs)
    if ttl_prices and tokens.cache_write_by_ttl:
        write = sum(count * ttl_prices.get(ttl, write_price) for ttl, count in tokens.cache_write_by_ttl)
    uncached = max(tokens.prompt - tokens.cache_read - tokens.cache_write, 0)
    total = (
        (uncached * pricing.input_cost + tokens.cache_read * read_price + write) * input_factor
        + tokens.completion * pricing.output_cost * output_factor
    )
    return total * tier_factor(tokens.service_tier, pricing.service_tiers) / 1e6


def tier_factor(reported: str | None, tiers: Sequence[tuple[str, float]]) -> float:
    """Kong's ``service_tier_factor`` match: a case-insensitive substring of the reported
    tier, the longest matching word winning; 1.0 when none matches."""
    if not reported:
        return 1.0
    lowered = reported.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    matches = [
        (len(word), factor)
        for word, factor in tiers
        if word.lower() in lowered or (word.lower() == "priority" and "fast" in words)
    ]
    return max(matches)[1] if matches else 1.0


def kong_usage(
    tokens: Tokens, pricing: Pricing, *, latency_ms: int, first_token_ms: int
) -> dict[str, Any]:
    """``ai.proxy.usage`` with Kong's keys."""
    prompt_details: dict[str, int] = {}
    if tokens.cache_read:
        prompt_details["cached_tokens"] = tokens.cache_read
    completion_details: dict[str, int] = {}
    if tokens.reasoning:
        completion_details["reasoning_tokens"] = tokens.reasoning
    return {
        "prompt_tokens": tokens.prompt,
        "prompt_tokens_details": prompt_details,
        "completion_tokens": tokens.completion,
        "completion_tokens_details": completion_details,
        "total_tokens": tokens.total,
        "cost": cost(tokens, pricing),
        "time_per_token": latency_ms / tokens.completion if tokens.completion else 0,
        "time_to_first_token": first_token_ms,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
