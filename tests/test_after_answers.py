"""AfterAnswers on a real reactor: work added in a turn runs after the poll that sends
what that turn wrote, as Kong's log phase runs after the response has gone out."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from gatewayd.pipeline import AfterAnswers
from twisted.logger import globalLogPublisher


def _received(peer: socket.socket) -> bytes:
    """What has reached ``peer`` so far, left there to be seen again."""
    try:
        return peer.recv(100, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        return b""


@pytest_twisted.ensureDeferred
async def test_work_runs_after_the_poll_that_sends_the_answers_of_its_turn():
    """An answer written while a request is read (the usual case) goes out in the poll
    after the next turn's timed calls: a plain callLater(0) runs before that; the work
    added to AfterAnswers runs after it."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    after = AfterAnswers(reactor)
    seen: list[tuple[str, bytes]] = []
    done: Deferred[None] = Deferred()

    class Side(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(b"answer to " + data)
            reactor.callLater(0, lambda: seen.append(("next turn", _received(peer))))
            after.add(lambda: seen.append(("after answers", _received(peer))))
            after.add(lambda: done.callback(None))

    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(Side))
    ours.close()  # the reactor holds its own copy of the descriptor
    try:
        peer.sendall(b"q")
        await done
        assert seen == [("next turn", b""), ("after answers", b"answer to q")]
    finally:
        peer.close()


class Turns:
    """A reactor whose timed calls run a turn at a time, on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, tuple]] = []

    def callLater(self, delay: float, f, *args):  # noqa: ANN001
        self.calls.append((f, args))

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


def test_batches_keep_their_order_and_work_added_while_one_waits_joins_the_next():
    turns = Turns()
    after = AfterAnswers(turns)  # type: ignore[arg-type]
    ran: list[str] = []
    after.add(lambda: ran.append("a"))
    after.add(lambda: ran.append("b"))
    turns.turn()  # the turn before the poll that sends a's and b's answers
    after.add(lambda: ran.append("c"))  # written during that poll: waits for the next one
    turns.turn()
    assert ran == ["a", "b"]
    turns.turn()
    assert ran == ["a", "b", "c"]


def test_one_failing_piece_of_work_leaves_the_rest_of_its_batch_to_run():
    turns = Turns()
    after = AfterAnswers(turns)  # type: ignore[arg-type]
    ran: list[str] = []
    logged: list[dict] = []
    after.add(lambda: 1 / 0)
    after.add(lambda: ran.append("b"))
    globalLogPublisher.addObserver(logged.append)
    try:
        turns.turn()
        turns.turn()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert ran == ["b"]
    failures = [e["log_failure"] for e in logged if "log_failure" in e]
    assert len(failures) == 1 and failures[0].check(ZeroDivisionError)
