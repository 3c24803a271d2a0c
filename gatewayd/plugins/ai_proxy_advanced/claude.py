"""A Claude model's stream on Vertex (``streamRawPredict``), passed through to the client.

Vertex streams Anthropic's own events, so nothing is translated: each event
goes on as it came, and the usage and model are read on the way for the log
record, as Kong 3.15.0.4 counts them (``message_start``'s input and cache
counts, the last ``message_delta``'s cumulative output count, never the
provisional output count of ``message_start``).  It offers the translator
interface :class:`~.stream.SSEBridge` drives.
"""

from __future__ import annotations

from typing import Any

Event = tuple[str, dict[str, Any]]


class ClaudePassthrough:
    """Anthropic stream events in, the same events out; usage kept aside."""

    def __init__(self) -> None:
        self._usage: dict[str, Any] = {}
        self.response_model: str | None = None
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self._stopped = False

    @property
    def usage(self) -> dict[str, Any]:
        return dict(self._usage)

    @property
    def complete(self) -> bool:
        """Whether ``message_stop`` arrived (a stream cut before it did not end)."""
        return self._stopped

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        kind = chunk.get("type")
        if not isinstance(kind, str):
            return []
        if kind == "message_start" and isinstance(chunk.get("message"), dict):
            message = chunk["message"]
            if isinstance(message.get("model"), str):
                self.response_model = message["model"]
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._usage = {key: value for key, value in usage.items() if key != "output_tokens"}
        elif kind == "message_delta":
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                self._usage.update(usage)  # cumulative counts: the last one stands
            delta = chunk.get("delta")
            if isinstance(delta, dict):
                self.stop_reason = delta.get("stop_reason", self.stop_reason)
                self.stop_sequence = delta.get("stop_sequence", self.stop_sequence)
        elif kind == "message_stop":
            self._stopped = True
        return [(kind, chunk)]

    def finish(self) -> list[Event]:
        return []
