"""Kong declarative (decK) configuration, read into frozen values.

gatewayd is configured with the same state files a Kong AI Gateway user feeds to
``deck gateway apply``: ``_format_version: "3.0"`` plus ``services``, ``routes`` and
``plugins``.  A directory is read like successive applies of its files in name
order: a later service or route of the same name replaces the earlier one, a
later plugin with the same name and scope replaces the earlier one.

``${{ env "DECK_NAME" }}`` is expanded as decK does (only ``DECK_`` names, an unset
one is an error), with one deliberate difference: the value is inserted into the
parsed YAML value rather than into the file text, so a multi-line, quote-laden
service-account JSON inside ``"..."`` arrives byte for byte, and YAML errors never
print it.
"""

from .entities import Config, Consumer, KeyCredential, Plugin, Route, Service
from .errors import ConfigError
from .loader import load_config

__all__ = ["Config", "ConfigError", "Consumer", "KeyCredential", "Plugin", "Route", "Service",
           "load_config"]
