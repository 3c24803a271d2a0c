"""ai-proxy-advanced's ``balancer``: which target serves a request, and the next one on failure.

Pure bookkeeping on target indices with an injected clock, so tests drive it
with ``task.Clock``.  Semantics follow Kong's documentation of the block:

- ``round-robin``: smooth weighted round-robin (nginx's), by ``weight``.
- ``priority``: targets are grouped by ``weight``; the group with the highest
  weight serves, round-robin inside it, and a lower group is used only when
  every target of the higher ones has failed or is cooling down.
- ``lowest-latency``: the target with the lowest moving average of
  ``latency_strategy`` (``tpot``: milliseconds per output token; ``e2e``:
  milliseconds per request); targets never measured go first.
- ``lowest-usage``: the target with the fewest tokens (``tokens_count_strategy``)
  per unit of ``weight``.
- ``least-connections``: the fewest requests in flight per unit of ``weight``.
- ``consistent-hashing``: weighted rendezvous hashing of the ``hash_on_header``
  value, so one Claude Code session (``X-Claude-Code-Session-Id``) keeps its
  target, and when that target fails the session moves to the same second
  choice every time.  Without the header it is round-robin.

``model_alias`` (Kong 3.15): targets whose alias is the request's ``model``
serve it, balanced among themselves; with no such alias, the targets whose
model name equals it are preferred; else the whole balancer chooses.  The
others follow as failover.  Beyond Kong, an alias also takes the dated names
of a model (``claude-haiku-4-5`` takes ``claude-haiku-4-5-20251001`` and
``claude-haiku-4-5@20251001``) and may hold ``*`` wildcards
(``claude-haiku-*``), where no exact alias matched.  A request never tries the same target twice, and makes at
most ``retries + 1`` attempts.  Passive health: ``max_fails`` failures (as
``failover_criteria`` defines them) within ``fail_timeout`` take a target out
for ``fail_timeout``; then it comes back by itself.  ``max_fails: 0`` (Kong's
default) turns this off.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from typing import Any, Iterator, Mapping, Sequence

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime

ALGORITHMS = (
    "round-robin",
    "priority",
    "lowest-latency",
    "lowest-usage",
    "least-connections",
    "consistent-hashing",
)

#: Moving-average weight of the newest latency sample.
_EWMA = 0.3
#: Requested model names whose matching targets a balancer remembers.
_MODELS_KEPT = 256


class UnsupportedBalancer(ValueError):
    """A balancer setting gatewayd does not serve; the message names the field."""


@frozen
class BalancerConfig:
    """The ``balancer`` block, validated, with times in seconds."""

    algorithm: str = "round-robin"
    hash_on_header: str = "X-Kong-LLM-Request-ID"
    retries: int = 5
    failover_criteria: frozenset[str] = frozenset({"error", "timeout"})
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    write_timeout: float = 60.0
    max_fails: int = 0
    fail_timeout: float = 10.0
    latency_strategy: str = "tpot"
    tokens_count_strategy: str = "total-tokens"

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "BalancerConfig":
        """From the plugin's ``balancer`` (Kong's defaults already filled in)."""
        config = config or {}
        defaults = cls()
        algorithm = config.get("algorithm") or defaults.algorithm
        if algorithm not in ALGORITHMS:
            raise UnsupportedBalancer(
                f"balancer.algorithm: {algorithm!r} is not served by gatewayd "
                f"(it serves {', '.join(ALGORITHMS)})"
            )
        strategy = config.get("tokens_count_strategy") or defaults.tokens_count_strategy
        if algorithm == "lowest-usage" and strategy == "llm-accuracy":
            raise UnsupportedBalancer(
                "balancer.tokens_count_strategy: 'llm-accuracy' needs an evaluator gatewayd does not have"
            )

        def seconds(name: str, default: float) -> float:
            value = config.get(name)
            return default if value is None else value / 1000

        return cls(
            algorithm=algorithm,
            hash_on_header=config.get("hash_on_header") or defaults.hash_on_header,
            retries=defaults.retries if config.get("retries") is None else config["retries"],
            failover_criteria=frozenset(
                defaults.failover_criteria
                if config.get("failover_criteria") is None
                else config["failover_criteria"]
            ),
            connect_timeout=seconds("connect_timeout", defaults.connect_timeout),
            read_timeout=seconds("read_timeout", defaults.read_timeout),
            write_timeout=seconds("write_timeout", defaults.write_timeout),
            max_fails=config.get("max_fails") or 0,
            fail_timeout=seconds("fail_timeout", defaults.fail_timeout),
            latency_strategy=config.get("latency_strategy") or defaults.latency_strategy,
            tokens_count_strategy=strategy,
        )

    def fails_over(self, outcome: str) -> bool:
        """Whether an attempt that ended with ``outcome`` (``http_429``, ``timeout``, ...) moves on."""
        return outcome in self.failover_criteria


@define
class _Health:
    """What the balancer has seen of one target."""

    current_weight: int = 0
    fails: int = 0
    window_started: float = 0.0
    down_until: float = 0.0
    latency: float | None = None
    usage: float = 0.0
    in_flight: int = 0


@frozen
class Candidate:
    """What the balancer needs of a target: its model name, weight and ``model_alias``."""

    model: str
    weight: int = 100
    alias: str | None = None


_DATED = re.compile(r"(.+)[-@]\d{8}\Z")


def alias_matches(alias: str, model: str) -> bool:
    """gatewayd's looser alias match: a dated name of the alias, or a ``*`` wildcard."""
    if "*" in alias:
        return fnmatch.fnmatchcase(model, alias)
    dated = _DATED.match(model)
    return dated is not None and dated.group(1) == alias


@define
class Balancer:
    """The balancer of one plugin instance; survives only as long as its snapshot."""

    targets: Sequence[Candidate]
    config: BalancerConfig
    clock: IReactorTime
    _health: list[_Health] = field(init=False)
    #: Per requested model, the targets it names (see ``_levels``).
    _by_model: dict[str, tuple[tuple[int, ...], ...]] = field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._health = [_Health() for _ in self.targets]

    def attempts(self, model: str | None, hash_key: str | None = None) -> Iterator[int]:
        """The targets to try for one request, in order, each at most once.

        Each index is chosen when the previous attempt has failed, so health
        learnt meanwhile counts.  Targets cooling down are skipped; when every
        remaining one is, the iteration ends.
        """
        tried: set[int] = set()
        for _ in range(self.config.retries + 1):
            index = self._choose(model, hash_key, tried)
            if index is None:
                return
            tried.add(index)
            yield index

    def available(self, index: int) -> bool:
        return self._health[index].down_until <= self.clock.seconds()

    def next_recovery(self) -> float:
        """Seconds until the first target that is cooling down comes back."""
        now = self.clock.seconds()
        waits = [h.down_until - now for h in self._health if h.down_until > now]
        return min(waits, default=0.0)

    def started(self, index: int) -> None:
        self._health[index].in_flight += 1

    def failed(self, index: int) -> None:
        """An attempt on ``index`` failed in a way ``failover_criteria`` names."""
        health = self._health[index]
        health.in_flight = max(0, health.in_flight - 1)
        if self.config.max_fails <= 0:
            return
        now = self.clock.seconds()
        if health.fails == 0 or now - health.window_started > self.config.fail_timeout:
            health.fails, health.window_started = 0, now
        health.fails += 1
        if health.fails >= self.config.max_fails:
            health.down_until = now + self.config.fail_timeout
            health.fails = 0

    def finished(self, index: int, usage: Mapping[str, float] | None = None, latency_ms: float | None = None) -> None:
        """An attempt on ``index`` answered (whatever the client made of it)."""
        health = self._health[index]
        health.in_flight = max(0, health.in_flight - 1)
        health.fails = 0
        usage = usage or {}
        if latency_ms is not None:
            sample = latency_ms
            if self.config.latency_strategy == "tpot":
                sample = latency_ms / max(1.0, usage.get("completion_tokens", 0))
            health.latency = sample if health.latency is None else (
                _EWMA * sample + (1 - _EWMA) * health.latency
            )
        health.usage += _usage(self.config.tokens_count_strategy, usage)

    def released(self, index: int) -> None:
        """An attempt on ``index`` ended with no verdict on the target (the client left)."""
        health = self._health[index]
        health.in_flight = max(0, health.in_flight - 1)

    def _wanted(self, model: str | None, eligible: list[int]) -> list[int]:
        """The eligible targets the request's ``model`` asks for (see the module's docstring)."""
        if model is None:
            return []
        for level in self._levels(model):
            wanted = [i for i in level if i in eligible]
            if wanted:
                return wanted
        return []

    def _levels(self, model: str) -> tuple[tuple[int, ...], ...]:
        """The targets ``model`` names, by how it names them (exact alias, loose alias,
        model name), worked out once per model: ``_MODELS_KEPT`` names at most, as
        clients choose the names."""
        levels = self._by_model.get(model)
        if levels is None:
            targets = self.targets
            levels = tuple(
                tuple(i for i, target in enumerate(targets) if matches(target))
                for matches in (
                    lambda t: t.alias == model,
                    lambda t: t.alias is not None and alias_matches(t.alias, model),
                    lambda t: t.model == model,
                )
            )
            if len(self._by_model) >= _MODELS_KEPT:
                self._by_model.clear()
            self._by_model[model] = levels
        return levels

    def _choose(self, model: str | None, hash_key: str | None, tried: set[int]) -> int | None:
        now = self.clock.seconds()
        eligible = [i for i, health in enumerate(self._health) if i not in tried and health.down_until <= now]
        if not eligible:
            return None
        pool = self._wanted(model, eligible) or eligible
        if len(pool) == 1:
            return pool[0]  # every algorithm's choice, and round-robin's weights end where they were
        algorithm = self.config.algorithm
        if algorithm == "priority":
            top = max(self.targets[i].weight for i in pool)
            return self._round_robin([i for i in pool if self.targets[i].weight == top])
        if algorithm == "consistent-hashing" and hash_key:
            return max(pool, key=lambda i: _rendezvous(hash_key, i, self.targets[i].weight))
        if algorithm == "lowest-latency":
            return self._lowest(pool, lambda i: self._health[i].latency or 0.0)
        if algorithm == "lowest-usage":
            return self._lowest(pool, lambda i: self._health[i].usage / self.targets[i].weight)
        if algorithm == "least-connections":
            return self._lowest(pool, lambda i: self._health[i].in_flight / self.targets[i].weight)
        return self._round_robin(pool)

    def _lowest(self, pool: list[int], metric: Any) -> int:
        best = min(metric(i) for i in pool)
        return self._round_robin([i for i in pool if metric(i) == best])

    def _round_robin(self, pool: list[int]) -> int:
        """nginx's smooth weighted round-robin over ``pool``."""
        total = 0
        for i in pool:
            self._health[i].current_weight += self.targets[i].weight
            total += self.targets[i].weight
        chosen = max(pool, key=lambda i: (self._health[i].current_weight, -i))
        self._health[chosen].current_weight -= total
        return chosen


def _usage(strategy: str, usage: Mapping[str, float]) -> float:
    if strategy == "prompt-tokens":
        return usage.get("prompt_tokens", 0)
    if strategy == "completion-tokens":
        return usage.get("completion_tokens", 0)
    if strategy == "cost":
        return usage.get("cost", 0)
    return usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)


def _rendezvous(key: str, index: int, weight: int) -> float:
    """Weighted highest-random-weight score of target ``index`` for ``key``."""
    digest = hashlib.sha256(f"{index}:{key}".encode("utf-8")).digest()
    unit = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -weight / math.log(unit)
