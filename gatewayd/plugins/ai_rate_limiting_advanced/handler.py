"""ai-rate-limiting-advanced: token and cost budgets per consumer, one node or shared in Redis.

At access the request *reserves* an estimate of what it will spend (its prompt,
from the body's size) and is let in only while every window still has room; at
log the reservation is *settled* to exactly the usage its log record carries
(``exchange.ai_usage``: a stream's final usage, the attempt that served after a
failover, nothing for an answer without usage), the same numbers the file-log
writes and the prometheus plugin adds to ``kong_ai_llm_tokens_total``.
Concurrent requests therefore see each other's reservations, and a consumer can
overshoot a budget by at most one request's worth, the one that was admitted
while room remained.

The headers are Kong's: ``X-AI-RateLimit-Limit-<window>-<provider>`` and
``-Remaining-`` (what was left before this request) on every answer; on a 429
also ``X-AI-RateLimit-Reset`` and ``X-AI-RateLimit-Retry-After`` and, per spent
window, ``-Reset-<window>-<provider>`` and ``-Retry-After-<window>-<provider>``.

Windows are Kong's: ``fixed`` counts per aligned window; ``sliding`` adds the
previous window's count weighted by how much of it still overlaps.  The same
algorithm runs in memory (:class:`LocalStore`) or as one Lua script in Redis
(:class:`RedisStore`), so instances sharing a Redis share the budget atomically.
When Redis goes away, counting goes on in memory, as Kong documents for
rate-limiting-advanced ("Fallback from Redis"), and goes back to Redis when it
answers again.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Mapping, NoReturn, Protocol, Sequence

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from gatewayd import errors
from gatewayd.config import Plugin
from gatewayd.exchange import Exchange
from gatewayd.plugins import refuse
from gatewayd.plugins.redis import tls_creator

#: Kong's window labels in the X-AI-RateLimit-* header names; other sizes use the seconds.
WINDOW_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day", 2592000: "month",
                31536000: "year"}
#: How many bytes of request body make one prompt token, for the reservation.
BYTES_PER_TOKEN = 4
KEY_PREFIX = "gatewayd:ai-rate-limiting:"
#: Seconds between PINGs of a Redis that went away.
PROBE_INTERVAL = 1.0
#: The deadline of a Redis call when the plugin's timeouts are all 0, in seconds (Kong's default).
DEFAULT_REDIS_DEADLINE = 2.0


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def header_number(value: float) -> str:
    """A header's number as Kong writes it (Lua's ``tostring``, ``%.14g``): a cost budget's
    remaining millionths of a dollar are not rounded away."""
    return format(value, ".14g")


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

    def take(self) -> list[tuple[str, float, int]]:
        """Empty the store: each live counter's key, value and milliseconds left to live."""
        now = self.clock.seconds()
        taken = [(key, value, math.ceil((expires - now) * 1000))
                 for key, (value, expires) in self._values.items() if expires > now and value]
        self._values.clear()
        return taken

    def restore(self, entries: Sequence[tuple[str, float, int]]) -> None:
        """Add back what :meth:`take` gave and could not be handed on."""
        now = self.clock.seconds()
        for key, value, ttl_ms in entries:
            self._values[key] = (self._get(key, now) + value, now + ttl_ms / 1000)


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
    """Counters in Redis (``strategy: redis``), updated atomically by Lua scripts.

    Every call has a deadline.  A call that fails or misses it takes Redis for
    gone: from then on this node counts in its own memory, so budgets still hold
    per node (Kong's "Fallback from Redis"), and PINGs Redis every
    :data:`PROBE_INTERVAL` seconds; once it answers, what was counted meanwhile
    is added to its counters and counting goes back to Redis.  ``on_state`` hears
    each change (``address``, reachable), for ``/status`` and the metric.
    """

    connection: Any  # a txredisapi lazy connection
    clock: IReactorTime
    address: str  # host:port, for the log, /status and the metric
    deadline: float
    on_state: Callable[[str, bool], None] | None = None
    _fallback: LocalStore = field(init=False)
    _down_since: float | None = field(default=None, init=False)
    _probe: IDelayedCall | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    _logger = Logger()

    def __attrs_post_init__(self) -> None:
        self._fallback = LocalStore(self.clock)

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    async def reserve(self, counters: Sequence[Counter], amount: float) -> tuple[bool, list[float]]:
        if self._down_since is None:
            keys = [key for c in counters for key in (c.current, c.previous)]
            args: list[Any] = [repr(float(amount))]
            for c in counters:
                args += [repr(c.weight), repr(float(c.limit)), c.ttl_ms]
            try:
                result = await self._call("eval", RESERVE_SCRIPT, keys, args)
            except Exception as error:
                self._gone(error)
            else:
                return int(result[0]) == 1, [float(value) for value in result[1:]]
        return await self._fallback.reserve(counters, amount)

    async def charge(self, counters: Sequence[Counter], amount: float) -> None:
        if not amount:
            return
        if self._down_since is None:
            try:
                await self._call("eval", CHARGE_SCRIPT, [c.current for c in counters],
                                 [repr(float(amount)), *[c.ttl_ms for c in counters]])
                return
            except Exception as error:
                self._gone(error)
        await self._fallback.charge(counters, amount)

    async def _call(self, command: str, *args: Any) -> Any:
        """One Redis command, failed with ``TimeoutError`` if not answered by the deadline.

        txredisapi queues commands while it reconnects; the deadline cancels the wait.
        """
        import txredisapi

        pending = getattr(self.connection, command)(*args)
        pending.addTimeout(self.deadline, self.clock)
        try:
            return await pending
        except txredisapi.ResponseError:
            raise  # Redis answered: a script or data error, not an outage
        except TimeoutError:
            raise _Unreachable(f"no answer within {self.deadline:g}s") from None
        except Exception as error:
            raise _Unreachable(f"{type(error).__name__}: {error}") from None

    def _gone(self, error: Exception) -> None:
        """Count in memory from now on and start probing; an answer error is not an outage."""
        if not isinstance(error, _Unreachable):
            raise error
        if self._down_since is not None:
            return
        self._down_since = self.clock.seconds()
        self._logger.error(
            "ai-rate-limiting-advanced: Redis {address} is unreachable ({error}); counting in this "
            "node's memory until it answers again",
            address=self.address,
            error=str(error),
        )
        if self.on_state is not None:
            self.on_state(self.address, False)
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        if not self._closed:
            self._probe = self.clock.callLater(
                PROBE_INTERVAL, lambda: Deferred.fromCoroutine(self._try_again()))

    async def _try_again(self) -> None:
        self._probe = None
        try:
            await self._call("ping")
            merged = await self._merge()
        except Exception:
            self._schedule_probe()
            return
        if self._closed or self._down_since is None:
            return
        outage = self.clock.seconds() - self._down_since
        self._down_since = None
        self._logger.info(
            "ai-rate-limiting-advanced: Redis {address} answers again after {outage:.1f}s; counting "
            "there again ({merged} counters kept in memory meanwhile added to it)",
            address=self.address,
            outage=outage,
            merged=merged,
        )
        if self.on_state is not None:
            self.on_state(self.address, True)

    async def _merge(self) -> int:
        """Add what was counted in memory to Redis; until none is left, counting stays local."""
        merged = 0
        while entries := self._fallback.take():
            for index, (key, value, ttl_ms) in enumerate(entries):
                try:
                    await self._call("eval", CHARGE_SCRIPT, [key], [repr(value), ttl_ms])
                except Exception:
                    self._fallback.restore(entries[index:])
                    raise
                merged += 1
        return merged

    def close(self) -> Any:
        self._closed = True
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        return self.connection.disconnect()


class _Unreachable(Exception):
    """A Redis call failed for want of an answer (no connection, lost, or past its deadline)."""


def redis_store(plugin: Plugin, clock: IReactorTime,
                on_state: Callable[[str, bool], None] | None = None) -> RedisStore:
    """A lazy, reconnecting txredisapi connection for the plugin's ``redis`` block."""
    import txredisapi

    redis = plugin.config["redis"]
    connection = txredisapi.lazyConnection(
        host=redis["host"], port=redis["port"], dbid=redis["database"],
        password=redis.get("password"), username=redis.get("username"),
        ssl_context_factory=tls_creator(redis) or False,
        connectTimeout=redis["connect_timeout"] / 1000 or None,
        replyTimeout=max(redis["read_timeout"], redis["send_timeout"]) / 1000 or None,
    )
    # A call waits to connect (txredisapi queues it meanwhile), or for its answer: the
    # longest of Kong's three timeouts bounds either wait.
    deadline = max(redis["connect_timeout"], redis["send_timeout"], redis["read_timeout"]) / 1000
    return RedisStore(connection, clock, f"{redis['host']}:{redis['port']}",
                      deadline or DEFAULT_REDIS_DEADLINE, on_state)


def redis_identity(plugin: Plugin) -> tuple[Any, ...]:
    """Plugins that name the same Redis, the same way, share one connection."""
    redis = plugin.config["redis"]
    return tuple(redis.get(k) for k in ("host", "port", "database", "username", "password", "ssl",
                                        "ssl_verify", "server_name", "connect_timeout",
                                        "send_timeout", "read_timeout"))


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
    whole_decrements: bool = False

    _logger = Logger()

    @classmethod
    def from_plugin(cls, plugin: Plugin, provider: str, input_cost: float, store: Store,
                    clock: IReactorTime, providers: frozenset[str] | None = None,
                    whole_decrements: bool = False) -> "AIRateLimiter":
        """``provider`` is what requests on the route count as; ``providers`` all that its
        targets use (a limit for any other is refused); ``whole_decrements``: give back
        only whole units when settling (Redis without ``decrease_by_fractions_in_redis``)."""
        providers = providers or frozenset((provider,))
        settings = plugin.config
        if settings["identifier"] == "header" and not settings.get("header_name"):
            raise refuse(plugin, "header_name", "required when identifier is 'header'")
        windows = []
        for index, entry in enumerate(settings["llm_providers"] or ()):
            if entry["name"] not in providers:
                raise refuse(plugin, f"llm_providers[{index}].name",
                             f"no target of this route's ai-proxy-advanced uses provider "
                             f"{entry['name']!r} ({', '.join(sorted(providers))}): this limit "
                             "would never apply")
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
            whole_decrements=whole_decrements,
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
        """What to reserve before the upstream says: the prompt, guessed from the body.

        Where counters only go down by whole units (Redis without
        ``decrease_by_fractions_in_redis``) a cost is reserved in whole units only, so
        settling never has to give back a fraction it cannot, and the counter ends at
        exactly what the record says was spent."""
        prompt = exchange.request_size / BYTES_PER_TOKEN
        if self.count in ("total_tokens", "prompt_tokens"):
            return math.ceil(prompt)
        if self.count == "cost":
            cost = prompt * self.input_cost / 1e6
            return float(math.floor(cost)) if self.whole_decrements else cost
        return 0.0

    def spent(self, exchange: Exchange) -> float:
        """What the request spent in this limiter's unit: the number its log record carries
        as ``ai.proxy.usage.<tokens_count_strategy>`` (0 when the answer had no usage)."""
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
            # Redis answered with an error (an outage is counted locally by RedisStore): let it through.
            self._logger.error("ai-rate-limiting-advanced: counter store failed, request let "
                               "through: {error}", error=str(error))
            return
        if not self.hide_headers:
            # Kong's Limit and Remaining on every answer; Remaining is what was left before
            # this request (its own spending shows on the next one).
            for window, usage in zip(self.windows, used):
                suffix = f"{window.label}-{window.provider}"
                request.setHeader(f"X-AI-RateLimit-Limit-{suffix}", header_number(window.limit))
                request.setHeader(f"X-AI-RateLimit-Remaining-{suffix}",
                                  header_number(max(0.0, window.limit - usage)))
        if allowed:
            exchange.plugin_data[self.plugin_id] = (found, amount)
            return
        self._refuse(request, [(w, c) for w, c, u in zip(self.windows, found, used) if u >= w.limit])

    def _refuse(self, request: Request, exceeded: Sequence[tuple[Window, Counter]]) -> NoReturn:
        """Kong's 429: when each spent window and the whole budget reset, and when to retry
        (the reset plus up to ``retry_after_jitter_max`` seconds); these are sent even with
        ``hide_client_headers``, which hides only Limit and Remaining."""
        jitter = math.ceil(random.uniform(0, self.jitter_max)) if self.jitter_max else 0
        for window, counter in exceeded:
            suffix = f"{window.label}-{window.provider}"
            request.setHeader(f"X-AI-RateLimit-Reset-{suffix}", str(math.ceil(counter.reset)))
            request.setHeader(f"X-AI-RateLimit-Retry-After-{suffix}", str(math.ceil(counter.reset) + jitter))
        reset = max(math.ceil(c.reset) for _, c in exceeded)
        request.setHeader("X-AI-RateLimit-Reset", str(reset))
        request.setHeader("X-AI-RateLimit-Retry-After", str(reset + jitter))
        providers = "" if self.hide_providers else ", ".join(dict.fromkeys(w.provider for w, _ in exceeded))
        # Retry-After beside Kong's headers: the anthropic SDK and Claude Code time their
        # retry by it alone (a difference from Kong the README names).
        raise errors.APIError(
            self.error_code, "rate_limit_error", (self.error_message + providers).strip(),
            headers=(("retry-after", str(reset + jitter)),),
        )

    def log(self, request: Request, exchange: Exchange, record: Mapping[str, Any]) -> None:
        reserved = exchange.plugin_data.pop(self.plugin_id, None)
        if reserved is None:
            return
        found, amount = reserved
        delta = self.spent(exchange) - amount
        if delta < 0 and self.whole_decrements:
            delta = float(math.ceil(delta))  # Kong decreases Redis counters by whole numbers
        if delta:
            Deferred.fromCoroutine(self.store.charge(found, delta)).addErrback(
                lambda failure: self._logger.error(
                    "ai-rate-limiting-advanced: could not settle usage: {error}",
                    error=str(failure.value)))
