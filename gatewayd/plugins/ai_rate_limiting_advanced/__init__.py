"""ai-rate-limiting-advanced: token and cost budgets per consumer, in memory or shared in Redis.

``schema.py`` holds Kong's config schema, ``handler.py`` the windows, the
counter stores and the phases (a reservation at access, settled at log).
"""

from __future__ import annotations

from typing import Any, Callable

from gatewayd.config import Plugin
from gatewayd.plugins import CompileContext, KongPlugin, refuse

from .handler import AIRateLimiter, LocalStore, RedisStore, Store, redis_identity, redis_store
from .schema import AI_RATE_LIMITING_ADVANCED


def compile(plugin: Plugin, context: CompileContext) -> AIRateLimiter | None:
    """The limiter for one route: it counts in the units of the route's LLM provider.

    Counter stores outlive a snapshot: in memory per plugin id, in Redis one
    connection per server.
    """
    ai = context.siblings.get("ai-proxy-advanced")
    if ai is None:
        return None  # no LLM traffic on this route: nothing to count, as in Kong
    settings = plugin.config
    if settings["llm_format"] not in (None, ai.config["llm_format"]):
        raise refuse(plugin, "llm_format", f"{settings['llm_format']!r} differs from the route's "
                                           f"ai-proxy-advanced llm_format "
                                           f"{ai.config['llm_format']!r}")
    sync_rate = settings["sync_rate"]
    if sync_rate is not None and sync_rate > 0:
        raise refuse(plugin, "sync_rate", f"{sync_rate!r} is not served by gatewayd (counting in "
                                          "batches): use 0 (every request counts in Redis at "
                                          "once) or -1 (this node's memory only)")
    targets = ai.config["targets"]
    target = targets[0]["model"]
    key: tuple[Any, ...]
    shared = settings["strategy"] == "redis" and sync_rate != -1
    if shared:
        key = ("ai-rate-limiting-advanced", "redis", *redis_identity(plugin))
        health = context.facility("health")
        store: Store = context.keep(key, lambda: _reporting(redis_store(plugin, context.reactor, health.redis_state),
                                                            health.redis_state))
    else:
        key = ("ai-rate-limiting-advanced", "local", plugin.id)
        store = context.keep(key, lambda: LocalStore(context.reactor))
    return AIRateLimiter.from_plugin(
        plugin, target["provider"], (target.get("options") or {}).get("input_cost") or 0.0,
        store, context.reactor,
        providers=frozenset(t["model"]["provider"] for t in targets),
        whole_decrements=shared and not settings["decrease_by_fractions_in_redis"],
    )


def _reporting(store: RedisStore, report: Callable[[str, bool], None]) -> RedisStore:
    """A new Redis store, its state shown at once (``/status``, ``gatewayd_redis_reachable``)."""
    report(store.address, store.reachable)
    return store


plugin = KongPlugin(
    "ai-rate-limiting-advanced", priority=905, version="3.15.0",
    schema=AI_RATE_LIMITING_ADVANCED, compile=compile,
)
