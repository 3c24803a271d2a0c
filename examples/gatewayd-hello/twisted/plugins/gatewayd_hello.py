"""Makes the ``hello`` plugin known to gatewayd, the way ``twistd`` plugins are made known."""

from gatewayd_hello import plugin as hello

__all__ = ["hello"]
