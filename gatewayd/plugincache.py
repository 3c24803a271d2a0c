"""``python -m gatewayd.plugincache``: write Twisted's plugin cache once, where gatewayd is installed.

``twisted.plugin.getPlugins`` (twistd finding ``gatewayd``, the ``adopt:`` and
``systemd:`` endpoints, gatewayd's own plugins) keeps a ``dropin.cache`` beside
the modules in ``twisted/plugins/`` and rewrites it whenever a module there is
newer.  A service under ``ProtectSystem=strict`` (or any read-only install) cannot
write it, so without this step every start warns "Unable to write to plugin cache"
and imports every plugin module to learn what it offers.  Run it as the user who
ran ``pip install``, after every ``pip install`` into that environment.
"""

from __future__ import annotations

import sys

from twisted.plugin import IPlugin, getPlugins
from twisted.python.modules import getModule


def stale_caches(package: str = "twisted.plugins") -> list[str]:
    """The ``dropin.cache`` files that are missing or older than a module beside them."""
    stale = set()
    for module in getModule(package).iterModules():
        cache = module.filePath.sibling("dropin.cache")
        if not cache.exists() or module.filePath.getModificationTime() >= cache.getModificationTime():
            stale.add(cache.path)
    return sorted(stale)


def main() -> int:
    import twisted.plugins

    list(getPlugins(IPlugin, twisted.plugins))  # loads every plugin module, writes the caches
    stale = stale_caches()
    for path in stale:
        print(f"gatewayd: could not write the plugin cache {path}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
