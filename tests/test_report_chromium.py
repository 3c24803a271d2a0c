"""The report's HTML page opened in a real headless Chromium (Debian's ``chromium``): the
chart must have rendered, with one trace per consumer and one point per time bucket."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gatewayd import report

CHROMIUM = shutil.which("chromium")
#: The flags this machine's closed network needs (without them Chromium waits on the network).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync")
T0 = int(datetime(2026, 7, 1, tzinfo=timezone.utc).timestamp() * 1000)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true", reason="Debian's chromium is not installed")


def chromium(tmp_path: Path, *arguments: str) -> str:
    assert CHROMIUM is not None, "CI needs Debian's chromium (.ci/run installs it)"
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1000",
                           "--virtual-time-budget=10000", *arguments],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_chart_renders_with_the_data(tmp_path: Path) -> None:
    log = tmp_path / "claude.json"
    consumers = ("alice", "bob", "carol")
    with log.open("w") as out:
        for hour in range(12):
            for index, consumer in enumerate(consumers[: 2 + hour % 2]):  # carol only on odd hours
                usage = {"prompt_tokens": 100 * (index + 1), "completion_tokens": 10 * hour,
                         "total_tokens": 100 * (index + 1) + 10 * hour, "cost": 0.01 * (index + 1)}
                out.write(json.dumps({"started_at": T0 + hour * 3_600_000, "response": {"status": 200},
                                      "latencies": {"request": 500}, "consumer": {"username": consumer},
                                      "ai": {"proxy": {"meta": {"request_model": "m"}, "usage": usage}}}) + "\n")
    page = tmp_path / "report.html"
    assert report.main([str(log), "--html", str(page)]) == 0
    assert "<script src=" not in page.read_text()  # self-contained: nothing fetched
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    chart = dom[dom.index('<div id="usage-chart"'):]
    assert "js-plotly-plot" in chart.split(">", 1)[0]  # plotly drew into it
    width, height = map(int, re.search(r'<svg class="main-svg"[^>]*width="(\d+)" height="(\d+)"', chart).groups())
    assert width > 300 and height >= 600
    assert len(re.findall(r'class="trace scatter', chart)) == len(consumers)
    assert len(re.findall(r'class="trace bars', chart)) == len(consumers)
    # One cost marker and one token bar per consumer per hour it spent in: 12 + 12 + 6.
    assert len(re.findall(r'<path class="point"', chart)) == 12 + 12 + 6
    bars = re.findall(r'<g class="point"><path d="M([\d.]+),([\d.]+)V([\d.]+)', chart)
    assert len(bars) == 12 + 12 + 6
    assert all(float(top) < float(bottom) for _, bottom, top in bars)  # every bar has a height
    assert ">carol<" in chart  # the legend names the consumers


def test_a_screenshot_of_the_page(tmp_path: Path) -> None:
    """What the README shows (docs/report.png is made the same way)."""
    log = tmp_path / "claude.json"
    log.write_text(json.dumps({"started_at": T0, "response": {"status": 200}, "latencies": {"request": 1},
                               "consumer": {"username": "alice"}}) + "\n")
    page = tmp_path / "report.html"
    assert report.main([str(log), "--html", str(page)]) == 0
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
