"""The file-log plugin: one JSON object per line per request, as Kong writes them.

Each file a file-log plugin instance names is a :class:`JSONLinesFile`.
Records are buffered as they come and serialized and written once per reactor
turn, by a ``callLater(0)``: a burst of requests costs one ``write`` call.  The
log phase that hands them over runs once their answers have been sent
(:class:`gatewayd.pipeline.AfterAnswers`), so a record reaches the file a
reactor turn or two after its client has the answer, as with Kong, whose log
phase runs after the response.

A record is written whole or not at all: when the disk is full, a write the
kernel took only in part is cut back to the last whole line, and what did not
go in waits in a bounded in-memory backlog, retried every second until space
returns.  Records past the bound are dropped and counted.
"""

from __future__ import annotations

import os
from typing import IO, Any, Callable, Mapping

from attrs import define, field, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gatewayd import jsonwire
from gatewayd.config import Plugin
from gatewayd.config.schema import PluginSchema, boolean, map_of, record, string
from gatewayd.plugins import CompileContext, KongPlugin, refuse

#: Bytes of records kept in memory per file while they cannot be written (``--file-log-backlog``).
DEFAULT_BACKLOG_BYTES = 16 * 1024 * 1024
#: Seconds between attempts to write the backlog.
RETRY_INTERVAL = 1.0

# Kong 3.15, FileLog.json (unchanged since 3.13)
FILE_LOG_CONFIG = record({
    "custom_fields_by_lua": map_of(string(), refused="Lua is not run by gatewayd"),
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


@frozen
class Rotation:
    """Size-based rotation, for operators without logrotate: ``path`` → ``path.1`` … ``path.<keep>``."""

    max_bytes: int
    keep: int = 5


@define
class JSONLinesFile:
    """Appends records to a file, one JSON line each.

    ``reopen`` is Kong's option of the same name: the file is opened anew for
    every batch, so it follows a rename without a signal.  :meth:`reopen` does
    the same on demand (SIGHUP after logrotate).  A file no longer configured
    is retired (:meth:`retire`): it keeps no descriptor open between batches.
    Lines that cannot be written wait in memory, up to ``backlog_limit`` bytes;
    ``report(path, lost, backlog)`` hears of records lost and of the backlog's length
    when either changed (and after the first write).
    """

    path: str
    reactor: IReactorTime
    reopen_each_batch: bool = False
    rotation: Rotation | None = None
    backlog_limit: int = DEFAULT_BACKLOG_BYTES
    report: Callable[[str, int, int], None] | None = None
    _retired: bool = field(default=False, init=False)
    _file: IO[bytes] | None = field(default=None, init=False)
    _buffer: list[Mapping[str, Any]] = field(factory=list, init=False)
    _flush_call: IDelayedCall | None = field(default=None, init=False)
    #: Serialized lines not written yet, oldest first, and their size.
    _backlog: list[bytes] = field(factory=list, init=False)
    _backlog_bytes: int = field(default=0, init=False)
    #: Records dropped since writing began to fail, and in all.
    _lost_now: int = field(default=0, init=False)
    lost: int = field(default=0, init=False)
    _reported_lost: int = field(default=0, init=False)
    _reported_backlog: int | None = field(default=None, init=False)
    _failing_since: float | None = field(default=None, init=False)

    log = Logger()

    def add(self, record: Mapping[str, Any]) -> None:
        """Buffer ``record`` for this reactor turn's write."""
        if self._failing_since is not None:  # the retry is scheduled; the bound applies now
            self._keep(jsonwire.line(record))
            self._report()
            return
        self._buffer.append(record)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self.flush)

    @property
    def backlog(self) -> int:
        """Records waiting in memory for the file to take them."""
        return len(self._backlog)

    def flush(self) -> None:
        """Write out the backlog, then every buffered record, each line whole or not at all."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        pending, self._buffer = self._buffer, []
        for entry in pending:
            self._keep(jsonwire.line(entry))
        if not self._backlog:
            return
        lines = self._backlog
        try:
            if self.reopen_each_batch:
                self.reopen()
            if self._file is None:
                self._file = _open_append(self.path)
            written = _write_whole_lines(self._file, lines)
            if written == len(lines) and self.rotation is not None and self._file.tell() >= self.rotation.max_bytes:
                self._rotate(self.rotation)
            if self._retired:
                self.reopen()
        except OSError as error:
            written, failure = 0, error
        else:
            failure = None if written == len(lines) else OSError("the disk took only part of a write")
        self._written(written)
        if failure is not None:
            self._failing(failure)
        elif self._failing_since is not None:
            self._recovered()
        self._report()

    def _report(self) -> None:
        lost, backlog = self.lost - self._reported_lost, len(self._backlog)
        if self.report is not None and (lost or backlog != self._reported_backlog):
            self.report(self.path, lost, backlog)
        self._reported_lost, self._reported_backlog = self.lost, backlog

    def _keep(self, line: bytes) -> None:
        """Queue a line, or, while writes fail, count it lost when the backlog is full."""
        full = self._backlog and self._backlog_bytes + len(line) > self.backlog_limit
        if full and self._failing_since is not None:
            if not self._lost_now:
                self.log.error(
                    "file-log backlog for {path} is full ({limit} bytes): records are lost "
                    "from now on until the file takes writes again",
                    path=self.path,
                    limit=self.backlog_limit,
                )
            self._lost_now += 1
            self.lost += 1
            return
        self._backlog.append(line)
        self._backlog_bytes += len(line)

    def _written(self, count: int) -> None:
        done, self._backlog = self._backlog[:count], self._backlog[count:]
        self._backlog_bytes -= sum(len(line) for line in done)

    def _failing(self, error: OSError) -> None:
        if self._failing_since is None:
            self._failing_since = self.reactor.seconds()
            self.log.error(
                "file-log cannot write to {path}: {error}; keeping up to {limit} bytes of "
                "records in memory and retrying every {interval}s",
                path=self.path,
                error=str(error),
                limit=self.backlog_limit,
                interval=RETRY_INTERVAL,
            )
        self.reopen()  # the next attempt starts from a fresh descriptor
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(RETRY_INTERVAL, self.flush)

    def _recovered(self) -> None:
        assert self._failing_since is not None
        self.log.info(
            "file-log writes to {path} again after {outage:.1f}s; records lost meanwhile: {lost}",
            path=self.path,
            outage=self.reactor.seconds() - self._failing_since,
            lost=self._lost_now,
        )
        self._failing_since, self._lost_now = None, 0

    def reopen(self) -> None:
        """Close the file so that the next write opens the configured path again."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # an unbuffered file has nothing left to lose
            self._file = None

    def close(self) -> None:
        """Write what is buffered and close; what still cannot be written is counted lost."""
        self.flush()
        if self._backlog:
            self.log.error(
                "file-log closing {path} with {count} records it could not write; they are lost",
                path=self.path,
                count=len(self._backlog),
            )
            self.lost += len(self._backlog)
            self._backlog, self._backlog_bytes = [], 0
            self._report()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
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


def _write_whole_lines(file: IO[bytes], lines: list[bytes]) -> int:
    """Append ``lines`` in one write; how many went in whole.

    A full disk may take part of a write: the file is cut back to the end of
    the last whole line, unless something else appended meanwhile (another
    worker), whose bytes must not be cut.  An append leaves the file's offset
    where its bytes end, so only a short write costs a look at the file's size.
    """
    data = b"".join(lines)
    written = file.write(data) or 0
    if written == len(data):
        return len(lines)
    count, whole = 0, 0
    for line in lines:
        if whole + len(line) > written:
            break
        whole += len(line)
        count += 1
    end = file.tell()
    if os.fstat(file.fileno()).st_size == end:
        os.ftruncate(file.fileno(), end - written + whole)
    return count


def _open_append(path: str) -> IO[bytes]:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # Unbuffered: a write's count is what the kernel took, so a short write is seen and mended.
    return open(path, "ab", buffering=0)


@define
class FileLog:
    """One file, kept across reloads by path."""

    file: JSONLinesFile

    @classmethod
    def open(
        cls,
        path: str,
        reactor: IReactorTime,
        *,
        reopen: bool = False,
        rotation: Rotation | None = None,
        backlog_limit: int = DEFAULT_BACKLOG_BYTES,
        report: Callable[[str, int, int], None] | None = None,
    ) -> "FileLog":
        return cls(JSONLinesFile(path, reactor, reopen, rotation, backlog_limit, report))

    def write(self, record: Mapping[str, Any]) -> None:
        # Straight to the file: emitting a twisted.logger event costs several times the buffering.
        self.file.add(record)

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
            lambda: FileLog.open(
                path, context.reactor, reopen=reopen, rotation=context.facility("file_log_rotation"),
                backlog_limit=context.facility("file_log_backlog"),
                report=context.facility("health").file_log_report,
            ),
        )
        return cls(sink)

    def log(self, request: object, exchange: object, record: Mapping[str, Any]) -> None:
        self.sink.write(record)


plugin = KongPlugin("file-log", priority=9, version="3.15.0", schema=FILE_LOG, compile=FileLogPlugin.compile)
