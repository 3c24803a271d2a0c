"""The file-log plugin: one JSON object per line per request, as Kong writes them.

Records travel as ``twisted.logger`` events: each file-log plugin instance owns
a :class:`~twisted.logger.Logger` whose observer is a :class:`JSONLinesFile`.
Records are buffered as they come and serialized and written once per reactor
turn, after the responses of that turn have gone out: a burst of requests
costs one ``write`` call, and nothing is held back longer than that.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any, Mapping

from attrs import define, field, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from gatewayd.config import Plugin
from gatewayd.config.schema import PluginSchema, boolean, map_of, record, string
from gatewayd.plugins import CompileContext, KongPlugin, refuse

#: Request headers whose values never reach a log.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "set-cookie",
    }
)
REDACTED = "REDACTED"

# Kong 3.13, FileLog.json
FILE_LOG_CONFIG = record({
    "custom_fields_by_lua": map_of(string()),
    "path": string(required=True, match=r"^[^*&%\\`]+$", match_err="not a valid filename"),
    "reopen": boolean(default=False),
})

FILE_LOG = PluginSchema(
    name="file-log",
    config=FILE_LOG_CONFIG,
    protocols_allowed=("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough",
                       "udp", "ws", "wss"),
    protocols_default=("grpc", "grpcs", "http", "https"),
)


def redact_headers(headers: Mapping[str, str], also: frozenset[str] = frozenset()) -> dict[str, str]:
    """Lower-cased headers, with credentials (and the header names in ``also``) replaced by a marker."""
    return {
        name: (REDACTED if name in SECRET_HEADERS or name in also else value)
        for name, value in headers.items()
    }


@frozen
class Rotation:
    """Size-based rotation, for operators without logrotate: ``path`` → ``path.1`` … ``path.<keep>``."""

    max_bytes: int
    keep: int = 5


@implementer(ILogObserver)
@define
class JSONLinesFile:
    """Appends the ``record`` of each log event to a file, one JSON line each.

    ``reopen`` is Kong's option of the same name: the file is opened anew for
    every batch, so it follows a rename without a signal.  :meth:`reopen` does
    the same on demand (SIGHUP after logrotate).  A file no longer configured
    is retired (:meth:`retire`): it keeps no descriptor open between batches.
    """

    path: str
    reactor: IReactorTime
    reopen_each_batch: bool = False
    rotation: Rotation | None = None
    _retired: bool = field(default=False, init=False)
    _file: IO[bytes] | None = field(default=None, init=False)
    _buffer: list[Mapping[str, Any]] = field(factory=list, init=False)
    _flush_call: IDelayedCall | None = field(default=None, init=False)

    log = Logger()

    def __call__(self, event: Mapping[str, Any]) -> None:
        record = event.get("record")
        if record is None:
            return
        self._buffer.append(record)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Write out every buffered record."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if not self._buffer:
            return
        records, self._buffer = self._buffer, []
        data = "".join(
            [json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=str) + "\n" for r in records]
        ).encode("utf-8")
        try:
            if self.reopen_each_batch:
                self.reopen()
            if self._file is None:
                self._file = _open_append(self.path)
            self._file.write(data)
            self._file.flush()
            if self.rotation is not None and self._file.tell() >= self.rotation.max_bytes:
                self._rotate(self.rotation)
            if self._retired:
                self.reopen()
        except OSError as error:
            self.log.error(
                "file-log could not write {count} bytes to {path}: {error}",
                count=len(data),
                path=self.path,
                error=str(error),
            )

    def reopen(self) -> None:
        """Close the file so that the next write opens the configured path again."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.flush()
        self.reopen()

    def retire(self) -> None:
        """Write what is buffered and close; later records (of requests in flight) open and close it."""
        self._retired = True
        self.close()

    def _rotate(self, rotation: Rotation) -> None:
        self.reopen()
        for n in range(rotation.keep - 1, 0, -1):
            if os.path.exists(f"{self.path}.{n}"):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")


def _open_append(path: str) -> IO[bytes]:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    return open(path, "ab")


@define
class FileLog:
    """One file: a logger wired to its JSON-lines sink, kept across reloads by path."""

    file: JSONLinesFile
    logger: Logger

    @classmethod
    def open(
        cls, path: str, reactor: IReactorTime, *, reopen: bool = False, rotation: Rotation | None = None
    ) -> "FileLog":
        sink = JSONLinesFile(path, reactor, reopen, rotation)
        return cls(sink, Logger(namespace="gatewayd.file_log", observer=sink))

    def write(self, record: Mapping[str, Any]) -> None:
        self.logger.info("access record for {path}", path=self.file.path, record=record)

    def reopen(self) -> None:
        self.file.reopen()

    def retire(self) -> None:
        self.file.retire()

    def close(self) -> None:
        self.file.close()


@frozen
class FileLogPlugin:
    """One file-log plugin instance: its log phase appends the record to the file."""

    sink: FileLog

    @classmethod
    def compile(cls, plugin: Plugin, context: CompileContext) -> "FileLogPlugin":
        path, reopen = plugin.config["path"], bool(plugin.config["reopen"])
        if plugin.config.get("custom_fields_by_lua"):
            raise refuse(plugin, "custom_fields_by_lua", "is not served by gatewayd (it runs Lua)")
        sink = context.keep(
            ("file-log", path, reopen),
            lambda: FileLog.open(path, context.reactor, reopen=reopen,
                                 rotation=context.facility("file_log_rotation")),
        )
        return cls(sink)

    def log(self, request: object, exchange: object, record: Mapping[str, Any]) -> None:
        self.sink.write(record)


plugin = KongPlugin("file-log", priority=9, version="3.13.0", schema=FILE_LOG, compile=FileLogPlugin.compile)
