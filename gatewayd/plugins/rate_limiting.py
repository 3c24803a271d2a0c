"""rate-limiting: Kong's request counting per second, minute, hour, day, month and year.

The non-AI limiter (Kong/kong ``kong/plugins/rate-limiting/``, priority 910): every
request counts one against each configured period, in fixed calendar windows (UTC; a
month starts on its first day, a year on 1 January), per consumer, credential, IP,
header, path or service.  A request that finds a period used up gets Kong's 429
"API rate limit exceeded" with ``Retry-After``; every answer carries Kong's
``X-RateLimit-Limit-<Period>``/``X-RateLimit-Remaining-<Period>`` and the
``RateLimit-Limit``/``-Remaining``/``-Reset`` of the most constrained period.

Counting uses ai-rate-limiting-advanced's stores (in memory, or in Redis with one
atomic script and Kong's fallback to local counting while Redis is away), so a request
is admitted and counted in one step where Kong reads, then increments.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Sequence

import attrs
from attrs import frozen
from twisted.logger import Logger
from twisted.web.server import Request

from gatewayd import errors
from gatewayd.config import Plugin
from gatewayd.config.schema import (
    PluginSchema,
    boolean,
    integer,
    number,
    record,
    ref_string,
    secret_string,
    string,
)
from gatewayd.exchange import Exchange
from gatewayd.plugins import CompileContext, KongPlugin, refuse
from gatewayd.plugins.ai_rate_limiting_advanced.handler import (
    Counter,
    LocalStore,
    Store,
    redis_identity,
    redis_store,
)

#: Kong's periods in order, with the window each one's reset counts from (``expiration.lua``).
PERIODS = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400), ("month", 2592000),
           ("year", 31536000))
KEY_PREFIX = "gatewayd:rate-limiting:"

# Kong 3.15, RateLimiting.json.
RATE_LIMITING = PluginSchema(
    name="rate-limiting",
    config=record({
        **{period: number() for period, _ in PERIODS},
        "error_code": number(default=429),
        "error_message": string(default="API rate limit exceeded"),
        "fault_tolerant": boolean(default=True),
        "header_name": string(),
        "hide_client_headers": boolean(default=False),
        "limit_by": string(default="consumer", one_of=(
            "consumer", "consumer-group", "credential", "header", "ip", "path", "service"),
            refusing={"consumer-group": "consumer groups are not served"}),
        "path": string(),
        "policy": string(default="local", one_of=("cluster", "local", "redis"),
                         refusing={"cluster": "it counts in Kong's database; use local or redis"}),
        "redis": record({
            "cloud_authentication": record({}, nullable=True,
                                           refused="cloud authentication to Redis: use username/password"),
            "database": integer(default=0),
            "host": ref_string(),
            "password": secret_string(),
            "port": integer(default=6379, between=(0, 65535), referenceable=True),
            "server_name": ref_string(),
            "ssl": boolean(default=False),
            "ssl_verify": boolean(default=True),
            "timeout": integer(default=2000, between=(0, 2147483646)),
            "username": ref_string(),
        }),
        "sync_rate": number(default=-1),
    }),
    protocols_allowed=("grpc", "grpcs", "http", "https"),
    protocols_default=("grpc", "grpcs", "http", "https"),
)


def window_start(period: str, now: datetime.datetime) -> datetime.datetime:
    """Where ``period``'s current window began (``kong.tools.timestamp.get_timestamps``)."""
    if period == "second":
        return now.replace(microsecond=0)
    if period == "minute":
        return now.replace(second=0, microsecond=0)
    if period == "hour":
        return now.replace(minute=0, second=0, microsecond=0)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return now.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


@frozen
class RateLimiting:
    """One rate-limiting plugin instance on one route."""

    plugin_id: str
    limits: tuple[tuple[str, int, float], ...]  # (period, window seconds, limit), Kong's order
    store: Store
    clock: Any
    limit_by: str
    header_name: str | None
    path: str | None
    fault_tolerant: bool
    hide_headers: bool
    error_code: int
    error_message: str

    _logger = Logger()

    @classmethod
    def compile(cls, plugin: Plugin, context: CompileContext) -> "RateLimiting":
        settings = plugin.config
        limits = tuple((period, window, settings[period]) for period, window in PERIODS
                       if settings[period] is not None)
        if not limits:
            raise refuse(plugin, "second", "at least one of these fields must be non-empty: "
                                           "'second', 'minute', 'hour', 'day', 'month', 'year'")
        for (period, _, limit), (longer, _, longer_limit) in zip(limits, limits[1:]):
            if limit > longer_limit:
                raise refuse(plugin, longer, f"the limit for {longer} ({longer_limit:g}) cannot "
                                             f"be lower than the limit for {period} ({limit:g})")
        if settings["limit_by"] == "header" and not settings.get("header_name"):
            raise refuse(plugin, "header_name", "required when limit_by is 'header'")
        if settings["limit_by"] == "path" and not settings.get("path"):
            raise refuse(plugin, "path", "required when limit_by is 'path'")
        if settings["sync_rate"] != -1:
            raise refuse(plugin, "sync_rate", "not served by gatewayd (batched counting); "
                                              "every request is counted at once (-1)")
        return cls(
            plugin_id=plugin.id, limits=limits, store=_store(plugin, context),
            clock=context.reactor, limit_by=settings["limit_by"],
            header_name=settings.get("header_name"), path=settings.get("path"),
            fault_tolerant=settings["fault_tolerant"], hide_headers=settings["hide_client_headers"],
            error_code=int(settings["error_code"]), error_message=settings["error_message"],
        )

    def identifier(self, request: Request, exchange: Exchange) -> str:
        """Kong's ``get_identifier``: what is counted, the client's IP when nothing else is."""
        value: str | None = None
        if self.limit_by == "service" and exchange.service is not None:
            value = exchange.service["id"]
        elif self.limit_by == "consumer":
            value = (exchange.consumer.id if exchange.consumer is not None
                     else exchange.credential.id if exchange.credential is not None else None)
        elif self.limit_by == "credential" and exchange.credential is not None:
            value = exchange.credential.id
        elif self.limit_by == "header" and self.header_name:
            value = request.getHeader(self.header_name)
        elif self.limit_by == "path" and request.path.decode("latin-1") == self.path:
            value = self.path
        if value is None:
            value = getattr(request.getClientAddress(), "host", "") or ""
        return value

    def counters(self, scope: str) -> tuple[list[Counter], list[int]]:
        """Each period's counter for ``scope`` now, and its reset in seconds as Kong says it."""
        seconds = self.clock.seconds()
        now = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        found, resets = [], []
        for period, window, limit in self.limits:
            start = window_start(period, now)
            elapsed = seconds - start.timestamp()
            key = f"{KEY_PREFIX}{self.plugin_id}:{scope}:{period}:{int(start.timestamp())}"
            # Kept for the period's EXPIRATION, as Kong's policies keep theirs.
            found.append(Counter(key, key, 0.0, limit, window * 1000, window - elapsed))
            resets.append(max(1, window - math.floor(elapsed)))
        return found, resets

    async def access(self, request: Request, exchange: Exchange) -> None:
        found, resets = self.counters(self.identifier(request, exchange))
        try:
            allowed, used = await self.store.reserve(found, 1)
        except Exception as error:
            if not self.fault_tolerant:
                raise
            self._logger.error("rate-limiting: counters unavailable, request let through: {error}",
                           error=str(error))
            return
        stop = None if allowed else next(
            i for i, (u, c) in enumerate(zip(used, found)) if u >= c.limit)
        headers, tightest = self._headers(used, resets, stop)
        if not self.hide_headers:
            for name, value in headers:
                request.setHeader(name, value)
        if stop is not None:
            retry = () if self.hide_headers else (("Retry-After", str(resets[tightest])),)
            raise errors.APIError(self.error_code, "rate_limit_error", self.error_message, headers=retry)

    def _headers(
        self, used: Sequence[float], resets: Sequence[int], stop: int | None
    ) -> tuple[list[tuple[str, str]], int]:
        """Kong's headers: each period's limit and remaining, then those of the most
        constrained period (fewest left; of equals, the longest window), whose index too."""
        headers: list[tuple[str, str]] = []
        best: tuple[int, int, int] | None = None  # (remaining, -window, index)
        for index, ((period, window, limit), usage) in enumerate(zip(self.limits, used)):
            remaining = limit - usage
            if stop is None or stop == index:
                remaining -= 1
            remaining = int(max(0, remaining))
            headers.append((f"X-RateLimit-Limit-{period.capitalize()}", f"{limit:g}"))
            headers.append((f"X-RateLimit-Remaining-{period.capitalize()}", str(remaining)))
            if best is None or (remaining, -window) < best[:2]:
                best = (remaining, -window, index)
        assert best is not None
        remaining, _, index = best
        headers += [("RateLimit-Limit", f"{self.limits[index][2]:g}"), ("RateLimit-Remaining", str(remaining)),
                    ("RateLimit-Reset", str(resets[index]))]
        return headers, index


def _store(plugin: Plugin, context: CompileContext) -> Store:
    """Counters that outlive a snapshot: in memory per plugin, in Redis one connection a server."""
    if plugin.config["policy"] != "redis":
        return context.keep(("rate-limiting", "local", plugin.id), lambda: LocalStore(context.reactor))
    redis = plugin.config["redis"]
    if not redis.get("host"):
        raise refuse(plugin, "redis.host", "required when policy is 'redis'")
    timeout = redis["timeout"]
    # The shared connection maker reads Kong's full Redis record: one timeout stands for all three.
    full = attrs.evolve(plugin, config={"redis": {**redis, "connect_timeout": timeout, "send_timeout": timeout,
                                                  "read_timeout": timeout}})
    health = context.facility("health")

    def connect() -> Store:
        store = redis_store(full, context.reactor, health.redis_state)
        health.redis_state(store.address, store.reachable)
        return store

    return context.keep(("ai-rate-limiting-advanced", "redis", *redis_identity(full)), connect)


plugin = KongPlugin("rate-limiting", priority=910, version="3.15.0", schema=RATE_LIMITING,
                    compile=RateLimiting.compile)
