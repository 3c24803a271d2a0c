"""Real processes for end-to-end tests: the strict fake upstream and ``twistd gatewayd``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gatewayd.demo import Daemon, FakeVertex, wait_for

__all__ = ["Daemon", "FakeVertex", "wait_for", "config_dir", "read_records"]

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
