"""sd_notify over real datagram sockets, and the moments the daemon sends it."""

from __future__ import annotations

import os
import socket
import time

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from gatewayd.daemon import systemd


@pytest.fixture
def abstract_socket():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"gatewayd-unit-{os.getpid()}-{id(sock)}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    with sock:
        yield sock, "@" + name


def test_notify_reaches_an_abstract_socket(abstract_socket):
    sock, address = abstract_socket
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": address})
    assert sock.recv(100) == b"READY=1"


def test_notify_reaches_a_path_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(100) == b"STOPPING=1"


def test_without_notify_socket_nothing_is_sent():
    assert not systemd.notify("READY=1", {})


def test_a_socket_nobody_listens_on_is_logged_not_raised(tmp_path):
    assert not systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_reloading_carries_the_monotonic_clock_in_microseconds():
    lines = dict(line.split("=") for line in systemd.reloading().splitlines())
    assert lines["RELOADING"] == "1"
    assert abs(int(lines["MONOTONIC_USEC"]) - time.monotonic_ns() // 1000) < 10_000_000


class Listener:
    """A stand-in for StreamServerEndpointService, whose listen() has not finished yet."""

    def __init__(self) -> None:
        self._waitingForPort: Deferred[object] = Deferred()


def test_ready_waits_for_every_listener_and_stopping_comes_before_shutdown():
    reactor = MemoryReactorClock()
    sent: list[str] = []
    listeners = [Listener(), Listener()]
    systemd.Notifier(listeners, reactor, sent.append).startService()  # type: ignore[arg-type]
    listeners[0]._waitingForPort.callback("port")
    assert sent == []
    listeners[1]._waitingForPort.callback("port")
    assert sent == ["READY=1"]
    for trigger, args, kwargs in reactor.triggers["before"]["shutdown"]:
        trigger(*args, **kwargs)
    assert sent == ["READY=1", "STOPPING=1"]


def test_a_listener_that_fails_means_no_ready():
    reactor = MemoryReactorClock()
    sent: list[str] = []
    listener = Listener()
    systemd.Notifier([listener], reactor, sent.append).startService()  # type: ignore[list-item]
    listener._waitingForPort.errback(OSError("address in use"))
    listener._waitingForPort.addErrback(lambda _: None)
    assert sent == []
