"""``python bench/hotspots.py``: where gatewayd's CPU goes in the bench's c=64 run.

It starts the lean fake and ``twistd gatewayd`` on the sample configuration as
bench/run.py does (or, with ``--target forwarder``, the minimal forwarder, to see
what the floor pays), pinned to CPU 0, warms it up, and profiles it while wrk
drives it at c=64 for ``--seconds``:

- ``--profiler py-spy`` (the default when ``py-spy`` is installed: ``pip install
  py-spy``) samples the running process from outside, during the c=64 run only,
  at little cost to it.  A function's own time is the samples with it on top of
  the stack, its cumulative time the samples with it anywhere in the stack.
- ``--profiler cprofile`` runs the process under cProfile (twistd's ``--profile``;
  ``python -m cProfile`` for the forwarder) from start to stop, warm-up included.
  It counts calls exactly (shown per request) but slows every Python call, so
  its shares lean towards code that makes many small calls.

It prints the top ``--top`` functions by cumulative and by own time, each as a
share of the profile and as µs per request (that share of the process's CPU per
request, measured from /proc in the same run), then own time summed by module
area (each gatewayd module, each Twisted package, the rest by top-level module).  The script is not called
profile.py because that name would shadow the standard library module cProfile
imports.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from run import (  # noqa: E402  (bench/ is not a package; run.py sits beside this file)
    BIN, GEMINI_REQUEST, MODEL_PATH, SMALL_REQUEST, Fake, Forwarder, Gateway, cpu_seconds, wrk,
)

#: py-spy in the bench's venv (``pip install py-spy``) or on the PATH.
PY_SPY = shutil.which("py-spy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

#: (own, cumulative, calls or None), own and cumulative as shares of the whole profile.
Entry = tuple[float, float, int | None]


def py_spy_entries(raw: Path) -> dict[str, Entry]:
    """Own and cumulative shares of the main thread from py-spy's raw output
    (``frame;frame;... count`` lines).

    The reactor runs on the main thread.  The others are the reactor's thread
    pool, idle in ``Queue.get`` under load, yet py-spy counts a thread waiting
    on a lock as active, so they would add a large share of nothing.
    """
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = others = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "(" not in stack:
            continue
        frames = stack.split(";")
        samples = int(count)
        if frames[0].startswith("Thread._bootstrap "):
            others += samples
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):  # a recursive function counts once per sample
            cumulative[frame] += samples
    if not total:
        raise SystemExit(f"hotspots: py-spy recorded no samples ({raw})")
    print(f"py-spy: {total} samples of the main thread (left out: {others} of other threads)")
    return {name: (own[name] / total, cumulative[name] / total, None) for name in cumulative}


def cprofile_entries(stats_file: Path) -> dict[str, Entry]:
    """Own and cumulative shares, and call counts, from a saved cProfile run."""
    stats = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in stats.values())
    return {
        _cprofile_name(key): (tt / total, ct / total, calls)
        for key, (_, calls, tt, ct, _) in stats.items()
    }


def _cprofile_name(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    for marker in ("site-packages/", str(HERE.parent) + "/", sysconfig.get_paths()["stdlib"] + "/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return f"{function} ({filename}:{line})"


def print_top(entries: dict[str, Entry], per_request_us: float, requests: int, top: int) -> None:
    """The top functions by cumulative and by own time; those on (nearly) every stack,
    twistd's and the reactor's run loop, are left out of the cumulative list."""
    calls = any(entry[2] is not None for entry in entries.values())
    everywhere = [name for name, (_, cumulative, _) in entries.items() if cumulative >= 0.995]
    print(f"\non (nearly) every stack, left out of the cumulative list: {len(everywhere)} frames, "
          "twistd's start and the reactor's run loop")
    for title, index in (("cumulative", 1), ("own", 0)):
        print(f"\ntop {top} by {title} time")
        print(f"{'cum %':>6} {'own %':>6} {'cum µs/req':>10} {'own µs/req':>10}" + (f" {'calls/req':>9}" if calls else "")
              + "  function")
        listed = [item for item in entries.items() if index == 0 or item[0] not in everywhere]
        for name, (own, cumulative, count) in sorted(listed, key=lambda item: -item[1][index])[:top]:
            line = (f"{cumulative * 100:6.1f} {own * 100:6.1f} {cumulative * per_request_us:10.1f} "
                    f"{own * per_request_us:10.1f}")
            if calls:
                line += f" {count / requests:9.2f}"
            print(f"{line}  {name}")


def print_areas(entries: dict[str, Entry], per_request_us: float) -> None:
    """Own time summed by where the code lives: gatewayd's modules one by one, Twisted's
    packages, the rest by top-level module (``json`` includes its C encoder and decoder)."""
    areas: Counter[str] = Counter()
    for name, (own, _, _) in entries.items():
        path = name.rpartition("(")[2].rpartition(":")[0] if name.endswith(")") else "built-in"
        parts = path.split("/")
        if parts[0] == "gatewayd":
            area = path
        elif parts[0] == "twisted":
            area = "/".join(parts[:2]) + "/"
        else:
            area = parts[0].removesuffix(".py")
        areas[area] += own
    print("\nown time by where the code lives")
    print(f"{'own %':>6} {'µs/req':>7}  area")
    for area, own in areas.most_common():
        if own >= 0.005:
            print(f"{own * 100:6.1f} {own * per_request_us:7.1f}  {area}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("gatewayd", "forwarder"), default="gatewayd")
    parser.add_argument("--profiler", choices=("py-spy", "cprofile"),
                        default="py-spy" if PY_SPY else "cprofile")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the profiled c=64 run")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("hotspots: wrk is not installed (apt-get install -y wrk); nothing was profiled.")
    if args.profiler == "py-spy" and PY_SPY is None:
        raise SystemExit("hotspots: py-spy is not installed (pip install py-spy), or use --profiler cprofile.")
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-hotspots-"))
    output = workdir / ("profile.txt" if args.profiler == "py-spy" else "profile.pstats")
    print(f"hotspots: working in {workdir}", file=sys.stderr)
    fake = Fake(workdir, "fake")
    if args.target == "gatewayd":
        twistd_args = (f"--profile={output}", "--profiler=cprofile", "--savestats") if args.profiler == "cprofile" else ()
        target = Gateway(workdir, fake, "gateway", twistd_args=twistd_args)
        url, body = target.url + "/anything/v1/messages", SMALL_REQUEST
    else:
        python_args = ("-m", "cProfile", "-o", str(output)) if args.profiler == "cprofile" else ()
        target = Forwarder(workdir, fake, python_args=python_args)
        url, body = target.url + MODEL_PATH + ":generateContent", GEMINI_REQUEST
    try:
        warm = wrk(workdir, url, body, 4, 1)
        spy = None
        if args.profiler == "py-spy":
            spy = subprocess.Popen(
                [PY_SPY, "record", "--pid", str(target.pid), "--rate", str(args.rate), "--function", "--format", "raw",
                 "--output", str(output)],
                stdout=subprocess.DEVNULL, stderr=open(workdir / "py-spy.log", "wb"),
            )
            time.sleep(1.0)  # attached and sampling before the load starts
        print(f"  c=64 for {args.seconds:g} s under {args.profiler} ...", file=sys.stderr)
        before = sum(cpu_seconds(target.pid))
        result = wrk(workdir, url, body, 64, args.seconds)
        cpu = sum(cpu_seconds(target.pid)) - before
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            spy.wait(60)
    finally:
        target.stop()
        fake.stop()
    if not output.exists():
        raise SystemExit(f"hotspots: {args.profiler} wrote no profile (see {workdir})")
    entries = py_spy_entries(output) if args.profiler == "py-spy" else cprofile_entries(output)
    per_request = cpu / result["requests"]
    print(f"\n{args.target} under {args.profiler}, c=64 for {result['seconds']:.1f} s: {result['rps']:.0f} req/s, "
          f"{per_request * 1000:.3f} ms CPU per request ({cpu / result['seconds']:.2f} of its core busy)")
    if args.profiler == "cprofile":
        print("cProfile covers the whole run, warm-up included; calls per request count its requests too")
    print_top(entries, per_request * 1e6, warm["requests"] + result["requests"], args.top)
    print_areas(entries, per_request * 1e6)


if __name__ == "__main__":
    main(sys.argv[1:])
