"""``twistd gatewayd``: command-line options and the service they make."""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

DEFAULT_LISTEN = "tcp:8000:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[--config PATH] [--listen ENDPOINT ...] [--workers N]"
    longdesc = (
        "Serve Anthropic Messages API clients on Google Gemini, configured by "
        "Kong decK files (a YAML file, or a directory of *.yaml applied in name order)."
    )
    optParameters = [
        ["config", "c", "/etc/gatewayd", "decK configuration: a YAML file or a directory of them"],
        ["workers", "w", 1, "processes serving the --listen sockets (one per core)", int],
        ["upstream-pool", None, 512, "idle upstream connections kept open per host", int],
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
        if self["workers"] < 1 or self["upstream-pool"] < 1:
            raise usage.UsageError("--workers and --upstream-pool must be at least 1")


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from gatewayd.config import ConfigError, load_config
    from gatewayd.providers.auth import CredentialsError
    from gatewayd.service import ConfigurationError, build

    from gatewayd import workers

    listen, sockets = options["listen"], ()
    try:
        if options["workers"] > 1:
            sockets = tuple(workers.listening_socket(each) for each in options["listen"])
            listen = [workers.adopt_description(each) for each in sockets]
        config = load_config(options["config"], os.environ)
        service, _ = build(config, reactor, listen=listen, pool_size=options["upstream-pool"])
    except (ConfigError, ConfigurationError, CredentialsError, ValueError, OSError) as error:
        raise usage.UsageError(str(error)) from None
    if sockets:
        arguments = ("--config", options["config"], "--upstream-pool", str(options["upstream-pool"]))
        workers.WorkerProcesses(reactor, sockets, options["workers"] - 1, arguments).setServiceParent(service)
    return service
