"""Kong's plugin phases around a route's resource: *access* before it, *log* after the request.

A route's plugins are compiled once per configuration into two ordered tuples
(Kong's priorities: key-auth 1250, ai-rate-limiting-advanced 905, prometheus 13).
Access plugins run before the route's resource sees the request and may answer
it themselves by raising :class:`~gatewayd.errors.APIError`; log plugins get the
finished request's Kong record, once ``exchange.handled`` has fired.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd import errors
from gatewayd.config import Config, Plugin
from gatewayd.exchange import Exchange
from gatewayd.plugins.ai_proxy_advanced.handler import respond_error


class ConfigurationError(ValueError):
    """The configuration loaded but cannot be served; names the plugin and field."""


def refuse(plugin: Plugin, field: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"{plugin.source}: plugins ({plugin.name}): config.{field}: {message}")


class AccessPlugin(Protocol):
    def access(self, request: Request, exchange: Exchange) -> Awaitable[None]:
        """Let the request through, or raise APIError to answer it instead."""


class LogPlugin(Protocol):
    def log(self, request: Request, exchange: Exchange, record: Mapping[str, Any]) -> None:
        """Account for a finished request; ``record`` is its Kong log record."""


@frozen
class Phases:
    access: tuple[AccessPlugin, ...] = ()
    log: tuple[LogPlugin, ...] = ()


#: Builds one plugin's phase objects: (access or None, log or None).
Builder = Callable[[Plugin, Config, Mapping[str, Plugin]], tuple["AccessPlugin | None", "LogPlugin | None"]]


def compile_phases(
    plugins: Mapping[str, Plugin], config: Config, builders: Sequence[tuple[str, Builder]]
) -> Phases:
    """The phase objects of the plugins that run for one route, in ``builders``' order."""
    access, log = [], []
    for name, builder in builders:
        plugin = plugins.get(name)
        if plugin is None:
            continue
        on_access, on_log = builder(plugin, config, plugins)
        if on_access is not None:
            access.append(on_access)
        if on_log is not None:
            log.append(on_log)
    return Phases(tuple(access), tuple(log))


class AccessGate(Resource):
    """Stands in for a route's resource until its access plugins have let the request in."""

    isLeaf = True
    log = Logger()

    def __init__(self, plugins: tuple[AccessPlugin, ...], resource: Resource, exchange: Exchange) -> None:
        super().__init__()
        self.plugins = plugins
        self.resource = resource
        self.exchange = exchange

    def render(self, request: Request) -> object:
        Deferred.fromCoroutine(self._run(request))
        return NOT_DONE_YET

    async def _run(self, request: Request) -> None:
        try:
            for plugin in self.plugins:
                await plugin.access(request, self.exchange)
        except errors.APIError as error:
            respond_error(request, error)
            return
        except Exception:
            # The path only: a query string may carry a client's key (key-auth's key_in_query).
            self.log.failure("access phase failed for {path}", path=request.path.decode("latin-1"))
            respond_error(request, errors.APIError(500, "api_error", "internal gateway error"))
            return
        if request.finished or self.exchange.client_gone:
            return
        request.render(getChildForRequest(self.resource, request))
