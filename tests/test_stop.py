"""Stopping: requests in flight get the grace period, then are cut; log files close last."""

from __future__ import annotations

from twisted.internet.task import Clock

from gatewayd.plugins.file_log import FileLog
from gatewayd.daemon.gateway import CUT_REQUESTS_SETTLE, Gateway


class Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class Channel:
    def __init__(self) -> None:
        self.transport = Transport()


class Request:
    def __init__(self) -> None:
        self.channel = Channel()


def gateway(tmp_path, clock):
    g = Gateway(clock, client=None, shutdown_grace=10.0)
    g.kept.live[("file-log", "x", False)] = FileLog.open(str(tmp_path / "claude.json"), clock)
    return g


def test_stop_waits_for_requests_in_flight_then_closes_the_logs(tmp_path):
    clock = Clock()
    g = gateway(tmp_path, clock)
    request = Request()
    g.request_started(request)
    stopped = g.stopService()
    clock.advance(9.9)
    assert not stopped.called and not request.channel.transport.aborted
    (file_log,) = g.kept.values("file-log")
    file_log.write({"n": 1})  # the record written as the request finishes
    g.request_done(request)
    assert stopped.called
    assert (tmp_path / "claude.json").read_text() == '{"n":1}\n'


def test_at_the_end_of_the_grace_period_requests_are_cut_and_still_logged(tmp_path):
    clock = Clock()
    g = gateway(tmp_path, clock)
    request = Request()
    g.request_started(request)
    stopped = g.stopService()
    clock.advance(10.0)
    assert request.channel.transport.aborted and not stopped.called
    (file_log,) = g.kept.values("file-log")
    file_log.write({"n": 1, "client_gone": True})
    g.request_done(request)
    assert stopped.called
    assert (tmp_path / "claude.json").read_text() == '{"n":1,"client_gone":true}\n'


def test_a_request_that_never_settles_does_not_hold_the_stop_forever(tmp_path):
    clock = Clock()
    g = gateway(tmp_path, clock)
    g.request_started(Request())
    stopped = g.stopService()
    clock.advance(10.0)
    clock.advance(CUT_REQUESTS_SETTLE)
    assert stopped.called


def test_with_nothing_in_flight_stop_is_immediate(tmp_path):
    assert gateway(tmp_path, Clock()).stopService().called


def test_a_record_buffered_for_a_file_log_a_reload_retired_is_written_at_stop(tmp_path):
    from tests.test_reload import TokenSources, config

    g = Gateway(Clock(), client=None, make_token_source=TokenSources())
    g.load(config(tmp_path))
    (old,) = g.kept.values("file-log")
    g.load(config(tmp_path, log="other.json"))
    old.write({"n": 1})  # a request of the first snapshot, finishing just before the stop
    g.stopService()
    assert (tmp_path / "claude.json").read_text() == '{"n":1}\n'


def test_a_request_whose_client_already_left_does_not_break_the_stop(tmp_path):
    # Twisted sets request.channel to None when the connection is lost; such a request may
    # still be in flight (its handler not done) when the grace period ends.
    clock = Clock()
    g = gateway(tmp_path, clock)
    gone, cut = Request(), Request()
    gone.channel = None
    g.request_started(gone)
    g.request_started(cut)
    stopped = g.stopService()
    (file_log,) = g.kept.values("file-log")
    file_log.write({"n": 1})
    clock.advance(10.0)
    assert cut.channel.transport.aborted
    clock.advance(CUT_REQUESTS_SETTLE)
    assert stopped.called and (tmp_path / "claude.json").read_text() == '{"n":1}\n'
    assert stopped.result is None


def test_a_grace_that_ends_while_an_answered_request_waits_for_its_log_phase():
    """An answered request stays in flight until its log phase, which runs once the answer
    is out; twisted.web has let go of its channel by then.  Cutting what is left must pass
    it over, and its record still comes."""
    import json

    from tests.inmemory import Gateway as InMemory, answer, ask, target

    made = InMemory("{algorithm: round-robin}", [target(0)])
    try:
        made.gateway.shutdown_grace = 0.0
        client = made.client()
        client.post(ask("hi"))
        made.upstream.accept().respond(200, answer("hello"))
        assert client.response()[0] == 200 and len(made.gateway.in_flight) == 1
        stopped = made.gateway.stopService()
        made.reactor.advance(0)  # the grace (none) ends before the log phase's second turn
        made.reactor.advance(CUT_REQUESTS_SETTLE)
        assert stopped.called and stopped.result is None
        (record,) = [json.loads(line) for line in made.log_path.read_text().splitlines()]
        assert record["response"]["status"] == 200
    finally:
        made.close()
