"""When a socket's writes are sent: at the end of the reactor's turn, or at once.

Twisted sends a write at the reactor's next poll: the first write registers the
socket with epoll for writing, the poll reports it writable, ``doWrite`` sends
the buffer and unregisters it.  For a gateway, whose writes are nearly all an
answer or a request written whole, that is two ``epoll_ctl`` calls and a poll
event per write, and at c=64 they were an eighth of the CPU a request took.

A socket transport adopted here (:func:`adopt`, called by the listener's channel
and the upstream connection when they connect) sends instead when the turn that
wrote ends: one ``callLater(0)`` for every socket written in the turn runs the
transport's own ``doWrite``.  Only what the socket does not take is left to epoll,
as before, and a send that fails is left for the reactor, which meets the same
failure at its poll and closes the connection.  What a turn writes still leaves
together, so an answer written in pieces is one send.

:func:`flush` sends a transport's writes now, without waiting for the turn's end:
a streamed event, written once per upstream read, would only wait (flushed, the
first text of 16 paced streams comes 0.15 ms sooner).

Only a socket's own transport is adopted.  Under TLS, Twisted's
``BufferingTLSTransport`` gathers small writes into one TLS record at the
reactor's next turn, by design (a record per event costs CPU and bytes), and that
is left as it is: over TLS, writes leave at that turn.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.tcp import Connection
from twisted.logger import Logger

_log = Logger()


@define(eq=False)
class _Turn:
    """The sockets a reactor's turn wrote to, sent when the turn ends."""

    #: The sockets' reactor: its ``callLater`` and its ``addWriter`` and ``removeWriter``.
    reactor: Any
    written: list[_Writes] = field(factory=list)
    _call: IDelayedCall | None = None

    def add(self, writes: _Writes) -> None:
        self.written.append(writes)
        if self._call is None:
            self._call = self.reactor.callLater(0, self._end)

    def _end(self) -> None:
        self._call = None
        written, self.written = self.written, []
        for writes in written:
            writes.send()


#: Each reactor's turn (tests run more than one reactor).
_turns: WeakKeyDictionary[object, _Turn] = WeakKeyDictionary()


@define(eq=False)
class _Writes:
    """A socket transport's ``startWriting`` and ``stopWriting``, as :func:`adopt` sets them.

    Twisted calls ``startWriting`` on every write (and to close), ``stopWriting``
    once the buffer is sent.
    """

    transport: Connection
    turn: _Turn
    #: Twisted has something to send: it asked to start writing and has not stopped.
    wanted: bool = False
    #: In the turn's list, to be sent when it ends.
    queued: bool = False
    #: Left to the reactor: registered with epoll for writing.
    polled: bool = False

    def start(self) -> None:
        self.wanted = True
        if not (self.polled or self.queued):
            self.queued = True
            self.turn.add(self)

    def stop(self) -> None:
        self.wanted = False
        if self.polled:
            self.polled = False
            self.turn.reactor.removeWriter(self.transport)

    def send(self) -> None:
        """Send what the transport holds, leaving to the reactor what the socket did not take."""
        if not self.queued:  # flushed already, or left to the reactor
            return
        self.queued = False
        if not (self.wanted and self.transport.connected):
            return
        try:
            why = self.transport.doWrite()
        except Exception:
            _log.failure("Sending on {transport!r} failed", transport=self.transport)
            self.transport.abortConnection()
            return
        if why is not None or self.wanted:
            self.polled = True
            self.turn.reactor.addWriter(self.transport)


def adopt(transport: ITransport | None) -> None:
    """Send what is written to ``transport`` when the turn ends, if it is a socket's own transport.

    Any other transport (a TLS wrapper, a test's in-memory one) is left as it is.
    Setting the instance's methods is how Twisted's own ``tcp.BaseClient`` swaps its
    ``doWrite`` while it connects.
    """
    if not isinstance(transport, Connection) or not transport.connected:
        return
    turn = _turns.get(transport.reactor)
    if turn is None:
        turn = _turns[transport.reactor] = _Turn(transport.reactor)
    writes = _Writes(transport, turn)
    transport.startWriting = writes.start  # type: ignore[method-assign]
    transport.stopWriting = writes.stop  # type: ignore[method-assign]


def flush(transport: ITransport | None) -> None:
    """Send what was written to an adopted ``transport`` now, not when the turn ends.

    While the socket still holds back earlier bytes, the reactor alone sends, when
    it is writable again.
    """
    writes = getattr(getattr(transport, "startWriting", None), "__self__", None)
    if isinstance(writes, _Writes):
        writes.send()
