"""When a socket's writes are sent: at the end of the reactor's turn, or at once.

Twisted sends a write at the reactor's next poll: the first write registers the
socket with epoll for writing, the poll reports it writable, ``doWrite`` sends
the buffer and unregisters it.  For a gateway, whose writes are nearly all an
answer or a request written whole, that is two ``epoll_ctl`` calls and a poll
event per write: sending at the turn's end instead took some 12% off the CPU a
request costs at c=64.

A socket transport adopted here (:func:`adopt`, called by the listener's channel
and the upstream connection when they connect) sends instead when the turn that
wrote ends: one ``callLater(0)`` for every socket written in the turn runs the
transport's own ``doWrite``.  Only what the socket does not take is left to epoll,
as before; a connection that ``doWrite`` finds done (closed once its bytes are
sent) or lost is closed as the reactor closes it.  What a turn writes still leaves
together, so an answer written in pieces is one send.  A write made in a timed
call (``callLater``) leaves at the end of the next turn, after the next poll's
events, where Twisted would have sent it during them.

:func:`flush` sends a transport's writes now, without waiting for the turn's end:
a streamed event, written once per upstream read, would only wait (flushed, the
first text of 16 paced streams comes 0.15 ms sooner).

Only a socket's own transport is adopted.  Under TLS, Twisted's
``BufferingTLSTransport`` gathers small writes into one TLS record at the
reactor's next turn, by design (a record per event costs CPU and bytes), and that
is left as it is: over TLS, writes leave at that turn.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()


@define(eq=False)
class _Turn:
    """The sockets one reactor's turn wrote to, sent when the turn ends."""

    written: list[_Writes] = field(factory=list)
    _call: IDelayedCall | None = None

    def add(self, writes: _Writes) -> None:
        self.written.append(writes)
        if self._call is None:
            self._call = writes.transport.reactor.callLater(0, self._end)

    def _end(self) -> None:
        self._call = None
        written, self.written = self.written, []
        for writes in written:
            try:
                writes.send(at_turn_end=True)
            except BaseException:  # one socket's failure is not the others'
                _log.failure("Sending on {transport!r} failed", transport=writes.transport)


#: Each reactor's turn (tests run more than one reactor).
_turns: WeakKeyDictionary[object, _Turn] = WeakKeyDictionary()


@define(eq=False)
class _Writes:
    """A socket transport's ``startWriting`` and ``stopWriting``, as :func:`adopt` sets them.

    Twisted calls ``startWriting`` on every write (and to close), ``stopWriting``
    once the buffer is sent, and last when the connection is lost.
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
        transport = self.transport
        if self.polled:
            self.polled = False
            transport.reactor.removeWriter(transport)
        if not transport.connected:
            # Lost.  The transport's methods are its class's again, which ends the
            # reference cycle between it and this object: refcounting frees it.
            del transport.startWriting, transport.stopWriting

    def send(self, at_turn_end: bool) -> None:
        """Send what the transport holds, leaving to the reactor what the socket did not take.

        When ``doWrite`` says the connection is done (closed once its bytes were
        sent) or lost, it is closed as the reactor would close it: at once at the
        turn's end (``at_turn_end``), and from :func:`flush`, which runs inside a
        protocol's call, when the turn ends.
        """
        if not self.queued:  # flushed already, or left to the reactor
            return
        self.queued = False
        transport = self.transport
        if not (self.wanted and transport.connected):
            return
        try:
            why = transport.doWrite()
        except BaseException:  # as the reactor's own doWrite call: logged, and the connection closed
            _log.failure("Sending on {transport!r} failed", transport=transport)
            why = Failure()
        if why is None:
            if self.wanted:  # the socket did not take it all
                self.polled = True
                transport.reactor.addWriter(transport)
        elif at_turn_end:
            self._lost(why)
        else:
            transport.reactor.callLater(0, self._lost, why)

    def _lost(self, why: BaseException | Failure) -> None:
        """What the reactor does when ``doWrite`` returns ``why``: stop watching, and lose the connection."""
        transport = self.transport
        if transport.connected:
            transport.reactor.removeReader(transport)
            transport.reactor.removeWriter(transport)
            transport.connectionLost(why if isinstance(why, Failure) else Failure(why))


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
        turn = _turns[transport.reactor] = _Turn()
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
        writes.send(at_turn_end=False)
