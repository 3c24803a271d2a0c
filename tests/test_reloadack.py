"""``python -m gatewayd.daemon.reloadack``: SIGHUP, then wait for the daemon's answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from gatewayd.daemon import reloadack

#: A stand-in daemon: on SIGHUP it records an outcome (a stale one first, then its own).
DAEMON = textwrap.dedent("""
    import signal, sys, time
    from gatewayd.daemon import reloadack
    directory, problem = sys.argv[1], sys.argv[2] or None
    def reload(signum, frame):
        reloadack.record(directory, 0, "a reload from before the signal")
        time.sleep(0.2)
        reloadack.record(directory, reloadack.monotonic_usec(), problem)
    signal.signal(signal.SIGHUP, reload)
    print("ready", flush=True)
    time.sleep(30)
""")


@pytest.fixture
def daemon(tmp_path):
    started = []

    def start(problem: str = ""):
        process = subprocess.Popen([sys.executable, "-c", DAEMON, str(tmp_path), problem], stdout=subprocess.PIPE)
        assert process.stdout.readline() == b"ready\n"
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_it_returns_the_outcome_of_a_reload_begun_after_its_signal(tmp_path, daemon):
    process = daemon()
    assert reloadack.reload(process.pid, str(tmp_path), timeout=10) is None
    assert json.loads((tmp_path / reloadack.FILE).read_text())["pid"] == process.pid


def test_a_reload_that_failed_fails_with_the_problem(tmp_path, daemon, capsys):
    process = daemon("/etc/gatewayd/85-x.yaml: routes[0] (r): pathz: unknown field")
    status = reloadack.main([str(process.pid)], {"RUNTIME_DIRECTORY": str(tmp_path)})
    assert status == 1
    assert capsys.readouterr().err == (
        "gatewayd: reload failed, still serving the previous configuration: "
        "/etc/gatewayd/85-x.yaml: routes[0] (r): pathz: unknown field\n"
    )


def test_a_daemon_that_never_answers_fails_after_the_timeout(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); print(1, flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout.readline() == b"1\n"
        with pytest.raises(reloadack.NoAnswer, match="did not finish the reload within 0.3 s"):
            reloadack.reload(process.pid, str(tmp_path), timeout=0.3)
    finally:
        process.kill()
        process.wait()


def test_without_a_runtime_directory_it_says_what_the_unit_lacks(capsys):
    assert reloadack.main([str(os.getpid())], {}) == 1
    assert "RuntimeDirectory=" in capsys.readouterr().err
