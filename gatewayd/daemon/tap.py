"""``twistd gatewayd``: command-line options and the service they make."""

from __future__ import annotations

import gc
import os
import re
import resource
import sys
from typing import Callable, NoReturn

from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.python import usage

DEFAULT_LISTEN = "tcp:8000:interface=127.0.0.1"
#: Connections the kernel queues before gatewayd accepts them, Kong's default; Linux cuts it to
#: net.core.somaxconn (4096 on Debian 12).  Twisted's 50 makes a burst of connects wait 1 s.
DEFAULT_BACKLOG = 16384
#: The exit status of a configuration that cannot serve (sysexits' EX_CONFIG): the units do not
#: restart on it, since the same files would fail again.
EX_CONFIG = 78

log = Logger()


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
        ["backlog", None, DEFAULT_BACKLOG,
         "connections the kernel queues on each --listen socket (tcp:, tcp6:, unix:, ssl:) "
         "until gatewayd accepts them; a description's own backlog=N wins", int],
        ["request-read-timeout", None, 300.0,
         "seconds a client may take to send a whole request (headers and body); then 408", float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint to serve on (repeatable) [default: tcp:8000:interface=127.0.0.1];
        HTTPS: ssl:8443:privateKey=KEY.pem:certKey=CERT.pem (reread on SIGHUP)"""
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
        if self["workers"] < 1 or self["upstream-pool"] < 1 or self["backlog"] < 1:
            raise usage.UsageError("--workers, --upstream-pool and --backlog must be at least 1")


def with_backlog(description: str, backlog: int) -> str:
    """``description`` with ``:backlog=N`` added, if it is a kind that takes one and has none."""
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "unix", "ssl") or re.search(r"(?<!\\):backlog=", description):
        return description
    return f"{description}:backlog={backlog}"


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one: every client and upstream
    connection is a file, and systemd's default soft limit of 1024 runs out at about a
    thousand clients, after which accept() fails and clients get empty replies."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as error:
        log.warn("Open files limit stays at {soft}: {error}", soft=soft, error=str(error))
        return
    log.info("Open files limit raised from {soft} to {hard}", soft=soft, hard=hard)


#: Container allocations between two young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Freeze what the start made and collect the young generation less often.

    The start leaves objects that live as long as the process (configuration, Google's
    auth libraries, Twisted); every full collection walked them all again, pausing
    the reactor for tens of milliseconds under load.  Frozen, they are left out of
    collections (refcounting still frees them).  A request makes a few hundred
    short-lived containers: at CPython's default a young collection ran every few
    requests, walking every request in flight.  In the bench the collector's share
    of the CPU went from about 9% to under 1%.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def exit_with(status: int, message: str) -> NoReturn:
    """End ``twistd`` at start-up with one line on stderr (the journal, under systemd) and
    ``status``, not a traceback.  twistd has by then sent ``sys.stderr`` into its log, if it
    started logging, so the line goes to the process's own stderr."""
    print(f"gatewayd: {message}", file=sys.__stderr__, flush=True)
    raise SystemExit(status)


class Daemon(MultiService):
    """The top service: a listener that cannot listen (port taken, adopted socket missing)
    ends the start with exit status 1 before anything reports ready."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as error:
            exit_with(1, f"cannot listen: {error}")


def makeService(options: Options) -> IService:
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet import reactor

    from gatewayd.daemon import reloadack, tls, workers
    from gatewayd.plugins import read_config
    from gatewayd.plugins.file_log import Rotation
    from gatewayd.daemon.reload import INVALID, Reloader, read_in_thread
    from gatewayd.daemon.gateway import build
    from gatewayd.daemon.systemd import Notifier

    raise_open_files_limit()
    rotation = None
    if options["file-log-max-bytes"] is not None:
        rotation = Rotation(options["file-log-max-bytes"], options["file-log-keep"])
    listen, sockets = [with_backlog(each, options["backlog"]) for each in options["listen"]], ()
    tls_options: tuple[str, ...] = ()
    try:
        if options["workers"] > 1:
            # The parent binds; every process (itself too) serves TLS on the socket it adopts.
            split = [tls.split_listen(each) for each in listen]
            sockets = tuple(workers.listening_socket(inner, options["backlog"]) for inner, _ in split)
            tls_options = tuple(files.options() if files else "" for _, files in split)
            listen = [workers.adopt_description(s) + o for s, o in zip(sockets, tls_options)]
        config = read_config(options["config"], os.environ)
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
    except INVALID as error:
        exit_with(EX_CONFIG, f"configuration {options['config']} is invalid: {error}")
    except (OSError, ValueError) as error:
        exit_with(1, f"cannot start: {error}")
    except IndexError:  # from the systemd: endpoint parser
        exit_with(1, "cannot start: a systemd: listener's index is not among the sockets systemd passed")
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
            "--backlog", str(options["backlog"]),
        )
        if rotation is not None:
            arguments += (
                "--file-log-max-bytes", str(rotation.max_bytes), "--file-log-keep", str(rotation.keep)
            )
        processes = workers.WorkerProcesses(
            reactor, sockets, options["workers"] - 1, arguments, tls_options=tls_options
        )
        processes.setServiceParent(service)
        forward = processes.signal
    listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]
    for listener in listeners:
        # Fail the start (see Daemon), rather than log the error and run on without the port.
        listener._raiseSynchronously = True
    acknowledge: Callable[[int, str | None], object] = lambda started, problem: None
    if os.environ.get("RUNTIME_DIRECTORY"):
        runtime_directory = os.environ["RUNTIME_DIRECTORY"].split(":")[0]
        acknowledge = lambda started, problem: reloadack.record(runtime_directory, started, problem)
    Reloader(
        gateway, options["config"], os.environ, reactor, read_in_thread(reactor),
        forward=forward, acknowledge=acknowledge,
    ).setServiceParent(service)
    Notifier(listeners, reactor).setServiceParent(service)
    daemon = Daemon()
    service.setServiceParent(daemon)
    reactor.callWhenRunning(settle_garbage_collector)  # in each worker too: each runs makeService
    return daemon
