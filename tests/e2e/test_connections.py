"""A burst of connects against the real daemon: the listen backlog and the open-files limit."""

from __future__ import annotations

import resource
import selectors
import socket
import time

import pytest

from tests.e2e.harness import Daemon, config_dir, file_log_override

CLIENTS = 300
REQUEST = b"GET /nothing HTTP/1.1\r\nHost: gatewayd\r\nConnection: close\r\n\r\n"


def burst(port: int, count: int, timeout: float = 20.0) -> tuple[list[float], list[bytes]]:
    """Open ``count`` connections at once, then one request on each: connect times and answers."""
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE, bytearray())
    connected: list[float] = []
    answers: list[bytes] = []
    deadline = started + timeout
    while selector.get_map() and time.monotonic() < deadline:
        for key, events in selector.select(timeout=1):
            sock, data = key.fileobj, key.data
            if events & selectors.EVENT_WRITE:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                connected.append(time.monotonic() - started)
                sock.sendall(REQUEST)
                selector.modify(sock, selectors.EVENT_READ, data)
                continue
            chunk = sock.recv(65536)
            if chunk:
                data.extend(chunk)
                continue
            answers.append(bytes(data))
            selector.unregister(sock)
            sock.close()
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    return connected, answers


def test_300_simultaneous_connects_are_answered_without_a_syn_retry_under_a_soft_limit_of_256(fake, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * CLIENTS + 100:
        pytest.skip(f"the hard open-files limit ({hard}) is too low for {CLIENTS} clients and the daemon")
    # The daemon inherits a soft limit 300 clients would exhaust; it raises it to the hard one.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        config = config_dir(tmp_path, file_log_override(tmp_path / "claude.json"))
        daemon = Daemon(config, fake.seed_environment(), tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        connected, answers = burst(daemon.port, CLIENTS)
        assert len(answers) == CLIENTS
        assert all(answer.startswith(b"HTTP/1.1 404 ") for answer in answers)
        # A full accept queue drops the handshake, and the client sends its SYN again after 1 s.
        assert max(connected) < 0.9, f"slowest connect: {max(connected):.2f} s"
        assert f"Open files limit raised from 256 to {hard}" in daemon.log()
    finally:
        daemon.stop()
