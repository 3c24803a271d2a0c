"""``--workers N``: one process per core, all accepting on the same listening sockets.

A Twisted reactor is one thread, so one process uses one core.  With
``--workers N`` the parent binds each ``--listen`` address itself, serves it
like any gatewayd (it is worker 0), and starts N-1 copies of
``twistd gatewayd`` that inherit the sockets and adopt them with
``adopt:fileno=F:domain=INET`` endpoints (:class:`AdoptedPort`), so the
kernel hands each new connection to whichever process accepts first.  A
worker that dies is started again; stopping the parent stops them all.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from typing import Any, Sequence

from attrs import define, field
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorSocket,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

_DOMAINS = {"INET": socket.AF_INET, "INET6": socket.AF_INET6}
#: First file descriptor number of the inherited sockets in a worker.
FIRST_FD = 3


@implementer(IStreamServerEndpoint)
@define
class AdoptedPort:
    """An endpoint that serves on a listening socket this process inherited."""

    reactor: IReactorSocket
    fileno: int
    domain: int

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        return defer.execute(self._adopt, factory)

    def _adopt(self, factory: Factory) -> IListeningPort:
        port = self.reactor.adoptStreamPort(self.fileno, self.domain, factory)
        # Every process sharing the socket wakes for a new connection.  Twisted's
        # port accepts up to ``numberAccepts`` (growing from 100) per wake-up, so
        # one process would take a whole burst; one each spreads them, and a busy
        # process, waking less often, takes fewer.
        accept = port.doRead

        def doRead() -> object:
            port.numberAccepts = 1
            return accept()

        port.doRead = doRead
        return port


@implementer(IPlugin, IStreamServerEndpointStringParser)
class AdoptedPortParser:
    """``adopt:fileno=F:domain=INET|INET6`` as a Twisted endpoint description."""

    prefix = "adopt"

    def parseStreamServer(self, reactor: IReactorSocket, fileno: str, domain: str = "INET") -> AdoptedPort:
        return AdoptedPort(reactor, int(fileno), _DOMAINS[domain])


def listening_socket(description: str, backlog: int = 1024) -> socket.socket:
    """Bind and listen on a ``tcp:PORT[:interface=HOST][:backlog=N]`` (or ``tcp6:``) description."""
    kind, *parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]
    if kind not in ("tcp", "tcp6") or not parts:
        raise ValueError(f"--workers shares tcp: and tcp6: listeners only, not {description!r}")
    options: dict[str, str] = {}
    for part in parts:
        name, equals, value = part.partition("=")
        options[name if equals else "port"] = value if equals else name
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.get("interface", "::" if kind == "tcp6" else ""), int(options["port"])))
    sock.listen(int(options.get("backlog", backlog)))
    sock.setblocking(False)
    return sock


def adopt_description(sock: socket.socket, fileno: int | None = None) -> str:
    """The endpoint description that serves ``sock`` (as ``fileno`` in a worker)."""
    domain = "INET6" if sock.family == socket.AF_INET6 else "INET"
    return f"adopt:fileno={sock.fileno() if fileno is None else fileno}:domain={domain}"


def worker_argv(
    sockets: Sequence[socket.socket], arguments: Sequence[str], tls_options: Sequence[str] = ()
) -> list[str]:
    """The command line of a worker: ``twistd -n gatewayd`` with the parent's options,
    listening on the inherited sockets instead of binding.  ``tls_options`` are each
    socket's TLS files as endpoint options ("" for plain HTTP), so that a worker serves
    TLS on the sockets the parent does (and reads its certificates again on SIGHUP)."""
    listen: list[str] = []
    for index, sock in enumerate(sockets):
        suffix = tls_options[index] if index < len(tls_options) else ""
        listen += ["--listen", adopt_description(sock, FIRST_FD + index) + suffix]
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--nodaemon",
        "--pidfile=",
        "gatewayd",
        *arguments,
        *listen,
    ]


@define
class _Worker(ProcessProtocol):
    pool: "WorkerProcesses"
    index: int
    ended: Deferred[None] = field(factory=Deferred)

    def processEnded(self, reason: Failure) -> None:
        self.pool.ended(self, reason)
        self.ended.callback(None)


@define(slots=False)
class WorkerProcesses(Service):
    """Keeps ``count`` worker processes running on the parent's listening sockets."""

    reactor: Any
    sockets: tuple[socket.socket, ...]
    count: int
    arguments: tuple[str, ...]
    restart_delay: float = 1.0
    #: Each socket's TLS files as endpoint options ("" for plain HTTP).
    tls_options: tuple[str, ...] = ()
    stop_timeout: float = 10.0
    workers: dict[int, _Worker] = field(factory=dict)

    log = Logger()

    def startService(self) -> None:
        super().startService()
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        worker = _Worker(self, index)
        fds: dict[int, Any] = {0: "w", 1: 1, 2: 2}
        for offset, sock in enumerate(self.sockets):
            fds[FIRST_FD + offset] = sock.fileno()
        argv = worker_argv(self.sockets, self.arguments, self.tls_options)
        self.reactor.spawnProcess(worker, argv[0], argv, env=os.environ, childFDs=fds)
        self.workers[index] = worker
        self.log.info("worker {index} started (pid {pid})", index=index, pid=worker.transport.pid)

    def ended(self, worker: _Worker, reason: Failure) -> None:
        self.workers.pop(worker.index, None)
        if not self.running:
            return
        self.log.warn(
            "worker {index} ended ({reason}); starting it again in {delay}s",
            index=worker.index,
            reason=reason.getErrorMessage(),
            delay=self.restart_delay,
        )
        self.reactor.callLater(self.restart_delay, self._restart, worker.index)

    def _restart(self, index: int) -> None:
        if self.running and index not in self.workers:
            self._spawn(index)

    def signal(self, number: int) -> None:
        """Pass ``number`` (e.g. SIGHUP, to reload) on to every worker."""
        for worker in self.workers.values():
            worker.transport.signalProcess(number)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        waiting = [worker.ended for worker in self.workers.values()]
        self.signal(signal.SIGTERM)
        killer = self.reactor.callLater(self.stop_timeout, self.signal, signal.SIGKILL)

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()

        return defer.DeferredList(waiting).addCallback(done)
