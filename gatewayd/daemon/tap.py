"""``twistd gatewayd``: command-line options and the service they make."""

from __future__ import annotations

import os
from typing import Callable

from twisted.application.service import IService
from twisted.python import usage

DEFAULT_LISTEN = "tcp:8000:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[--config PATH] [--listen ENDPOINT ...] [--workers N] [--status-listen ENDPOINT] [--shutdown-grace SECONDS]"
    longdesc = (
        "Serve Anthropic Messages API clients on Google Gemini, configured by "
        "Kong decK files (a YAML file, or a directory of *.yaml applied in name order). "
        "SIGHUP reloads the configuration and reopens the log files; SIGTERM stops "
        "accepting and lets requests in flight finish within the grace period. "
        "Check a configuration with: python -m gatewayd.check --config PATH"
    )
    optParameters = [
        ["config", "c", "/etc/gatewayd", "decK configuration: a YAML file or a directory of them"],
        ["status-listen", None, None,
         "Twisted endpoint (or a bare port, on 127.0.0.1) for /metrics, /status and "
         "/status/ready [default: off]"],
        ["shutdown-grace", None, 30.0, "seconds requests in flight get to finish on SIGTERM", float],
        [
            "file-log-max-bytes",
            None,
            None,
            "rotate a file-log file once it reaches this size (path.1, path.2, ...); "
            "unset: never (use logrotate)",
            int,
        ],
        ["file-log-keep", None, 5, "rotated file-log files kept with --file-log-max-bytes", int],
        ["file-log-backlog", None, 16 * 1024 * 1024,
         "bytes of file-log records kept in memory per file while its disk is full; "
         "records past that are lost (and counted)", int],
        ["workers", "w", 1, "processes serving the --listen sockets (one per core)", int],
        ["upstream-pool", None, 512, "idle upstream connections kept open per host", int],
        ["request-read-timeout", None, 300.0,
         "seconds a client may take to send a whole request (headers and body); then 408", float],
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
        if self["shutdown-grace"] < 0:
            raise usage.UsageError("--shutdown-grace must be 0 or more seconds")
        if self["file-log-max-bytes"] is not None and (self["file-log-max-bytes"] < 1 or self["file-log-keep"] < 1):
            raise usage.UsageError("--file-log-max-bytes and --file-log-keep must be at least 1")
        if self["file-log-backlog"] < 0:
            raise usage.UsageError("--file-log-backlog must be 0 or more bytes")
        if self["request-read-timeout"] <= 0:
            raise usage.UsageError("--request-read-timeout must be more than 0 seconds")
        if self["workers"] < 1 or self["upstream-pool"] < 1:
            raise usage.UsageError("--workers and --upstream-pool must be at least 1")


def makeService(options: Options) -> IService:
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet import reactor

    from gatewayd.daemon import workers
    from gatewayd.config import load_config
    from gatewayd.plugins.file_log import Rotation
    from gatewayd.daemon.reload import INVALID, Reloader, read_in_thread
    from gatewayd.daemon.gateway import build
    from gatewayd.daemon.systemd import Notifier

    rotation = None
    if options["file-log-max-bytes"] is not None:
        rotation = Rotation(options["file-log-max-bytes"], options["file-log-keep"])
    listen, sockets = options["listen"], ()
    try:
        if options["workers"] > 1:
            sockets = tuple(workers.listening_socket(each) for each in options["listen"])
            listen = [workers.adopt_description(each) for each in sockets]
        config = load_config(options["config"], os.environ)
        service, gateway = build(
            config,
            reactor,
            listen=listen,
            status_listen=options["status-listen"],
            shutdown_grace=options["shutdown-grace"],
            rotation=rotation,
            pool_size=options["upstream-pool"],
            request_read_timeout=options["request-read-timeout"],
            file_log_backlog=options["file-log-backlog"],
        )
    except (*INVALID, OSError) as error:
        raise usage.UsageError(str(error)) from None
    forward: Callable[[int], object] = lambda signum: None
    if sockets:
        # Workers serve the same sockets with the same settings, but no status listener of
        # their own: the parent's reports readiness.
        arguments = (
            "--config", options["config"],
            "--upstream-pool", str(options["upstream-pool"]),
            "--shutdown-grace", str(options["shutdown-grace"]),
            "--request-read-timeout", str(options["request-read-timeout"]),
            "--file-log-backlog", str(options["file-log-backlog"]),
        )
        if rotation is not None:
            arguments += (
                "--file-log-max-bytes", str(rotation.max_bytes), "--file-log-keep", str(rotation.keep)
            )
        processes = workers.WorkerProcesses(reactor, sockets, options["workers"] - 1, arguments)
        processes.setServiceParent(service)
        forward = processes.signal
    listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]
    Reloader(
        gateway, options["config"], os.environ, reactor, read_in_thread(reactor), forward=forward
    ).setServiceParent(service)
    Notifier(listeners, reactor).setServiceParent(service)
    return service
