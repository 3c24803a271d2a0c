"""Sending what was written at once, not at the reactor's next poll.

Twisted buffers a write and sends it when the reactor next polls, after every
connection ready in the same poll has been read.  That suits an answer written in
pieces, which then leaves in one send, and a busy reactor, whose sends of one poll
go out together.  A streamed event, written once per upstream read, only waits:
flushed, the first text of 16 paced streams comes 0.15 ms sooner.  (Requests to
the model flushed the same way cut 0.05 ms off an answer at c=1 but 13% off the
throughput at c=64, so they wait for the poll.)

Only a socket's own transport is flushed.  Under TLS, Twisted's
``BufferingTLSTransport`` gathers small writes into one TLS record at the
reactor's next turn, by design (a record per event costs CPU and bytes), and
that is left as it is: over a TLS listener, events leave at that turn.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ITransport


def flush(transport: ITransport | None) -> None:
    """Send what was written to ``transport`` now, if it is a socket's transport.

    The socket takes what it will; what it does not take stays buffered for the
    reactor, as before, and while the socket still holds back earlier bytes the
    reactor alone sends, when it is writable again.  A send that fails is left for
    the reactor too, which meets the same failure at its poll and closes the
    connection, so a closing connection is not touched.
    """
    if (
        isinstance(transport, FileDescriptor)
        and transport.connected
        and not transport.disconnecting
        and len(transport.dataBuffer) == transport.offset  # nothing held back from before
    ):
        transport.doWrite()
