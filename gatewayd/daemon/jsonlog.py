"""The daemon's own log as JSON lines: ``twistd --logger gatewayd.daemon.jsonlog.observer``.

twistd calls a ``--logger`` factory with no arguments, before it starts the
services, so the destination comes from the environment:
``GATEWAYD_LOG_FILE`` unset or ``-`` writes to stdout (journald under systemd,
a container's log), a path appends to that file.  Every event becomes one
line of :func:`twisted.logger.eventAsJSON`, keeping its format string and
keyword fields, so ``jq`` can select on them, plus the formatted ``text``.

A log file follows ``logrotate``: an event carrying ``gatewayd_reopen=True``
(which the SIGHUP handler logs) makes the observer reopen the path first, so
that event is the first line of the new file.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Mapping

from attrs import define, field
from twisted.logger import ILogObserver, eventAsJSON, formatEvent
from zope.interface import implementer

ENVIRONMENT = "GATEWAYD_LOG_FILE"


@implementer(ILogObserver)
@define
class JSONLinesLog:
    """One JSON object per line per event, to a stream or a reopenable file."""

    path: str | None
    _stream: IO[str] | None = field(default=None)

    def __call__(self, event: Mapping[str, Any]) -> None:
        if event.get("gatewayd_reopen") and self.path is not None:
            self.reopen()
        stream = self._open()
        stream.write(eventAsJSON({**event, "text": formatEvent(event)}) + "\n")
        stream.flush()

    def reopen(self) -> None:
        if self._stream is not None and self.path is not None:
            self._stream.close()
            self._stream = None

    def _open(self) -> IO[str]:
        if self._stream is None:
            assert self.path is not None
            self._stream = open(self.path, "a", encoding="utf-8")
        return self._stream


def observer(environ: Mapping[str, str] = os.environ) -> JSONLinesLog:
    """The ``--logger`` factory: JSON lines to stdout or to ``$GATEWAYD_LOG_FILE``."""
    path = environ.get(ENVIRONMENT, "-")
    if path == "-":
        return JSONLinesLog(None, sys.stdout)
    return JSONLinesLog(path)
