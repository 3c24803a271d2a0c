"""A ``systemctl reload`` that returns once the new configuration serves, or fails.

systemd 252 has no ``Type=notify-reload``: a reload job ends when ``ExecReload=``
returns, so a plain ``kill -HUP`` would let a script send traffic to the old
configuration.  ``ExecReload=python -m gatewayd.daemon.reloadack $MAINPID``
sends SIGHUP and waits until the daemon writes, to ``$RUNTIME_DIRECTORY/reload.json``,
the outcome of a reload that *began after the signal* (a reload already under
way when it arrives read the files too early).  Exit 0 if the new configuration
serves; 1, with the daemon's problem on stderr (the journal), if the previous one
keeps serving, the daemon ended, or no answer came in time.  Stdlib only, so it
starts in a fraction of the daemon's start-up time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Mapping, Sequence

FILE = "reload.json"


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: the clock systemd's MONOTONIC_USEC and the records use."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def record(directory: str, started: int, problem: str | None) -> None:
    """Write the outcome of the reload that began at ``started`` (CLOCK_MONOTONIC, µs).

    Replaced whole (rename), so a reader never sees half a record.
    """
    path = os.path.join(directory, FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        json.dump({"pid": os.getpid(), "started": started, "problem": problem}, file)
    os.replace(path + ".tmp", path)


class NoAnswer(Exception):
    """The daemon did not acknowledge a reload."""


def reload(pid: int, directory: str, timeout: float, interval: float = 0.02) -> str | None:
    """SIGHUP ``pid``, then the problem of the first reload it began after that (None: it serves)."""
    path = os.path.join(directory, FILE)
    sent = monotonic_usec()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as file:
                outcome = json.load(file)
        except FileNotFoundError:
            outcome = None
        if outcome is not None and outcome["pid"] == pid and outcome["started"] >= sent:
            return outcome["problem"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise NoAnswer(f"the daemon (pid {pid}) ended during the reload") from None
        time.sleep(interval)
    raise NoAnswer(f"the daemon (pid {pid}) did not finish the reload within {timeout:g} s")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatewayd.daemon.reloadack", description=__doc__.splitlines()[0])
    parser.add_argument("pid", type=int, help="the daemon's process id ($MAINPID)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the daemon (default 60)")
    options = parser.parse_args(argv)
    directory = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if not directory:
        print("gatewayd: reload: $RUNTIME_DIRECTORY is not set (the unit needs RuntimeDirectory=)", file=sys.stderr)
        return 1
    try:
        problem = reload(options.pid, directory, options.timeout)
    except (NoAnswer, OSError) as error:
        print(f"gatewayd: reload failed: {error}", file=sys.stderr)
        return 1
    if problem is not None:
        print(f"gatewayd: reload failed, still serving the previous configuration: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
