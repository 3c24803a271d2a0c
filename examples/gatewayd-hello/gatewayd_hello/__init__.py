"""``hello``: an example of a third-party gatewayd plugin, in every phase.

Configured in a decK file like any Kong plugin::

    plugins:
      - name: hello
        route: example-route
        config: {greeting: "hi there"}

- access: refuses a request that carries the ``deny_header`` (403), else notes its start;
- header filter: adds ``X-Hello: <greeting>`` to the response;
- body filter: counts the bytes of the response body, chunk by chunk (streams too);
- log: adds ``hello.bytes`` to the request's log record, which file-log (priority 9,
  after this plugin's 800) then writes, as Kong's ``kong.log.set_serialize_value`` does.
"""

from __future__ import annotations

from typing import Any, Mapping

from attrs import frozen

from gatewayd.config import Plugin
from gatewayd.config.schema import PluginSchema, record, string
from gatewayd.errors import APIError
from gatewayd.plugins import CompileContext, KongPlugin

SCHEMA = PluginSchema(
    name="hello",
    config=record({
        "greeting": string(default="hello"),
        "deny_header": string(),
    }),
    protocols_allowed=("http", "https"),
    protocols_default=("http", "https"),
)


@frozen
class Hello:
    """One configured instance."""

    plugin_id: str
    greeting: str
    deny_header: str | None

    @classmethod
    def compile(cls, plugin: Plugin, context: CompileContext) -> "Hello":
        return cls(plugin.id, plugin.config["greeting"], plugin.config["deny_header"])

    def access(self, request: Any, exchange: Any) -> None:
        if self.deny_header and request.getHeader(self.deny_header) is not None:
            raise APIError(403, "permission_error", f"hello says no to {self.deny_header}")
        exchange.plugin_data[self.plugin_id] = 0

    def header_filter(self, request: Any, exchange: Any) -> None:
        request.setHeader("X-Hello", self.greeting)

    def body_filter(self, request: Any, exchange: Any, chunk: bytes, eof: bool) -> bytes:
        exchange.plugin_data[self.plugin_id] = exchange.plugin_data.get(self.plugin_id, 0) + len(chunk)
        return chunk

    def log(self, request: Any, exchange: Any, record: Mapping[str, Any]) -> None:
        record["hello"] = {"bytes": exchange.plugin_data.get(self.plugin_id, 0)}  # type: ignore[index]


plugin = KongPlugin("hello", priority=800, version="0.1.0", schema=SCHEMA, compile=Hello.compile)
