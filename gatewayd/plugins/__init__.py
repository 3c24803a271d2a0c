"""Kong plugins, one room each, and the registry that finds them.

A plugin is what Kong's ``kong/plugins/<name>/`` directory is: a name, a
``PRIORITY``, a ``VERSION``, a config schema and phase handlers.  Here it is an
object providing :class:`IGatewaydPlugin` (usually a :class:`KongPlugin`),
whose ``compile`` turns one configured instance into an object with any of the
phase methods the pipeline calls, in Kong's priority order:

- ``access(request, exchange)``: may be a coroutine; raises
  :class:`~gatewayd.errors.APIError` to answer the request itself;
- ``header_filter(request, exchange)``: before the response's headers leave;
- ``body_filter(request, exchange, chunk, eof) -> bytes``: each body chunk, streams included;
- ``log(request, exchange, record)``: once the response is done, with Kong's log record;

and, for a plugin that answers in the place of the upstream (ai-proxy-advanced),
a ``resource``: the ``twisted.web`` resource rendered below the route's path.
The phase names are looked up by name, so a phase object keeps its ``Logger``
under another one (``_logger``).

The built-in plugins are the rooms of this package.  Others are found with
Twisted's own plugin mechanism: a package that installs a module into
``twisted/plugins/`` holding an object that provides ``IPlugin`` and
:class:`IGatewaydPlugin` can be configured by name in decK files, as Kong's
custom plugins are (``examples/gatewayd-hello`` is one).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from attrs import define, field, frozen
from twisted.plugin import IPlugin, getPlugins
from zope.interface import Attribute, Interface, implementer

from gatewayd.config import load_config
from gatewayd.config.entities import Config, Plugin
from gatewayd.config.schema import PluginSchema

T = TypeVar("T")

#: The rooms of this package, by module: Kong's bundled plugins that gatewayd serves.
BUILTIN = (
    "gatewayd.plugins.key_auth",
    "gatewayd.plugins.rate_limiting",
    "gatewayd.plugins.ai_rate_limiting_advanced",
    "gatewayd.plugins.ai_proxy_advanced",
    "gatewayd.plugins.prometheus",
    "gatewayd.plugins.file_log",
)


class IGatewaydPlugin(Interface):
    """A Kong plugin gatewayd can run: what ``handler.lua`` and ``schema.lua`` hold in Kong."""

    name = Attribute("The name decK files configure it by, e.g. 'key-auth'.")
    priority = Attribute("Kong's PRIORITY: plugins with a higher one run first in every phase.")
    version = Attribute("The plugin's VERSION.")
    schema = Attribute("Its config schema (a gatewayd.config.schema.PluginSchema).")

    def compile(plugin: Plugin, context: "CompileContext") -> object:
        """The phase object for one configured instance of the plugin, for one snapshot."""


class ConfigurationError(ValueError):
    """The configuration loaded but cannot be served; names the file, plugin and field."""


def refuse(plugin: Plugin, field: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"{plugin.source}: plugins ({plugin.name}): config.{field}: {message}")


@implementer(IPlugin, IGatewaydPlugin)
@frozen
class KongPlugin:
    """The usual way to declare a plugin: its facts and a compile function."""

    name: str
    priority: int
    version: str
    schema: PluginSchema
    compile: Callable[[Plugin, "CompileContext"], object] = field(repr=False)


@define
class Kept:
    """What outlives one configuration snapshot (connections, open files, learnt health),
    shared by key: a reload reuses what it asks for again and retires the rest."""

    live: dict[Hashable, Any] = field(factory=dict)

    def values(self, kind: str) -> list[Any]:
        """Everything kept under keys whose first part is ``kind``."""
        return [value for key, value in self.live.items() if key[0] == kind]  # type: ignore[index]


@define
class CompileContext:
    """What a plugin may use while one configuration is compiled.

    ``keep`` hands back the object kept under ``key`` by the running snapshot, or
    makes one; it is kept only if the whole configuration compiles.  The rest are
    the daemon's facilities: its reactor, upstream clients, Google credentials,
    metrics registry and file-log rotation.
    """

    config: Config
    reactor: Any
    kept: Kept
    facilities: Mapping[str, Any]
    made: dict[Hashable, Any] = field(factory=dict)
    #: The other plugins that run for the route being compiled, by name (Kong's precedence
    #: applied, consumer-scoped ones left out): e.g. what provider a limiter counts for.
    siblings: Mapping[str, Plugin] = field(factory=dict)

    def keep(self, key: tuple[Hashable, ...], make: Callable[[], T]) -> T:
        if key not in self.made:
            self.made[key] = self.kept.live[key] if key in self.kept.live else make()
        return self.made[key]  # type: ignore[no-any-return]

    def facility(self, name: str) -> Any:
        return self.facilities[name]


@frozen
class Registry:
    """The plugins a configuration may name, by name."""

    plugins: Mapping[str, IGatewaydPlugin]

    @classmethod
    def discover(cls) -> "Registry":
        """The built-in rooms, then every ``IGatewaydPlugin`` in ``twisted.plugins``."""
        found: dict[str, IGatewaydPlugin] = {}
        for module in BUILTIN:
            plugin = importlib.import_module(module).plugin
            found[plugin.name] = plugin
        for plugin in getPlugins(IGatewaydPlugin):
            # Kong refuses a custom plugin named like a bundled one; a clash keeps the bundled one.
            found.setdefault(plugin.name, plugin)
        return cls(found)

    @property
    def schemas(self) -> Mapping[str, PluginSchema]:
        return {name: plugin.schema for name, plugin in self.plugins.items()}

    def ordered(self, names: Iterable[str]) -> list[IGatewaydPlugin]:
        """Kong's execution order: higher priority first, then by name for a stable tie."""
        return sorted((self.plugins[name] for name in names), key=lambda p: (-p.priority, p.name))


_installed: Registry | None = None


def installed() -> Registry:
    """The registry of this installation, discovered once per process."""
    global _installed
    if _installed is None:
        _installed = Registry.discover()
    return _installed


def read_config(path: str, environ: Mapping[str, str]) -> Config:
    """Read decK files with the plugins of this installation, built-in and third-party."""
    return load_config(path, environ, installed().schemas)
