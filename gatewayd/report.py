"""Who spent what: a usage report read off gatewayd's file-log (Kong's records).

``python -m gatewayd.report /var/log/gatewayd/claude.json [more files, .gz too]
[--since 2026-07-01|24h|7d] [--by consumer|model|route] [--html report.html]``

Records are read one line at a time, so memory grows with the number of
groups and requests kept per group (4 bytes of latency each, for exact
percentiles), never with the size of the log.  Rotated ``.gz`` files are read
as they are.  Numbers are those of the records: requests, tokens from
``ai.proxy.usage`` (Kong's names: prompt, completion, cached, reasoning), cost,
latency (``latencies.request``) and the share of answers with a status of 400
or more.  The HTML page is one file, with plotly.js inlined from the installed
``plotly`` package (the ``report`` extra), charting cost and tokens over time per consumer.
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import math
import re
import sys
from array import array
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

from attrs import define, field

GROUPINGS = ("consumer", "model", "route")
#: Time steps of the chart's buckets, in seconds; a finer one is given up for the next
#: once the chart would have more than MAX_BUCKETS points, so its memory is bounded too.
STEPS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 2000
#: Points along the chart's time axis, at most (a readable line, a bar one can see).
CHART_POINTS = 120
ANONYMOUS = "(anonymous)"


@define
class Group:
    """The sums of one consumer, model or route."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0
    latencies: array = field(factory=lambda: array("l"))

    def add(self, record: dict[str, Any]) -> None:
        self.requests += 1
        if (record.get("response") or {}).get("status", 0) >= 400:
            self.errors += 1
        usage = _usage(record)
        self.prompt_tokens += usage.get("prompt_tokens") or 0
        self.completion_tokens += usage.get("completion_tokens") or 0
        self.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        self.reasoning_tokens += (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        self.cost += usage.get("cost") or 0
        latency = (record.get("latencies") or {}).get("request")
        if isinstance(latency, (int, float)):
            self.latencies.append(round(latency))

    def percentile(self, share: float) -> int | None:
        """The nearest-rank percentile of the request latencies (ms)."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(1, math.ceil(len(ordered) * share)) - 1]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@define
class Timeline:
    """Cost and tokens per consumer per time bucket, coarsened as needed to stay small."""

    step: int = STEPS[0]
    points: dict[tuple[int, str], list[float]] = field(factory=dict)

    def add(self, started_ms: int, consumer: str, cost: float, tokens: int) -> None:
        bucket = started_ms // 1000 // self.step * self.step
        point = self.points.setdefault((bucket, consumer), [0.0, 0])
        point[0] += cost
        point[1] += tokens
        if len(self.points) > MAX_BUCKETS and self.step != STEPS[-1]:
            self._coarsen()

    def _coarsen(self) -> None:
        self.step = STEPS[STEPS.index(self.step) + 1]
        merged: dict[tuple[int, str], list[float]] = {}
        for (bucket, consumer), (cost, tokens) in self.points.items():
            point = merged.setdefault((bucket // self.step * self.step, consumer), [0.0, 0])
            point[0] += cost
            point[1] += tokens
        self.points = merged

    def series(self, max_points: int = CHART_POINTS) -> dict[str, list[tuple[int, float, float]]]:
        """Per consumer: (bucket start, cost, tokens), in time order, in steps coarse enough
        for at most ``max_points`` points across the chart."""
        while len({bucket for bucket, _ in self.points}) > max_points and self.step != STEPS[-1]:
            self._coarsen()
        result: dict[str, list[tuple[int, float, float]]] = {}
        for (bucket, consumer), (cost, tokens) in sorted(self.points.items()):
            result.setdefault(consumer, []).append((bucket, cost, tokens))
        return result


@define
class Report:
    by: str
    groups: dict[str, Group] = field(factory=dict)
    total: Group = field(factory=Group)
    timeline: Timeline = field(factory=Timeline)
    skipped: int = 0

    def add(self, record: dict[str, Any]) -> None:
        key = group_key(record, self.by)
        self.groups.setdefault(key, Group()).add(record)
        self.total.add(record)
        usage = _usage(record)
        started = record.get("started_at")
        if isinstance(started, (int, float)):
            self.timeline.add(int(started), consumer_name(record), usage.get("cost") or 0,
                              usage.get("total_tokens") or 0)


def _usage(record: dict[str, Any]) -> dict[str, Any]:
    return ((record.get("ai") or {}).get("proxy") or {}).get("usage") or {}


def consumer_name(record: dict[str, Any]) -> str:
    """Who: the consumer's username, else its custom_id (as Kong's metrics label it)."""
    consumer = record.get("consumer") or {}
    return consumer.get("username") or consumer.get("custom_id") or ANONYMOUS


def group_key(record: dict[str, Any], by: str) -> str:
    if by == "consumer":
        return consumer_name(record)
    if by == "model":
        meta = ((record.get("ai") or {}).get("proxy") or {}).get("meta") or {}
        return meta.get("request_model") or "(none)"
    route = record.get("route") or {}
    return route.get("name") or route.get("id") or "(no route)"


def open_log(path: str) -> IO[str]:
    """A log file for reading line by line; a gzip file (a rotated one) by its magic bytes."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def records(paths: Iterable[str], since_ms: int | None, report: Report | None = None) -> Iterator[dict[str, Any]]:
    """Each JSON record of ``paths`` started at or after ``since_ms``; a line that is not a
    record is counted in ``report.skipped``."""
    for path in paths:
        with open_log(path) as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    if line.strip() and report is not None:
                        report.skipped += 1
                    continue
                if not isinstance(record, dict):
                    continue
                if since_ms is not None and (record.get("started_at") or 0) < since_ms:
                    continue
                yield record


def parse_since(text: str, now: datetime | None = None) -> int:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or an age such as
    ``90m``, ``24h``, ``7d``; milliseconds since the epoch."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        moment = (now or datetime.now(timezone.utc)) - timedelta(**{unit: int(match.group(1))})
    else:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def build(paths: Sequence[str], by: str = "consumer", since_ms: int | None = None) -> Report:
    report = Report(by)
    for record in records(paths, since_ms, report):
        report.add(record)
    return report


COLUMNS = ("requests", "tokens in", "tokens out", "cached", "reasoning", "cost", "p50 ms", "p95 ms", "errors")


def rows(report: Report) -> list[tuple[str, ...]]:
    """The table: one row per group, biggest spender first, and the total."""
    ordered = sorted(report.groups.items(), key=lambda item: (-item[1].cost, -item[1].requests, item[0]))
    return [(name, *_cells(group)) for name, group in ordered] + [("TOTAL", *_cells(report.total))]


def _cells(group: Group) -> tuple[str, ...]:
    p50, p95 = group.percentile(0.5), group.percentile(0.95)
    return (str(group.requests), str(group.prompt_tokens), str(group.completion_tokens),
            str(group.cached_tokens), str(group.reasoning_tokens), f"{group.cost:.6f}",
            "-" if p50 is None else str(p50), "-" if p95 is None else str(p95),
            f"{100 * group.error_rate:.1f}%")


def text_table(report: Report) -> str:
    header = (report.by, *COLUMNS)
    table = [header, *rows(report)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for index, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if index == 0 or index == len(table) - 2:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def html_page(report: Report, title: str) -> str:
    """One self-contained page: the table, and cost and tokens over time per consumer."""
    from plotly import graph_objects as go
    from plotly.colors import qualitative
    from plotly.offline import get_plotlyjs
    from plotly.subplots import make_subplots

    palette = qualitative.Plotly
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("Cost per consumer", "Tokens per consumer"))
    for index, (consumer, points) in enumerate(sorted(report.timeline.series().items())):
        color = palette[index % len(palette)]
        times = [datetime.fromtimestamp(bucket, timezone.utc).isoformat() for bucket, _, _ in points]
        figure.add_trace(go.Scatter(x=times, y=[cost for _, cost, _ in points], name=consumer,
                                    legendgroup=consumer, mode="lines+markers", line={"color": color}),
                         row=1, col=1)
        figure.add_trace(go.Bar(x=times, y=[tokens for _, _, tokens in points], name=consumer,
                                legendgroup=consumer, showlegend=False, marker={"color": color}), row=2, col=1)
    figure.update_layout(barmode="stack", height=640, margin={"l": 60, "r": 20, "t": 40, "b": 40})
    chart = figure.to_html(full_html=False, include_plotlyjs=False, div_id="usage-chart")
    head = "".join(f"<th>{html.escape(name)}</th>" for name in (report.by, *COLUMNS))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows(report))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
tr:last-child{{font-weight:bold}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1>
<table id="usage-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{chart}
</body></html>
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatewayd.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", help="file-log files (rotated .gz ones too), oldest first")
    parser.add_argument("--since", help="only records started since: an ISO date or time, or 90m, 24h, 7d")
    parser.add_argument("--by", choices=GROUPINGS, default="consumer", help="one row per (default: consumer)")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained page with a chart")
    options = parser.parse_args(argv)
    try:
        since = parse_since(options.since) if options.since else None
    except ValueError:
        parser.error(f"--since: not a date, a time or an age: {options.since!r}")
    try:
        report = build(options.logs, options.by, since)
    except OSError as error:
        print(f"gatewayd.report: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(text_table(report))
    if report.skipped:
        print(f"({report.skipped} lines were not records and were skipped)", file=sys.stderr)
    if options.html:
        Path(options.html).write_text(html_page(report, "gatewayd usage"), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
