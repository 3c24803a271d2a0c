"""``twistd gatewayd``: command-line options and the service they make."""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

DEFAULT_LISTEN = "tcp:8000:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[--config PATH] [--listen ENDPOINT ...] [--status-listen ENDPOINT]"
    longdesc = (
        "Serve Anthropic Messages API clients on Google Gemini, configured by "
        "Kong decK files (a YAML file, or a directory of *.yaml applied in name order)."
    )
    optParameters = [
        ["config", "c", "/etc/gatewayd", "decK configuration: a YAML file or a directory of them"],
        ["status-listen", None, None,
         "Twisted endpoint (or a bare port, on 127.0.0.1) for /metrics, /status and "
         "/status/ready [default: off]"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint to serve on (repeatable) [default: tcp:8000:interface=127.0.0.1]"""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["status-listen"] is not None and self["status-listen"].isdigit():
            self["status-listen"] = f"tcp:{self['status-listen']}:interface=127.0.0.1"


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from gatewayd.config import ConfigError, load_config
    from gatewayd.providers.auth import CredentialsError
    from gatewayd.service import ConfigurationError, build

    try:
        config = load_config(options["config"], os.environ)
        service, _ = build(
            config, reactor, listen=options["listen"], status_listen=options["status-listen"]
        )
    except (ConfigError, ConfigurationError, CredentialsError) as error:
        raise usage.UsageError(str(error)) from None
    return service
