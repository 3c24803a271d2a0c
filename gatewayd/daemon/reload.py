"""SIGHUP: read the configuration again, swap it in at once, reopen the log files,
read the TLS listeners' certificates again.

The signal handler only hops onto the reactor (``callFromThread``, as twistd's
own SIGUSR1 log rotation does).  The files are then read, expanded and
validated by :func:`gatewayd.plugins.read_config` in the reactor's thread
pool: it is pure (files in, frozen values out), and PyYAML parsing a large
decK dump would otherwise stall every stream in flight.  Compiling the result
(:meth:`Gateway.load`) touches the gateway's state, so it runs back on the
reactor, where it is one reference swap: requests in flight keep the snapshot
they started with.  A configuration that fails anywhere leaves the running one
serving; the log names the file, the entity and the problem (a certificate that does
not load leaves the previous one serving, likewise).  Each outcome also goes to
``acknowledge`` (with the reload's start time), which lets ``systemctl reload`` wait for it
(:mod:`gatewayd.daemon.reloadack`).
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Mapping

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gatewayd.daemon import systemd
from gatewayd.config import Config, ConfigError
from gatewayd.plugins import read_config
from gatewayd.daemon.gateway import ConfigurationError, Gateway

#: The errors that mean "this configuration cannot be served"; their text names file and entity.
INVALID = (ConfigError, ConfigurationError)

ReadConfig = Callable[[str, Mapping[str, str]], Deferred[Config]]


def read_in_thread(reactor: Any) -> ReadConfig:
    """Run :func:`~gatewayd.plugins.read_config` in the reactor's thread pool."""

    def read(path: str, environ: Mapping[str, str]) -> Deferred[Config]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), read_config, path, environ)

    return read


@define(slots=False)
class Reloader(Service):
    """Reloads on SIGHUP while running; reloads asked for during one run once after it."""

    gateway: Gateway
    path: str
    environ: Mapping[str, str]
    reactor: Any
    read: ReadConfig
    notify: Callable[[str], object] = systemd.notify
    #: Passes the signal on (to ``--workers`` processes, which reload themselves).
    forward: Callable[[int], object] = lambda signum: None
    #: Told how each reload went: its start (CLOCK_MONOTONIC, µs) and its problem, None if it serves.
    acknowledge: Callable[[int, str | None], object] = lambda started, problem: None
    _running_reload: Deferred[bool] | None = field(default=None, init=False)
    _again: bool = field(default=False, init=False)

    log = Logger()

    def startService(self) -> None:
        super().startService()
        signal.signal(signal.SIGHUP, self._signalled)

    def _signalled(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> Deferred[bool] | None:
        """Reload now, or once the reload under way is done; fires True if the new config serves."""
        if not self.running:
            return None
        self.forward(signal.SIGHUP)
        if self._running_reload is not None:
            self._again = True
            return self._running_reload
        done = Deferred.fromCoroutine(self._reload())
        if not done.called:  # one that finished at once has already cleared _running_reload
            self._running_reload = done
        return done

    async def _reload(self) -> bool:
        try:
            while True:
                self._again = False
                loaded = await self._reload_once()
                if not self._again:
                    return loaded
        finally:
            self._running_reload = None

    async def _reload_once(self) -> bool:
        started = systemd.monotonic_usec()
        self.notify(systemd.reloading(started))
        self.log.info(
            "SIGHUP: reopening log files and reading {path}", path=self.path, gatewayd_reopen=True
        )
        self.gateway.reopen_logs()
        # New handshakes get the renewed certificates; open connections keep theirs.
        problems = self.gateway.reload_certificates()
        loaded = await self._load()
        problem = "; ".join([*problems, loaded] if loaded is not None else problems) or None
        self.notify("READY=1")
        self.acknowledge(started, problem)
        return problem is None

    async def _load(self) -> str | None:
        """Read and swap in the configuration; the problem if the previous one keeps serving."""
        try:
            config = await self.read(self.path, self.environ)
            if not self.running:
                return "stopping"  # stopped while reading: the gateway has closed its logs
            self.gateway.load(config)
        except INVALID as error:
            self.log.error(
                "Configuration not loaded, still serving the previous one: {problem}",
                problem=str(error),
                file=getattr(error, "file", None),
                entity=getattr(error, "entity", None),
            )
            return str(error)
        except Exception:
            self.log.failure("Configuration not loaded, still serving the previous one")
            return "unexpected error, see the daemon's log"
        self.log.info(
            "Configuration reloaded from {files}",
            files=", ".join(config.sources),
        )
        return None
