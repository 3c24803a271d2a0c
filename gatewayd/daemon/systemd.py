"""systemd's notify protocol, in the stdlib: tell the service manager what the daemon is doing.

``Type=notify`` units learn that gatewayd listens (``READY=1``), reloads
(``RELOADING=1`` with ``MONOTONIC_USEC``, then ``READY=1``) and stops
(``STOPPING=1``) from datagrams sent to ``$NOTIFY_SOCKET``.  A name starting
with ``@`` is an abstract socket.  Without the variable every call is a no-op,
so the daemon behaves the same outside systemd.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Mapping, Sequence

from attrs import define
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import gatherResults
from twisted.logger import Logger

from gatewayd.daemon.reloadack import monotonic_usec

log = Logger()


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (``"READY=1"``, ...) to the service manager; True if it was sent."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as error:
        log.warn("could not notify systemd of {state}: {error}", state=state, error=str(error))
        return False
    return True


def reloading(usec: int | None = None) -> str:
    """The message that opens a reload; systemd ≥ 253 wants the monotonic time with it."""
    return f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec() if usec is None else usec}"


@define(slots=False)
class Notifier(Service):
    """``READY=1`` once every listener listens, ``STOPPING=1`` as shutdown begins.

    Add it after the listeners, so that it starts after them.
    """

    listeners: Sequence[StreamServerEndpointService]
    reactor: Any
    notify: Callable[[str], object] = notify

    def startService(self) -> None:
        super().startService()
        self.reactor.addSystemEventTrigger("before", "shutdown", self.notify, "STOPPING=1")
        # The endpoint service keeps its listen() Deferred in a documented but
        # private ivar; there is no public way to learn that it listens.
        waiting = [listener._waitingForPort for listener in self.listeners]
        ready = gatherResults(waiting, consumeErrors=True)
        # A listener that fails is reported by its own service; READY never comes.
        ready.addCallbacks(lambda _: self.notify("READY=1"), lambda _: None)
