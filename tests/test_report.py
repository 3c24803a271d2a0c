"""python -m gatewayd.report: sums, percentiles, groupings, --since, rotated .gz files, bounded memory."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gatewayd import report

T0 = int(datetime(2026, 7, 1, tzinfo=timezone.utc).timestamp() * 1000)


def record(consumer: str | None, model: str, status: int = 200, latency: int = 100, started: int = T0,
           prompt: int = 10, completion: int = 5, cached: int = 0, reasoning: int = 0, cost: float = 0.001,
           route: str = "claude") -> dict:
    made = {"started_at": started, "response": {"status": status}, "latencies": {"request": latency},
            "route": {"name": route}}
    if consumer is not None:
        made["consumer"] = {"id": f"id-{consumer}", "username": consumer}
    if status < 400:
        made["ai"] = {"proxy": {
            "meta": {"request_model": model},
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "cost": cost, "prompt_tokens_details": {"cached_tokens": cached} if cached else {},
                      "completion_tokens_details": {"reasoning_tokens": reasoning} if reasoning else {}}}}
    return made


def write(path: Path, records: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt") as out:
            out.write(text)
    else:
        path.write_text(text)
    return path


def test_sums_percentiles_and_error_rate_per_consumer(tmp_path: Path) -> None:
    alice = [record("alice", "claude-sonnet", latency=ms, cached=2, reasoning=1) for ms in range(10, 210, 10)]
    bob = [record("bob", "claude-haiku", cost=0.5), record("bob", "claude-haiku", status=429)]
    log = write(tmp_path / "claude.json", alice + bob + [record(None, "x", status=401)])
    made = report.build([str(log)])
    a = made.groups["alice"]
    assert (a.requests, a.prompt_tokens, a.completion_tokens, a.cached_tokens, a.reasoning_tokens) == (20, 200, 100, 40, 20)
    assert a.cost == pytest.approx(0.02)
    assert (a.percentile(0.5), a.percentile(0.95)) == (100, 190)  # nearest rank of 10..200
    assert made.groups["bob"].error_rate == 0.5
    assert made.groups[report.ANONYMOUS].errors == 1
    table = report.text_table(made).splitlines()
    assert table[0].split()[:2] == ["consumer", "requests"]
    assert table[2].startswith("bob")  # the biggest spender first
    assert table[-1].split()[:2] == ["TOTAL", "23"]


def test_by_model_and_by_route(tmp_path: Path) -> None:
    log = write(tmp_path / "claude.json", [record("a", "m1"), record("b", "m1"), record("a", "m2", route="other")])
    assert {k: g.requests for k, g in report.build([str(log)], by="model").groups.items()} == {"m1": 2, "m2": 1}
    assert {k: g.requests for k, g in report.build([str(log)], by="route").groups.items()} == {"claude": 2, "other": 1}


def test_rotated_gz_files_and_since(tmp_path: Path) -> None:
    old = write(tmp_path / "claude.json.1.gz", [record("a", "m", started=T0 - 3_600_000)], gz=True)
    new = write(tmp_path / "claude.json", [record("a", "m", started=T0 + 1000)])
    assert report.build([str(old), str(new)]).total.requests == 2
    since = report.parse_since("2026-07-01T00:00:00")
    assert report.build([str(old), str(new)], since_ms=since).total.requests == 1
    now = datetime.fromtimestamp((T0 + 60_000) / 1000, timezone.utc)
    assert report.parse_since("2m", now) == T0 - 60_000
    assert report.parse_since("1d", now) == T0 + 60_000 - 86_400_000


def test_a_line_that_is_not_a_record_is_skipped_and_counted(tmp_path: Path, capsys) -> None:
    log = tmp_path / "claude.json"
    log.write_text(json.dumps(record("a", "m")) + "\n{half a line\n")
    assert report.main([str(log)]) == 0
    captured = capsys.readouterr()
    assert "TOTAL" in captured.out and "1 lines were not records" in captured.err


def test_the_timeline_stays_bounded(tmp_path: Path) -> None:
    timeline = report.Timeline()
    for minute in range(10 * report.MAX_BUCKETS):
        timeline.add(T0 + minute * 60_000, "a", 1.0, 10)
    assert len(timeline.points) <= report.MAX_BUCKETS and timeline.step > 60
    assert sum(p[0] for p in timeline.points.values()) == 10 * report.MAX_BUCKETS  # nothing lost


def test_the_log_is_read_streamingly(tmp_path: Path) -> None:
    """A 30 MB log is summed with a few MB of memory: memory follows groups, not bytes."""
    log = tmp_path / "big.json"
    line = json.dumps({**record("alice", "m"), "padding": "x" * 3000}) + "\n"
    with log.open("w") as out:
        for _ in range(10_000):
            out.write(line)
    assert log.stat().st_size > 30_000_000
    tracemalloc.start()
    try:
        made = report.build([str(log)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert made.total.requests == 10_000
    assert peak < 3_000_000, peak
