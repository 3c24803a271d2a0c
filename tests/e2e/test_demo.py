"""The README's first command ends in ``python -m gatewayd.demo``: it must work as written,
and stop everything it started however it is stopped."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import SAMPLE_CONFIG, wait_for

DEMO = [sys.executable, "-m", "gatewayd.demo", "--config", str(SAMPLE_CONFIG), "--listen", "tcp:0:interface=127.0.0.1"]


def test_demo_answers_the_seed_question_and_shows_its_record(tmp_path):
    done = subprocess.run([*DEMO, "--once"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Anna Komnene" in done.stdout
    assert '"tried_targets"' in done.stdout and '"request_mode": "oneshot"' in done.stdout


def gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped by whoever adopted it counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; children die with a killed demo on Linux only")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_demo_stops_what_it_started(tmp_path, signum):
    output = tmp_path / "demo.out"
    with open(output, "wb") as sink:
        # A session of its own: the signal reaches the demo alone, as `kill PID` does.
        demo = subprocess.Popen(DEMO, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        text = wait_for(lambda: "Ready." in (t := output.read_text()) and t, timeout=60, what="the demo to be ready")
        fake_pid, daemon_pid = (int(n) for n in re.findall(r"\(pid (\d+)", text))
        port = int(re.search(r"gatewayd on http://127\.0\.0\.1:(\d+)", text).group(1))
        assert not port_free(port)
        started = time.monotonic()
        demo.send_signal(signum)
        demo.wait(30)
        wait_for(lambda: gone(fake_pid) and gone(daemon_pid), timeout=20, what="the fake and twistd to exit")
        assert time.monotonic() - started < 20
        wait_for(lambda: port_free(port), timeout=5, what=f"port {port} to be free")
        if signum != signal.SIGKILL:
            assert demo.returncode == 0, output.read_text()
            assert f"{signal.Signals(signum).name}: stopping" in output.read_text()
    finally:
        for pid in (demo.pid,):
            if demo.poll() is None:
                os.kill(pid, signal.SIGKILL)
                demo.wait()
