"""Real processes for end-to-end tests: the strict fake upstream and ``twistd gatewayd``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from gatewayd.demo import Daemon, FakeVertex, wait_for

__all__ = ["Daemon", "FakeVertex", "wait_for", "config_dir", "read_records", "settled_records"]

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = REPO / "etc" / "gatewayd"


def config_dir(workdir: Path, *extra: tuple[str, str]) -> Path:
    """The sample configuration plus extra files applied after it, like more ``deck apply`` runs."""
    target = workdir / "config"
    shutil.copytree(SAMPLE_CONFIG, target)
    for name, text in extra:
        (target / name).write_text(text)
    return target


def file_log_override(path: Path) -> tuple[str, str]:
    return (
        "90-test-file-log.yaml",
        f'_format_version: "3.0"\nplugins:\n  - name: file-log\n    config:\n      path: "{path}"\n',
    )


def model_override(model: str) -> tuple[str, str]:
    """The seed's ai-proxy-advanced snippet with another model."""
    text = (SAMPLE_CONFIG / "20-ai-proxy-advanced.yaml").read_text()
    return ("80-model.yaml", text.replace("name: gemini-2.0-flash", f"name: {model}"))


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def settled_records(path: Path, quiet: float = 0.1, timeout: float = 10.0) -> list[dict]:
    """The records once none has come for ``quiet`` seconds.

    A record is written after its answer has gone out (Kong's log phase), a reactor
    turn or two after the client has the answer: a count taken right after a request
    could miss its record, and a later slice would then start on it.
    """
    deadline = time.monotonic() + timeout
    records = read_records(path)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        again = read_records(path)
        if len(again) == len(records):
            return again
        records = again
    raise AssertionError(f"records in {path} kept coming for {timeout} s")
