"""The one error a configuration that cannot be served raises."""

from __future__ import annotations


class ConfigError(Exception):
    """A state file gatewayd (or Kong) would refuse.

    ``str()`` reads ``<file>: <entity>: <field>: <problem>`` and never holds the
    value of an environment variable the file expanded.
    """

    def __init__(self, file: str, message: str, *, entity: str | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.entity = entity
        self.field = field
        self.message = message
        super().__init__(": ".join(part for part in (file, entity, field, message) if part))


