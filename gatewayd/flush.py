"""Sending what was written at once, not at the reactor's next poll.

Twisted buffers a write and sends it when the reactor next polls, after every
connection ready in the same poll has been read.  That suits an answer written in
pieces, which then leaves in one send, and a busy reactor, whose sends of one poll
go out together.  A streamed event, written once per upstream read, only waits:
flushed, the first text of 16 paced streams comes 0.15 ms sooner.  (Requests to
the model flushed the same way cut 0.05 ms off an answer at c=1 but 13% off the
throughput at c=64, so they wait for the poll.)
"""

from __future__ import annotations

from twisted.internet.interfaces import ITransport, IWriteDescriptor
from twisted.protocols.policies import ProtocolWrapper


def flush(transport: ITransport | None) -> None:
    """Send what was written to ``transport`` now.

    The socket takes what it will; what it does not take stays buffered for the
    reactor, as before.  A send that fails is left for the reactor too, which meets
    the same failure at its poll and closes the connection, so a closing connection
    is not touched.  Under TLS, what the wrapper encrypted waits in the socket's
    transport beneath it.  Other transports (in memory, in tests) are left alone.
    """
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    if IWriteDescriptor.providedBy(transport) and transport.connected and not transport.disconnecting:
        transport.doWrite()
