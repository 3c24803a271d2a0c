"""ai-rate-limiting-advanced: token and cost budgets per consumer, one node or shared in Redis.

At access the request *reserves* an estimate of what it will spend (its prompt,
from the body's size) and is let in only while every window still has room; at
log the reservation is *settled* against the usage the upstream reported
(streams: their final usage).  Concurrent requests therefore see each other's
reservations, and a consumer can overshoot a budget by at most one request's
worth, the one that was admitted while room remained.

Windows are Kong's: ``fixed`` counts per aligned window; ``sliding`` adds the
previous window's count weighted by how much of it still overlaps.  The same
algorithm runs in memory (:class:`LocalStore`) or as one Lua script in Redis
(:class:`RedisStore`), so instances sharing a Redis share the budget atomically.
"""

from __future__ import annotations

import math
import random
from typing import Any, Mapping, Protocol, Sequence

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from gatewayd import errors
from gatewayd.config import Plugin
from gatewayd.exchange import Exchange
from gatewayd.plugins import refuse

#: Kong's window labels in the X-AI-RateLimit-* header names; other sizes use the seconds.
WINDOW_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day", 2592000: "month",
                31536000: "year"}
#: How many bytes of request body make one prompt token, for the reservation.
BYTES_PER_TOKEN = 4
KEY_PREFIX = "gatewayd:ai-rate-limiting:"


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


@frozen
class Window:
    provider: str
    limit: float
    size: float

    @property
    def label(self) -> str:
        return WINDOW_NAMES.get(self.size, _number(self.size))  # type: ignore[call-overload]


@frozen
class Counter:
    """Where one window's usage is counted for one identity, at one moment."""

    current: str
    previous: str
    weight: float  # of the previous window's count (0 for fixed windows)
    limit: float
    ttl_ms: int
    reset: float  # seconds until the current window ends


def counters(windows: Sequence[Window], scope: str, now: float, sliding: bool) -> list[Counter]:
    result = []
    for window in windows:
        index = math.floor(now / window.size)
        elapsed = now - index * window.size
        base = f"{KEY_PREFIX}{scope}:{window.provider}:{_number(window.size)}:"
        result.append(Counter(
            current=f"{base}{index}",
            previous=f"{base}{index - 1}",
            weight=(window.size - elapsed) / window.size if sliding else 0.0,
            limit=window.limit,
            ttl_ms=math.ceil(window.size * 2000),
            reset=window.size - elapsed,
        ))
    return result


class Store(Protocol):
    async def reserve(self, counters: Sequence[Counter], amount: float) -> tuple[bool, list[float]]:
        """Usage per counter before this request; if every one is under its limit,
        add ``amount`` to each and say so."""

    async def charge(self, counters: Sequence[Counter], amount: float) -> None:
        """Add ``amount`` (negative: give back) to each counter's current window."""


@define
class LocalStore:
    """Counters in this process's memory (``strategy: local``)."""

    clock: IReactorTime
    _values: dict[str, tuple[float, float]] = field(factory=dict)  # key -> (value, expires)
    _next_sweep: float = 0.0

    def _get(self, key: str, now: float) -> float:
        value, expires = self._values.get(key, (0.0, 0.0))
        return value if expires > now else 0.0

    async def reserve(self, counters: Sequence[Counter], amount: float) -> tuple[bool, list[float]]:
        now = self.clock.seconds()
        self._sweep(now)
        used = [self._get(c.current, now) + self._get(c.previous, now) * c.weight for c in counters]
        allowed = all(u < c.limit for u, c in zip(used, counters))
        if allowed and amount:
            self._add(counters, amount, now)
        return allowed, used

    async def charge(self, counters: Sequence[Counter], amount: float) -> None:
        if amount:
            self._add(counters, amount, self.clock.seconds())

    def _add(self, counters: Sequence[Counter], amount: float, now: float) -> None:
        for counter in counters:
            self._values[counter.current] = (
                self._get(counter.current, now) + amount, now + counter.ttl_ms / 1000)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._values = {k: v for k, v in self._values.items() if v[1] > now}
        self._next_sweep = now + 60


# KEYS: current and previous key of each window; ARGV: amount, then weight, limit, ttl_ms per window.
RESERVE_SCRIPT = """
local n = #KEYS / 2
local result = {1}
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local used = current + previous * tonumber(ARGV[3 * i - 1])
  result[i + 1] = tostring(used)
  if used >= tonumber(ARGV[3 * i]) then result[1] = 0 end
end
if result[1] == 1 and tonumber(ARGV[1]) ~= 0 then
  for i = 1, n do
    redis.call('INCRBYFLOAT', KEYS[2 * i - 1], ARGV[1])
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[3 * i + 1])
  end
end
return result
"""

# KEYS: the current key of each window; ARGV: amount, then ttl_ms per window.
CHARGE_SCRIPT = """
for i = 1, #KEYS do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[i + 1])
end
return #KEYS
"""


@define
class RedisStore:
    """Counters in Redis (``strategy: redis``), updated atomically by Lua scripts."""

    connection: Any  # a txredisapi lazy connection

    async def reserve(self, counters: Sequence[Counter], amount: float) -> tuple[bool, list[float]]:
        keys = [key for c in counters for key in (c.current, c.previous)]
        args: list[Any] = [repr(float(amount))]
        for c in counters:
            args += [repr(c.weight), repr(float(c.limit)), c.ttl_ms]
        result = await self.connection.eval(RESERVE_SCRIPT, keys, args)
        return int(result[0]) == 1, [float(value) for value in result[1:]]

    async def charge(self, counters: Sequence[Counter], amount: float) -> None:
        if amount:
            await self.connection.eval(
                CHARGE_SCRIPT, [c.current for c in counters],
                [repr(float(amount)), *[c.ttl_ms for c in counters]])

    def close(self) -> Any:
        return self.connection.disconnect()


def redis_store(plugin: Plugin) -> RedisStore:
    """A lazy, reconnecting txredisapi connection for the plugin's ``redis`` block."""
    import txredisapi

    redis = plugin.config["redis"]
    for name in ("sentinel_master", "sentinel_nodes", "cluster_nodes", "cloud_authentication"):
        if redis.get(name):
            raise refuse(plugin, f"redis.{name}", "Redis Sentinel, Cluster and cloud "
                                                  "authentication are not supported yet")
    connection = txredisapi.lazyConnection(
        host=redis["host"], port=redis["port"], dbid=redis["database"],
        password=redis.get("password"), username=redis.get("username"),
        ssl_context_factory=bool(redis["ssl"]),
        connectTimeout=redis["connect_timeout"] / 1000 or None,
        replyTimeout=max(redis["read_timeout"], redis["send_timeout"]) / 1000 or None,
    )
    return RedisStore(connection)


def redis_identity(plugin: Plugin) -> tuple[Any, ...]:
    """Plugins that name the same Redis share one connection."""
    redis = plugin.config["redis"]
    return tuple(redis.get(k) for k in ("host", "port", "database", "username", "password", "ssl"))


@define
class AIRateLimiter:
    """One ai-rate-limiting-advanced plugin instance on one route."""

    plugin_id: str
    windows: tuple[Window, ...]
    store: Store
    clock: IReactorTime
    identifier: str
    header_name: str | None
    count: str  # tokens_count_strategy
    sliding: bool
    input_cost: float
    hide_headers: bool
    error_code: int
    error_message: str
    hide_providers: bool
    jitter_max: float
    scope: str  # namespace, else the plugin id: instances configured alike share counters

    _logger = Logger()

    @classmethod
    def from_plugin(cls, plugin: Plugin, provider: str, input_cost: float, store: Store,
                    clock: IReactorTime) -> "AIRateLimiter":
        settings = plugin.config
        if settings["strategy"] == "cluster":
            raise refuse(plugin, "strategy", "'cluster' needs Kong's database; use local or redis")
        if settings["identifier"] in ("consumer-group", "path"):
            raise refuse(plugin, "identifier", f"{settings['identifier']!r} is not supported yet "
                                               "(use consumer, credential, ip, header or service)")
        if settings["identifier"] == "header" and not settings.get("header_name"):
            raise refuse(plugin, "header_name", "required when identifier is 'header'")
        windows = []
        for index, entry in enumerate(settings["llm_providers"]):
            if entry["name"] in ("requestPrompt", "customCost"):
                raise refuse(plugin, f"llm_providers[{index}].name",
                             f"{entry['name']!r} needs custom Lua functions; not supported")
            if entry["name"] != provider:
                continue
            for limit, size in zip(entry["limit"], entry["window_size"]):
                if size <= 0:
                    raise refuse(plugin, f"llm_providers[{index}].window_size",
                                 "window sizes must be positive")
                windows.append(Window(entry["name"], limit, size))
        return cls(
            plugin_id=plugin.id, windows=tuple(windows), store=store, clock=clock,
            identifier=settings["identifier"], header_name=settings.get("header_name"),
            count=settings["tokens_count_strategy"], sliding=settings["window_type"] == "sliding",
            input_cost=input_cost, hide_headers=settings["hide_client_headers"],
            error_code=int(settings["error_code"]), error_message=settings["error_message"],
            hide_providers=settings["error_hide_providers"],
            jitter_max=settings["retry_after_jitter_max"],
            scope=settings.get("namespace") or plugin.id,
        )

    def identity(self, request: Request, exchange: Exchange) -> str:
        """Kong's identifiers; consumer, credential and header fall back to the client IP."""
        value: str | None = None
        if self.identifier == "consumer" and exchange.consumer is not None:
            value = exchange.consumer.id
        elif self.identifier == "credential" and exchange.credential is not None:
            value = exchange.credential.id
        elif self.identifier == "header" and self.header_name:
            value = request.getHeader(self.header_name)
        elif self.identifier == "service" and exchange.service is not None:
            value = exchange.service["id"]
        if value is None:
            address = request.getClientAddress()
            value = getattr(address, "host", "") or ""
        return f"{self.identifier}:{value}"

    def estimate(self, exchange: Exchange) -> float:
        """What to reserve before the upstream says: the prompt, guessed from the body."""
        prompt = exchange.request_size / BYTES_PER_TOKEN
        if self.count in ("total_tokens", "prompt_tokens"):
            return math.ceil(prompt)
        if self.count == "cost":
            return prompt * self.input_cost / 1e6
        return 0.0

    def spent(self, exchange: Exchange) -> float:
        usage = exchange.ai_usage or {}
        return float(usage.get(self.count) or 0)

    async def access(self, request: Request, exchange: Exchange) -> None:
        if not self.windows:
            return
        found = counters(self.windows, f"{self.scope}:{self.identity(request, exchange)}",
                         self.clock.seconds(), self.sliding)
        amount = self.estimate(exchange)
        try:
            allowed, used = await self.store.reserve(found, amount)
        except Exception as error:
            # Fail open, as Kong does when its counter store is unreachable.
            self._logger.error("ai-rate-limiting-advanced: counter store failed, request let "
                               "through: {error}", error=str(error))
            return
        if not self.hide_headers:
            for window, counter, usage in zip(self.windows, found, used):
                suffix = f"{window.label}-{window.provider}"
                request.setHeader(f"X-AI-RateLimit-Limit-{suffix}", _number(window.limit))
                request.setHeader(f"X-AI-RateLimit-Remaining-{suffix}",
                                  _number(max(0.0, window.limit - usage)))
                request.setHeader(f"X-AI-RateLimit-Reset-{suffix}", str(math.ceil(counter.reset)))
        if allowed:
            exchange.plugin_data[self.plugin_id] = (found, amount)
            return
        exceeded = [(w, c) for w, c, u in zip(self.windows, found, used) if u >= w.limit]
        reset = max(math.ceil(c.reset) for _, c in exceeded)
        retry = reset + (math.ceil(random.uniform(0, self.jitter_max)) if self.jitter_max else 0)
        providers = "" if self.hide_providers else ", ".join(dict.fromkeys(w.provider for w, _ in exceeded))
        request.setHeader("X-AI-RateLimit-Reset", str(reset))
        raise errors.APIError(
            self.error_code, "rate_limit_error", (self.error_message + providers).strip(),
            headers=(("retry-after", str(retry)),),
        )

    def log(self, request: Request, exchange: Exchange, record: Mapping[str, Any]) -> None:
        reserved = exchange.plugin_data.pop(self.plugin_id, None)
        if reserved is None:
            return
        found, amount = reserved
        delta = self.spent(exchange) - amount
        if delta:
            Deferred.fromCoroutine(self.store.charge(found, delta)).addErrback(
                lambda failure: self._logger.error(
                    "ai-rate-limiting-advanced: could not settle usage: {error}",
                    error=str(failure.value)))
