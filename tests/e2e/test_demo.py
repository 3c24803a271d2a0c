"""The README's first command ends in ``python -m gatewayd.demo``: it must work as written."""

import subprocess
import sys

from tests.e2e.harness import SAMPLE_CONFIG


def test_demo_answers_the_seed_question_and_shows_its_record(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gatewayd.demo", "--once", "--config", str(SAMPLE_CONFIG), "--listen", "tcp:0:interface=127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Anna Komnene" in done.stdout
    assert '"tried_targets"' in done.stdout and '"request_mode": "oneshot"' in done.stdout
