"""The stream pipeline: an upstream Gemini SSE body, translated, to one client.

:class:`SSEBridge` is the ``Protocol`` handed to the upstream response's
``deliverBody``.  It registers itself as the push producer of the client's
request and pauses the upstream socket while the client reads slowly or its
own queue of untranslated bytes is long, so nothing piles up in memory.  The translation itself is
the pure :class:`gatewayd.translate.StreamTranslator`.

What one upstream read gives is written to the client and sent at once
(:func:`gatewayd.sending.flush`), not when the reactor's turn ends.  One read may
carry hundreds of chunks (a fast model, or an upstream that batches), so the
bridge translates at most ``slice_bytes`` within ``turn_seconds`` and queues
the rest for the next turns: the first events leave at once and concurrent
streams take turns.  What a later (timed) turn writes leaves at the end of
the reactor's next turn, with every other stream's turn, in one pass (sent one by one, a burst of 16
streams took 3 ms longer to its end, and its first bytes 0.3 ms longer).

A turn is told by the clock, not by the calls: :mod:`gatewayd.http11` hands a
plain read over in one ``dataReceived``, but TLS hands one read over as many
(one per TLS record), while a paced stream's reads, each a turn of its own,
come milliseconds apart.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.server import Request
from zope.interface import implementer

from gatewayd import errors
from gatewayd.sending import flush
from gatewayd.translate import GeminiSSEDecoder, encode_event


@implementer(IPushProducer)
class SSEBridge(Protocol):
    """Translates one upstream stream into Anthropic SSE events on ``request``.

    ``done`` fires with None once the client's response is finished (or the
    client has gone), and the outcome is readable from ``error`` and from the
    translator's usage.
    """

    log = Logger()
    #: Bytes of upstream data translated per reactor turn (a few dozen chunks).
    slice_bytes = 4096
    #: Reads closer together than this share one turn's ``slice_bytes``.
    turn_seconds = 0.001
    #: Queued upstream bytes past which the upstream is paused until the queue drains.
    queue_limit = 65536

    def __init__(
        self,
        request: Request,
        translator: Any,
        reactor: IReactorTime,
        on_first_chunk: Callable[[], None] = lambda: None,
        read_timeout: float | None = None,
        keep_text: bool = False,
    ) -> None:
        self.request = request
        self.translator = translator
        self.reactor = reactor
        self.done: Deferred[None] = Deferred()
        self.error: errors.APIError | None = None
        self._decoder = GeminiSSEDecoder()
        self._on_first_chunk = on_first_chunk
        self._seen_chunk = False
        self._closed = False
        self._client_gone = False
        self._read_timeout = read_timeout
        self._idle: IDelayedCall | None = None
        self._heard = 0.0  # when the upstream last sent something, while the timeout is on
        self._pending: deque[bytes] = deque()  # upstream bytes received, not translated yet
        self._tick: IDelayedCall | None = None  # the next turn: budget renewed, queue drained
        self._turn_began = float("-inf")  # when the bytes counted in _spent began to come
        self._spent = 0
        self._lost: Failure | None = None  # the upstream ended while bytes were queued
        self._queued = 0  # bytes in _pending
        self._client_paused = False
        self._upstream_paused = False
        # What the client was sent, kept only for ``log_payloads``.
        self._kept: list[bytes] | None = [] if keep_text else None

    def sent_text(self) -> str:
        """The stream as the client got it, when ``keep_text`` asked for it."""
        return b"".join(self._kept or ()).decode("utf-8", "replace")

    @property
    def client_left(self) -> bool:
        return self._client_gone

    def connectionMade(self) -> None:
        # message_start waits for the first chunk, which carries the prompt's token count.
        # The bridge is the client's producer: it pauses the upstream for a full client
        # buffer and for its own queue of untranslated bytes.
        self.request.registerProducer(self, True)
        self._watch()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._watch()
        if self._pending:  # after what waits: its turns come first
            self._queue(data)
            return
        now = self.reactor.seconds()
        if now - self._turn_began > self.turn_seconds:
            # A turn of its own: a stream whose reads are small never queues, and costs
            # no timer per chunk.
            self._turn_began, self._spent = now, 0
        room = self.slice_bytes - self._spent
        if room <= 0:
            self._queue(data)
            return
        if len(data) > room:
            data, rest = data[:room], data[room:]
            self._queue(rest)
        self._spent += len(data)
        self._translate(self._decoder.feed, data)

    def _next_turn(self) -> None:
        self._tick = None
        spent = 0
        while self._pending and spent < self.slice_bytes and not self._closed:
            data = self._pending.popleft()
            room = self.slice_bytes - spent
            if len(data) > room:
                data, rest = data[:room], data[room:]
                self._pending.appendleft(rest)
            self._queued -= len(data)
            spent += len(data)
            self._translate(self._decoder.feed, data, at_once=False)
        self._turn_began, self._spent = self.reactor.seconds(), spent
        if self._closed:
            self._pending.clear()
            self._queued = 0
        self._flow()
        if self._pending:
            self._tick = self.reactor.callLater(0, self._next_turn)
        elif self._lost is not None:
            self._end(self._lost, at_once=False)

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        self._queued += len(data)
        if self._tick is None:
            self._tick = self.reactor.callLater(0, self._next_turn)
        self._flow()

    def _flow(self) -> None:
        """Pause the upstream while the client is full or the queue is long, else resume."""
        paused = self._client_paused or self._queued > self.queue_limit
        if paused != self._upstream_paused and self.transport is not None and not self._closed:
            self._upstream_paused = paused
            if paused:
                self._unwatch()  # the upstream is not silent: we are not reading
                self.transport.pauseProducing()
            else:
                self._watch()
                self.transport.resumeProducing()

    # IPushProducer, for the client's request
    def pauseProducing(self) -> None:
        self._client_paused = True
        self._flow()

    def resumeProducing(self) -> None:
        self._client_paused = False
        self._flow()

    def stopProducing(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def _watch(self) -> None:
        """(Re)start the read timeout: the upstream may stay silent that long between chunks.

        A chunk only notes when it came; the timer, when it fires, sees whether the
        upstream has been silent for the whole timeout and, if not, waits out the
        rest.  Moving a timer on every chunk cost more than the chunk's translation.
        """
        if self._read_timeout is None or self._upstream_paused:
            return
        self._heard = self.reactor.seconds()
        if self._idle is None:
            self._idle = self.reactor.callLater(self._read_timeout, self._stalled)

    def _stalled(self) -> None:
        self._idle = None
        if self._closed or self._read_timeout is None:
            return
        left = self._heard + self._read_timeout - self.reactor.seconds()
        if left > 0:
            self._idle = self.reactor.callLater(left, self._stalled)
            return
        self._abort(errors.upstream_timeout("the upstream", "next stream chunk"))

    def _unwatch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _translate(self, decode: Callable[..., list[dict[str, Any]]], *data: bytes, at_once: bool = True) -> None:
        try:
            chunks = decode(*data)
        except ValueError as error:
            self._abort(errors.APIError(502, "api_error", f"upstream sent a malformed stream: {error}"))
            return
        events: list[tuple[str, dict[str, Any]]] = []
        for chunk in chunks:
            if "error" in chunk:
                self._send(events, at_once)
                self._abort(errors.from_upstream(_status(chunk), json.dumps(chunk).encode()))
                return
            if not self._seen_chunk:
                self._seen_chunk = True
                self._on_first_chunk()
            events.extend(self.translator.feed(chunk))
        self._send(events, at_once)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._unwatch()
        if self._pending:
            self._lost = reason  # ends once the queued bytes before it are translated
        else:
            self._end(reason)

    def _end(self, reason: Failure, at_once: bool = True) -> None:
        """The stream's last events and its end; ``at_once`` as for :meth:`_send` (not in a
        later turn, whose writes leave with the other streams' turns)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if not self._closed and reason.check(ResponseDone, PotentialDataLoss):
            self._translate(self._decoder.close, at_once=at_once)
        if not self._closed:
            if reason.check(ResponseDone, PotentialDataLoss) and self.translator.complete:
                self._send(self.translator.finish(), at_once)
            elif reason.check(ResponseDone, PotentialDataLoss):
                self.error = errors.APIError(
                    502, "api_error", "upstream stream ended before its final chunk"
                )
                self._send([("error", self.error.body())], at_once)
            else:
                self.error = errors.APIError(
                    502, "api_error", f"upstream connection lost: {reason.getErrorMessage()}"
                )
                self._send([("error", self.error.body())], at_once)
            self._closed = True
        if not self._client_gone:
            self.request.unregisterProducer()
            self.request.finish()
        self.done.callback(None)

    def client_gone(self) -> None:
        """The client disconnected: drop the upstream at once to free its connection."""
        self._client_gone = True
        self._closed = True
        # Twisted keeps the producer of a request whose client left (unregistering needs
        # the channel, gone by now): the request and this bridge would hold each other.
        self.request.producer = None
        self._unwatch()
        self._pending.clear()
        if self._lost is not None:  # the upstream has ended already
            self._end(self._lost)
            return
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self.transport is not None:
            self.transport.stopProducing()

    def _abort(self, error: errors.APIError) -> None:
        """Report ``error`` to the client mid-stream and stop reading the upstream."""
        self.error = error
        self._send([("error", error.body())])
        self._closed = True
        self.transport.stopProducing()

    def _send(self, events: list[tuple[str, dict[str, Any]]], at_once: bool = True) -> None:
        """Write ``events`` to the client; ``at_once``, send them now rather than when the turn ends."""
        if events and not self._client_gone:
            data = b"".join(encode_event(name, data) for name, data in events)
            if self._kept is not None:
                self._kept.append(data)
            self.request.write(data)
            if at_once and self.request.channel is not None:
                flush(self.request.channel.transport)


def _status(chunk: dict[str, Any]) -> int:
    code = chunk.get("error", {}).get("code") if isinstance(chunk.get("error"), dict) else None
    return code if isinstance(code, int) else 500
