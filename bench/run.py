"""``python bench/run.py``: what gatewayd adds, measured against direct calls to the same fake
and against the minimal Twisted forwarder.

One run starts the lean fake upstream (bench/fakeupstream.py), ``twistd gatewayd``
on the sample configuration (translation, file-log and log_statistics on), the
minimal forwarder (bench/forwarder.py: JSON in and out, Agent on a persistent
pool, streams passed through, nothing else), and drives the three with ``wrk``
(non-streaming) and an asyncio client (streams, in a burst and paced).  The
gateway and the forwarder are pinned to CPU 0, the fake and the load generators
to CPU 1.  The forwarder is the floor: what gatewayd costs beyond it is its own.
It prints a markdown table; ``--long`` adds the idle-streams memory
measurements, ``--litellm`` the LiteLLM comparison.  bench/hotspots.py shows
where gatewayd's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

from gatewayd.demo import file_text, source_environment, wait_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
SEED = ROOT / "tests" / "fixtures" / "claude_code" / "seed_question.json"
GATEWAY_CPU, LOAD_CPU = "0", "1"
SMALL_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Say hello."}],
}
GEMINI_REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "Say hello."}]}],
    "generationConfig": {"maxOutputTokens": 1024},
}
MODEL_PATH = "/v1/projects/bench-project/locations/us-central1/publishers/google/models/gemini-2.0-flash"
STREAM_PATH = MODEL_PATH + ":streamGenerateContent?alt=sse"
#: Paced streams: this many chunks, one every PACE seconds, like a model writing.
PACE, PACED_CHUNKS, PACED_STREAMS = 0.01, 50, 640
#: What marks the first text in a stream: Gemini's SSE (the fake writes compact JSON), Anthropic's.
GEMINI_TEXT, ANTHROPIC_TEXT = b'"text":"', b"text_delta"

T = TypeVar("T")

#: measurement, direct to the fake, minimal forwarder, gatewayd, gatewayd / forwarder, target
Row = tuple[str, str, str, str, str, str]


def row(measurement: str, gatewayd: str, target: str = "", *, direct: str = "", forwarder: str = "",
        ratio: str = "") -> Row:
    return (measurement, direct, forwarder, gatewayd, ratio, target)


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") and os.cpu_count() > 1 else argv


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (workers), in MB."""
    total = 0
    for each in _pids(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid] + ([int(p) for p in children.read_text().split()] if children.exists() else [])


def cpu_seconds(pid: int) -> list[float]:
    """User + system CPU seconds so far of ``pid`` and of each of its children (workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    times = []
    for each in _pids(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        times.append((int(fields[11]) + int(fields[12])) / tick)  # utime, stime
    return times


class Process:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.log_path = log
        self.output = open(log, "wb")
        self.process = subprocess.Popen(argv, stdout=self.output, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()


class Fake(Process):
    def __init__(self, workdir: Path, name: str, *args: str):
        port_file = workdir / f"{name}.port"
        super().__init__(
            pinned(LOAD_CPU, [PYTHON, str(HERE / "fakeupstream.py"), "--port-file", str(port_file), *args]),
            workdir / f"{name}.log",
        )
        self.port = int(wait_for(lambda: file_text(port_file), what="the fake upstream"))
        self.url = f"http://127.0.0.1:{self.port}"


def gateway_config(workdir: Path, fake: Fake, name: str) -> tuple[Path, dict[str, str]]:
    """The sample configuration, its file-log in ``workdir``, its env pointing at ``fake``."""
    from gatewayd.fakevertex.auth import ServiceAccount

    config = workdir / f"{name}-config"
    config.mkdir()
    for path in sorted((ROOT / "etc" / "gatewayd").glob("*.yaml")):
        shutil.copy(path, config / path.name)
    (config / "30-file-log.yaml").write_text(
        '_format_version: "3.0"\nplugins:\n  - name: file-log\n    config:\n'
        f'      path: "{workdir / (name + "-file-log.json")}"\n'
    )
    account = ServiceAccount.generate(fake.url + "/token", "bench-project")
    env = source_environment()  # twistd runs this tree's gatewayd, not the venv's installed copy
    env.update(
        DECK_GEMINI_API_KEY=json.dumps(account.info()),
        DECK_GEMINI_API_ENDPOINT=fake.url,
        DECK_GCP_PROJECT_ID="bench-project",
        DECK_GEMINI_LOCATION_ID="us-central1",
    )
    return config, env


class Gateway(Process):
    def __init__(self, workdir: Path, fake: Fake, name: str, *, cpu: str | None = GATEWAY_CPU, workers: int = 1,
                 twistd_args: tuple[str, ...] = ()):
        config, env = gateway_config(workdir, fake, name)
        self.file_log = workdir / f"{name}-file-log.json"
        argv = [str(BIN / "twistd"), "-n", "--pidfile=", *twistd_args, "gatewayd", "--config", str(config)]
        argv += ["--listen", "tcp:0:interface=127.0.0.1"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        super().__init__(pinned(cpu, argv) if cpu else argv, workdir / f"{name}-twistd.log", env, workdir)
        self.port = int(wait_for(self._port, what=f"twistd to listen (log: {self.log_path})"))
        self.url = f"http://127.0.0.1:{self.port}"
        if workers > 1:
            wait_for(lambda: len(self._children()) >= workers - 1, what="the workers")
            time.sleep(1.0)

    def _children(self) -> list[str]:
        return Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()

    def _port(self) -> str | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"twistd exited {self.process.returncode}:\n{self.log_path.read_text()}")
        found = re.search(r"Site starting on (\d+)", self.log_path.read_text(errors="replace"))
        return found.group(1) if found else None


class Forwarder(Process):
    """bench/forwarder.py on ``fake``, pinned like the gateway."""

    def __init__(self, workdir: Path, fake: Fake, name: str = "forwarder", python_args: tuple[str, ...] = ()):
        self.port_file = workdir / f"{name}.port"
        argv = [PYTHON, *python_args, str(HERE / "forwarder.py"), "--upstream", fake.url, "--port-file", str(self.port_file)]
        super().__init__(pinned(GATEWAY_CPU, argv), workdir / f"{name}.log")
        self.port = int(wait_for(self._port, what=f"the forwarder to listen (log: {self.log_path})"))
        self.url = f"http://127.0.0.1:{self.port}"

    def _port(self) -> str | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the forwarder exited {self.process.returncode}:\n{self.log_path.read_text()}")
        return file_text(self.port_file)


def pace(fake: Fake, seconds: float, chunks: int) -> None:
    """Make the fake's streams from now on paced (``seconds`` apart) or a burst (0)."""
    import urllib.request

    body = json.dumps({"seconds": seconds, "chunks": chunks}).encode()
    urllib.request.urlopen(urllib.request.Request(fake.url + "/pace", body, method="POST"), timeout=10).read()


# --- load generators -------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "bench"
wrk.body = %s
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format('BENCH {"requests": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, "errors": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    errors + summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(workdir: Path, url: str, body: dict, connections: int, seconds: float, threads: int = 1) -> dict:
    script = workdir / f"wrk-{abs(hash(json.dumps(body)))}.lua"
    script.write_text(WRK_SCRIPT % _lua_string(json.dumps(body)))
    argv = pinned(LOAD_CPU, ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "-s", str(script), url])
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    found = re.search(r"^BENCH (.*)$", output, re.M)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    result = json.loads(found.group(1))
    result["rps"] = result["requests"] / result["seconds"]
    result["wrk_cpu"] = wrk_cpu
    if result["errors"] or result["socket_errors"]:
        print(f"  warning: {url}: {result['errors']} bad statuses, {result['socket_errors']} socket errors", file=sys.stderr)
    return result


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: A paced stream's first text: the microseconds the fake waited before sending it.
FAKE_WAIT = re.compile(rb'"text": ?"w(\d{14}) ')

Stream = tuple[float, float, float, int, "float | None"]


async def _stream_once(host: str, port: int, path: str, body: bytes, headers: str, marker: bytes) -> Stream:
    """One stream: seconds to its first byte, to the first text (``marker``) and to its end; its
    size; and, for a paced stream, the seconds the fake itself waited before its first text."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    first = await reader.read(1)
    ttfb = time.perf_counter() - started
    ttft = waited = None
    size = len(first)
    seen = head = first
    while chunk := await reader.read(65536):
        size += len(chunk)
        seen = seen[-len(marker):] + chunk
        if ttft is None:
            head += chunk
            if marker in seen:
                ttft = time.perf_counter() - started
        if waited is None and ttft is not None and (found := FAKE_WAIT.search(head)):
            waited = int(found.group(1)) / 1e6
        if seen.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of a chunked body
            break
    total = time.perf_counter() - started
    writer.close()
    if ttft is None:
        raise RuntimeError(f"no {marker!r} in a stream from {host}:{port}{path}")
    return ttfb, ttft, total, size, waited


async def _streams(url: str, path: str, body: bytes, headers: str, marker: bytes, concurrency: int, count: int,
                   stagger: float) -> list[Stream]:
    host, port = url.removeprefix("http://").split(":")
    results: list[Stream] = []
    remaining = count

    async def client(index: int) -> None:
        nonlocal remaining
        await asyncio.sleep(stagger * index / concurrency)
        while remaining > 0:
            remaining -= 1
            results.append(await _stream_once(host, int(port), path, body, headers, marker))

    await asyncio.gather(*(client(index) for index in range(concurrency)))
    return results


def streams(url: str, path: str, body: dict, concurrency: int, count: int, anthropic: bool,
            stagger: float = 0.0) -> list[Stream]:
    """``count`` streams, ``concurrency`` at a time: each one's times to first byte, first text
    and end, and its size.  With ``stagger`` (a stream's duration) the clients start spread
    over it, so paced streams arrive evenly, not in lockstep."""
    headers = "anthropic-version: 2023-06-01\r\nx-api-key: bench\r\n" if anthropic else ""
    marker = ANTHROPIC_TEXT if anthropic else GEMINI_TEXT
    os.sched_setaffinity(0, {int(LOAD_CPU)}) if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1 else None
    results = asyncio.run(_streams(url, path, json.dumps(body).encode(), headers, marker, concurrency, count, stagger))
    os.sched_setaffinity(0, set(range(os.cpu_count()))) if hasattr(os, "sched_setaffinity") else None
    return results


def stream_figures(results: list[Stream]) -> dict:
    """Percentiles of the streams' times (all rounds' streams together)."""
    ttfb = sorted(r[0] for r in results)
    ttft = sorted(r[1] for r in results)
    total = sorted(r[2] for r in results)
    return {
        "ttfb_p50": _pct(ttfb, 50), "ttfb_p99": _pct(ttfb, 99),
        "ttft_p50": _pct(ttft, 50), "ttft_p99": _pct(ttft, 99),
        "total_p50": _pct(total, 50), "total_p99": _pct(total, 99),
        "bytes": statistics.median(r[3] for r in results),
        **_own_figures(results),
    }


def _own_figures(results: list[Stream]) -> dict:
    """Paced streams' time to first text less the fake's own wait before sending it: what the
    client, the network and any gateway between them took."""
    if not results or any(r[4] is None for r in results):
        return {}
    own = sorted(r[1] - r[4] for r in results)
    return {"own_p50": _pct(own, 50), "own_p99": _pct(own, 99)}


def paired(ours: list[float], theirs: list[float], *, as_ratio: bool = False) -> dict:
    """Ours less (or over) theirs, round by round: each pair ran within the same minute, so
    the machine's drift between minutes, which moves every column's figures by more than
    the gateways differ, cancels."""
    apart = sorted(a / b if as_ratio else a - b for a, b in zip(ours, theirs))
    even = 1 if as_ratio else 0
    return {"median": statistics.median(apart), "low": apart[0], "high": apart[-1], "rounds": len(apart),
            "below": sum(x < even for x in apart), "above": sum(x > even for x in apart)}


def first_text(runs: list[list[Stream]]) -> list[float]:
    """Each round's median first text of its paced streams, the fake's wait taken out."""
    return [statistics.median(r[1] - r[4] for r in each) for each in runs]


def in_rounds(names: list[str], rounds: int, measure: Callable[[str], T]) -> dict[str, list[T]]:
    """``measure(name)`` for every name, ``rounds`` times over, the order turned around each
    round.  The machine's speed drifts within a run (a VM's neighbours, clock frequency): one
    long run per column would tilt the comparison towards whichever ran in a fast minute;
    interleaved short rounds put every column through the same minutes."""
    results: dict[str, list[T]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            results[name].append(measure(name))
    return results


def _pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# --- translation CPU -----------------------------------------------------------------------------

def translation_cpu(repeat: int = 200) -> dict:
    """CPU of translating the captured 76 KB Claude Code request: first call and steady state."""
    from gatewayd.translate import ModelProfile, SignatureMemory, prepare

    body = json.loads(SEED.read_text())["body"]
    raw = json.dumps(body).encode()
    profile = ModelProfile("gemini-2.0-flash", max_tokens=8192)
    memory = SignatureMemory()
    started = time.process_time()
    prepare(json.loads(raw), profile, memory)
    first = time.process_time() - started
    started = time.process_time()
    for _ in range(repeat):
        prepare(json.loads(raw), profile, memory)
    steady = (time.process_time() - started) / repeat
    started = time.process_time()
    for _ in range(repeat):
        json.loads(raw)
    parse = (time.process_time() - started) / repeat
    return {"bytes": len(raw), "tools": len(body.get("tools", [])), "first_ms": first * 1000,
            "steady_ms": steady * 1000, "parse_ms": parse * 1000}


# --- memory under backpressure and idle streams (--long) -------------------------------------------

async def _slow_reader(url: str, total: int, rate: int, pid: int) -> dict:
    """Read ``total`` bytes of one stream at ``rate`` bytes/s, sampling the gateway's RSS."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=16384)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
    body = json.dumps(dict(SMALL_REQUEST, stream=True)).encode()
    writer.write(
        f"POST /anything/v1/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"anthropic-version: 2023-06-01\r\nx-api-key: bench\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    received, samples = 0, []
    started = time.monotonic()
    while received < total:
        data = await reader.read(rate // 10)
        if not data:
            break
        received += len(data)
        samples.append((received, rss_mb(pid)))
        await asyncio.sleep(max(0.0, received / rate - (time.monotonic() - started)))
    writer.close()
    after_first_mb = next((rss for at, rss in samples if at >= 1_000_000), samples[-1][1])
    return {"received_mb": received / 1e6, "seconds": time.monotonic() - started, "rss_first": samples[0][1],
            "rss_1mb": after_first_mb, "rss_max": max(rss for _, rss in samples), "rss_last": samples[-1][1]}


async def _idle_streams(url: str, count: int) -> list:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(dict(SMALL_REQUEST, stream=True)).encode()
    head = (
        f"POST /anything/v1/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"anthropic-version: 2023-06-01\r\nx-api-key: bench\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )

    async def one():
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head)
        await reader.readuntil(b"message_start")
        return writer

    writers = []
    for start in range(0, count, 100):
        writers += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return writers


def slow_reader(workdir: Path, args: argparse.Namespace) -> Row:
    """A 50 MB answer read slowly: 10 MB at 1 MB/s by default (the upstream could send
    hundreds of MB/s), all 50 MB at 100 KB/s (over 8 minutes) with ``--slow-full``."""
    total, rate = (50_000_000, 100_000) if args.slow_full else (10_000_000, 1_000_000)
    chunk = 1000
    big = Fake(workdir, "big-fake", "--chunks", str(50_000_000 // chunk), "--chunk-bytes", str(chunk))
    gateway = Gateway(workdir, big, "slow")
    try:
        wrk(workdir, gateway.url + "/anything/v1/messages", SMALL_REQUEST, 1, 1)  # warm up
        print(f"  slow reader: {total / 1e6:.0f} MB of a 50 MB answer at {rate / 1000:.0f} KB/s ...", file=sys.stderr)
        slow = asyncio.run(_slow_reader(gateway.url, total, rate, gateway.pid))
        return row(
            f"RSS, 50 MB stream read at {rate / 1000:.0f} KB/s ({slow['received_mb']:.1f} MB read in {slow['seconds']:.0f} s)",
            f"{slow['rss_first']:.1f} → {slow['rss_1mb']:.1f} at 1 MB → max {slow['rss_max']:.1f} → "
            f"{slow['rss_last']:.1f} MB at the end", "flat",
        )
    finally:
        gateway.stop()
        big.stop()


def long_measurements(workdir: Path, args: argparse.Namespace) -> list[Row]:
    rows = []
    held = Fake(workdir, "held-fake", "--chunks", "1", "--hold")
    gateway = Gateway(workdir, held, "idle")
    try:
        wrk(workdir, gateway.url + "/anything/v1/messages", SMALL_REQUEST, 1, 1)
        before = rss_mb(gateway.pid)

        async def hold() -> float:
            writers = await _idle_streams(gateway.url, args.idle_streams)
            await asyncio.sleep(1)
            after = rss_mb(gateway.pid)
            for writer in writers:
                writer.close()
            return after

        after = asyncio.run(hold())
        per = (after - before) * 1024 / args.idle_streams
        rows.append(row(f"memory per idle stream ({args.idle_streams} open)", f"{per:.0f} KB", "≤ 100 KB"))
    finally:
        gateway.stop()
        held.stop()
    return rows


def workers_comparison(workdir: Path, fake: Fake, processes: list, seconds: float, rounds: int) -> list[Row]:
    """1 vs 2 workers, unpinned, in interleaved rounds, with where the two cores' time went
    in the 2-worker runs."""
    print(f"  1 vs 2 workers, {rounds} rounds ...", file=sys.stderr)
    daemons = {}
    for workers in (1, 2):
        daemons[workers] = Gateway(workdir, fake, f"workers{workers}", cpu=None, workers=workers)
        processes.append(daemons[workers])
        wrk(workdir, daemons[workers].url + "/anything/v1/messages", SMALL_REQUEST, 64, 1)

    def measure(workers: int) -> dict:
        each = daemons[workers]
        gateway_before, fake_before = cpu_seconds(each.pid), sum(cpu_seconds(fake.pid))
        result = wrk(workdir, each.url + "/anything/v1/messages", SMALL_REQUEST, 64, seconds / rounds)
        result["gateway_cpu"] = [b - a for a, b in zip(gateway_before, cpu_seconds(each.pid))]
        result["fake_cpu"] = sum(cpu_seconds(fake.pid)) - fake_before
        return result

    runs = in_rounds([1, 2], rounds, measure)
    for each in daemons.values():
        each.stop()
    rates = {workers: statistics.median(r["rps"] for r in runs[workers]) for workers in runs}
    wall = sum(r["seconds"] for r in runs[2])
    gateway_cpu = [sum(column) for column in zip(*(r["gateway_cpu"] for r in runs[2]))]
    fake_cpu, wrk_cpu = sum(r["fake_cpu"] for r in runs[2]), sum(r["wrk_cpu"] for r in runs[2])
    per_request = sum(sum(r["gateway_cpu"]) for r in runs[1]) / sum(r["requests"] for r in runs[1])
    ceiling = (2 * wall - fake_cpu - wrk_cpu) / wall / per_request / rates[1]
    return [
        row("throughput c=64, 1 worker → 2 workers (unpinned)",
            f"{rates[1]:.0f} → {rates[2]:.0f} req/s ({rates[2] / rates[1]:.2f}x)", "≥ 1.7x"),
        row("2 workers: cores used by the workers / wrk / the fake",
            f"{' + '.join(f'{c / wall:.2f}' for c in gateway_cpu)} / {wrk_cpu / wall:.2f} / {fake_cpu / wall:.2f} "
            f"(what wrk and the fake leave allows {ceiling:.2f}x at one worker's CPU per request)"),
    ]


LITELLM_VENV = Path(tempfile.gettempdir()) / "gatewayd-bench-litellm"


def litellm(workdir: Path, seconds: float) -> list[Row]:
    """LiteLLM's proxy, Anthropic /v1/messages to Vertex AI Gemini, against its own lean fake."""
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        print(f"  installing litellm[proxy] into {LITELLM_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]", "google-auth"], check=True)
    fake = Fake(workdir, "litellm-fake")
    from gatewayd.fakevertex.auth import ServiceAccount

    key = workdir / "litellm-sa.json"
    key.write_text(json.dumps(ServiceAccount.generate(fake.url + "/token", "bench-project").info()))
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: claude-sonnet-4-5\n    litellm_params:\n"
        "      model: vertex_ai/gemini-2.0-flash\n      vertex_project: bench-project\n"
        f"      vertex_location: us-central1\n      vertex_credentials: {key}\n      api_base: {fake.url}\n"
    )
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true", LITELLM_LOG="ERROR")
    proxy = Process(pinned(GATEWAY_CPU, [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config),
                                         "--host", "127.0.0.1", "--port", str(port)]), workdir / "litellm.log", env)
    url = f"http://127.0.0.1:{port}/v1/messages"
    try:
        def up() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0
        wait_for(up, timeout=120, what=f"litellm to listen (log: {proxy.log_path})")
        wrk(workdir, url, SMALL_REQUEST, 4, 2)
        print("  litellm c=1, c=64 ...", file=sys.stderr)
        one = wrk(workdir, url, SMALL_REQUEST, 1, seconds)
        many = wrk(workdir, url, SMALL_REQUEST, 64, seconds)
        return [
            row("LiteLLM proxy on the same fake: latency p50 / p99, c=1",
                f"{ms(one['p50_us'], True)} / {ms(one['p99_us'], True)}"),
            row("LiteLLM proxy: throughput c=64, pinned to one core",
                f"{many['rps']:.0f} req/s ({many['socket_errors']} socket errors/timeouts)", "gatewayd ≥ 10x"),
            row("LiteLLM proxy: RSS after load", f"{rss_mb(proxy.pid):.1f} MB"),
        ]
    finally:
        proxy.stop()
        fake.stop()


# --- the run ---------------------------------------------------------------------------------------

def ms(seconds_or_us: float, us: bool = False) -> str:
    return f"{seconds_or_us / 1000 if us else seconds_or_us * 1000:.2f} ms"


def above(seconds: float, direct: float) -> str:
    """A time, what it adds to the direct call's and its ratio to it."""
    return f"{ms(seconds)} ({(seconds - direct) * 1000:+.2f} ms; {seconds / direct:.1f}× direct)"


def ratio(gatewayd: float, forwarder: float, what: str = "") -> str:
    """gatewayd's figure over the forwarder's (for times: of what each adds to the direct call)."""
    if forwarder <= 0:
        return "n/a (the forwarder added nothing)"
    return f"{gatewayd / forwarder:.2f}× {what}".rstrip()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="wrk's time per measurement and column, split over the rounds")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per measurement: the columns take turns, the order reversed each round")
    parser.add_argument("--long", action="store_true", help="also the idle-streams memory run")
    parser.add_argument("--slow-full", action="store_true",
                        help="the slow reader reads all 50 MB at 100 KB/s (8+ minutes) instead of 10 MB at 1 MB/s")
    parser.add_argument("--litellm", action="store_true",
                        help=f"also LiteLLM's proxy on the same fake (installed into {LITELLM_VENV} on first use)")
    parser.add_argument("--idle-streams", type=int, default=1000)
    parser.add_argument("--no-workers", action="store_true", help="skip the 1 vs 2 workers comparison")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit(
            "bench: wrk is not installed; it is the load generator (apt-get install -y wrk, "
            "or https://github.com/wg/wrk). Nothing was measured."
        )
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-bench-"))
    rows: list[Row] = []
    seconds = args.seconds
    print(f"bench: working in {workdir}", file=sys.stderr)

    cpu = translation_cpu()
    rows.append(row(
        f"translation CPU, captured Claude Code request ({cpu['bytes'] // 1000} KB, {cpu['tools']} tools)",
        f"{cpu['steady_ms']:.2f} ms (first call {cpu['first_ms']:.2f} ms; JSON parse alone {cpu['parse_ms']:.2f} ms)",
        "≤ 2 ms",
    ))
    fake = Fake(workdir, "fake")
    gateway = Gateway(workdir, fake, "gateway")
    forwarder = Forwarder(workdir, fake)
    processes = [gateway, forwarder, fake]
    # Each: where wrk posts, what, and where streams go.  Direct and the forwarder take the Gemini request.
    targets = {
        "direct": (fake.url + MODEL_PATH + ":generateContent", GEMINI_REQUEST, fake.url, STREAM_PATH),
        "forwarder": (forwarder.url + MODEL_PATH + ":generateContent", GEMINI_REQUEST, forwarder.url, STREAM_PATH),
        "gatewayd": (gateway.url + "/anything/v1/messages", SMALL_REQUEST, gateway.url, "/anything/v1/messages"),
    }
    pids = {"forwarder": forwarder.pid, "gatewayd": gateway.pid}
    try:
        rows.append(row("gateway RSS after start", f"{rss_mb(gateway.pid):.1f} MB",
                        forwarder=f"{rss_mb(forwarder.pid):.1f} MB"))
        for name in pids:
            url, body, _, _ = targets[name]
            wrk(workdir, url, body, 4, 1)
        rows.append(row("gateway RSS idle (after first requests)", f"{rss_mb(gateway.pid):.1f} MB", "≤ 60 MB",
                        forwarder=f"{rss_mb(forwarder.pid):.1f} MB"))
        names = list(targets)
        rounds, each = args.rounds, seconds / args.rounds
        print(f"  c=1 latency, {rounds} rounds ...", file=sys.stderr)
        one = in_rounds(names, rounds, lambda name: wrk(workdir, targets[name][0], targets[name][1], 1, each))
        for p, target in (("p50", "≤ +1 ms; ≤ forwarder"), ("p99", "≤ +3 ms")):
            d, f, g = (statistics.median(r[f"{p}_us"] for r in one[name]) / 1e6 for name in names)
            rows.append(row(f"non-streaming latency {p}, c=1", above(g, d), target,
                            direct=ms(d), forwarder=above(f, d), ratio=ratio(g - d, f - d, "added")))
        apart = paired([r["p50_us"] / 1000 for r in one["gatewayd"]], [r["p50_us"] / 1000 for r in one["forwarder"]])
        rows.append(row("non-streaming latency p50, c=1: gatewayd's less the forwarder's, round by round",
                        f"median {apart['median']:+.3f} ms ({apart['low']:+.3f} to {apart['high']:+.3f}); "
                        f"lower in {apart['below']} of {apart['rounds']} rounds", "≤ 0"))
        print(f"  c=64 throughput, gateway and forwarder on one core, {rounds} rounds ...", file=sys.stderr)

        def loaded(name: str) -> dict:
            url, body, _, _ = targets[name]
            before = sum(cpu_seconds(pids[name])) if name in pids else 0.0
            result = wrk(workdir, url, body, 64, each)
            if name in pids:
                result["cpu_per_request"] = (sum(cpu_seconds(pids[name])) - before) / result["requests"]
                result["busy"] = (sum(cpu_seconds(pids[name])) - before) / result["seconds"]
            return result

        many = in_rounds(names, rounds, loaded)
        rps = {name: statistics.median(r["rps"] for r in many[name]) for name in names}
        p50 = {name: statistics.median(r["p50_us"] for r in many[name]) for name in names}
        d, f, g = (rps[name] for name in names)
        rows.append(row("throughput c=64, pinned to one core",
                        f"{g:.0f} req/s ({g / d:.3f}× direct; p50 {ms(p50['gatewayd'], True)})",
                        "> 1,000 req/s; ≥ forwarder", direct=f"{d:.0f} req/s",
                        forwarder=f"{f:.0f} req/s ({f / d:.3f}× direct; p50 {ms(p50['forwarder'], True)})",
                        ratio=ratio(g, f)))
        apart = paired([r["rps"] for r in many["gatewayd"]], [r["rps"] for r in many["forwarder"]], as_ratio=True)
        rows.append(row("throughput c=64: gatewayd's over the forwarder's, round by round",
                        f"median {apart['median']:.2f}× ({apart['low']:.2f}× to {apart['high']:.2f}×); "
                        f"higher in {apart['above']} of {apart['rounds']} rounds", "≥ 1×"))
        per = {name: statistics.median(r["cpu_per_request"] for r in many[name]) for name in pids}
        busy = {name: f"{per[name] * 1000:.3f} ms ({statistics.median(r['busy'] for r in many[name]):.2f} "
                      f"of its core busy)" for name in pids}
        rows.append(row("CPU per request (c=64 run)", busy["gatewayd"], forwarder=busy["forwarder"],
                        ratio=ratio(per["gatewayd"], per["forwarder"])))

        def streamed(count: int, stagger: float = 0.0) -> Callable[[str], list]:
            """``count`` streams through ``name``, 16 at a time: one round's worth."""
            def measure(name: str) -> list:
                _, body, base, path = targets[name]
                return streams(base, path, dict(body, stream=True) if name == "gatewayd" else body, 16,
                               count, name == "gatewayd", stagger)
            return measure

        def pooled(results: dict[str, list[list]]) -> dict[str, dict]:
            return {name: stream_figures([s for each in runs for s in each]) for name, runs in results.items()}

        print(f"  streams c=16, a burst of 200 chunks each, {rounds} rounds ...", file=sys.stderr)
        burst = pooled(in_rounds(names, rounds, streamed(800 // rounds)))
        for key, label, target in (("ttfb_p50", "TTFB p50", "≤ +2 ms"), ("total_p50", "total p50", "")):
            d, f, g = (burst[name][key] for name in names)
            rows.append(row(f"stream (200 chunks in a burst) {label}, c=16", above(g, d), target, direct=ms(d),
                            forwarder=above(f, d), ratio=ratio(g - d, f - d, "added")))
        paced_rounds = 2 * rounds
        print(f"  streams c=16, paced: {PACED_CHUNKS} chunks {PACE * 1000:.0f} ms apart, {paced_rounds} rounds ...",
              file=sys.stderr)
        pace(fake, PACE, PACED_CHUNKS)
        paced_runs = in_rounds(names, paced_rounds,
                               streamed(PACED_STREAMS // paced_rounds, stagger=PACE * PACED_CHUNKS))
        pace(fake, 0.0, 200)
        paced = pooled(paced_runs)
        label = (f"paced streams ({PACED_CHUNKS} chunks {PACE * 1000:.0f} ms apart, 16 at a time, starts spread): "
                 f"time to first text less the fake's own wait")
        for key, p, target in (("own_p50", "p50", "≤ forwarder"), ("own_p99", "p99", "")):
            d, f, g = (paced[name][key] for name in names)
            raw = paced["direct"][key.replace("own", "ttft")]
            rows.append(row(f"{label}, {p}", above(g, d), target, direct=f"{ms(d)} (first text at {ms(raw)})",
                            forwarder=above(f, d), ratio=ratio(g - d, f - d, "added")))
        apart = paired(first_text(paced_runs["gatewayd"]), first_text(paced_runs["forwarder"]))
        rows.append(row(f"{label}: gatewayd's p50 less the forwarder's, round by round",
                        f"median {apart['median'] * 1000:+.3f} ms ({apart['low'] * 1000:+.3f} to "
                        f"{apart['high'] * 1000:+.3f}); sooner in {apart['below']} of {apart['rounds']} rounds",
                        "≤ 0"))
        rows.append(row("gateway RSS after load", f"{rss_mb(gateway.pid):.1f} MB",
                        forwarder=f"{rss_mb(forwarder.pid):.1f} MB"))
        records = sum(1 for _ in open(gateway.file_log, "rb"))
        rows.append(row("file-log records written", f"{records}", "one per request"))
        gateway.stop()
        forwarder.stop()
        if not args.no_workers:
            rows += workers_comparison(workdir, fake, processes, seconds, args.rounds)
    finally:
        for process in processes:
            process.stop()
    rows.append(slow_reader(workdir, args))
    if args.long:
        rows += long_measurements(workdir, args)
    else:
        rows.append(row("idle streams memory", "not run (add --long)"))
    if args.litellm:
        rows += litellm(workdir, seconds)
    else:
        rows.append(row("LiteLLM on the same fake", "not run (add --litellm)"))
    print_table(rows, load)


def print_table(rows: list[Row], load: str) -> None:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), machine)
    print(f"\n{datetime.date.today().isoformat()} on {model} ({os.cpu_count()} CPUs), Python {platform.python_version()}, "
          f"load average {load} before the run\n")
    print("| measurement | direct to the fake | minimal forwarder | through gatewayd | gatewayd / forwarder | target |")
    print("|---|---|---|---|---|---|")
    for each in rows:
        print("| " + " | ".join(each) + " |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
