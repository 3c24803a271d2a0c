"""``python -m gatewayd.demo``: the seed walk-through on one machine, no Google account needed.

Starts the strict fake Vertex AI server, then ``twistd gatewayd`` on the sample
configuration with the seed's ``DECK_...`` variables pointing at the fake,
asks the seed's question, prints the answer and its file-log record, and
keeps both running for Claude Code until interrupted.  SIGINT, SIGTERM and
SIGHUP (a closed terminal) stop both; on Linux they also die with the demo if
it is killed outright.  The end-to-end tests drive the same two processes
through the classes here.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

import gatewayd

T = TypeVar("T")
BIN = Path(sys.executable).parent
#: The signals that end the demo: Ctrl-C, ``kill``, and the terminal going away.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: prctl(2)'s option to have a child signalled when its parent dies (Linux).
PR_SET_PDEATHSIG = 1
#: The directory holding the ``gatewayd`` this process imported (a source tree or site-packages).
SOURCE = Path(gatewayd.__file__).resolve().parents[1]


def source_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` with SOURCE first on PYTHONPATH, so a child runs the code this process runs.

    Without it ``twistd`` would import whatever copy is installed in the venv, and tests run
    from a working tree could pass on older code.
    """
    env = dict(os.environ if env is None else env)
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{SOURCE}{os.pathsep}{rest}" if rest else str(SOURCE)
    return env


_checked: set[str] = set()


def check_same_code(env: dict[str, str]) -> None:
    """Fail loudly unless a child started with ``env`` imports gatewayd from SOURCE."""
    key = env.get("PYTHONPATH", "")
    if key in _checked:
        return
    probe = "import gatewayd.daemon.tap as tap; print(tap.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, cwd="/"
    )
    where = Path(done.stdout.strip()).resolve() if done.returncode == 0 else None
    # Compared whole: a venv inside the working tree is under SOURCE too.
    if where != SOURCE / "gatewayd" / "daemon" / "tap.py":
        raise RuntimeError(
            f"a child process would run gatewayd from {where or done.stderr.strip()}, not from {SOURCE}"
        )
    _checked.add(key)


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class FakeVertex:
    """``python -m gatewayd.fakevertex`` on a loopback port, with its own service account."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.workdir = workdir
        self.key_path = workdir / "service-account.json"
        port_file = workdir / "fake.port"
        self.output = open(workdir / "fake.log", "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gatewayd.fakevertex",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--port-file",
                str(port_file),
                "--write-service-account",
                str(self.key_path),
                *args,
            ],
            stdout=self.output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(),
            env=source_environment(),
        )
        self.port = int(wait_for(lambda: file_text(port_file), what="the fake's port"))
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self.key_path.exists, what="the service-account key")

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/_fake/requests") as response:
            return json.load(response)

    def streams(self) -> dict[str, int]:
        """Streams open now, and streams whose client (gatewayd) left before their end."""
        with urllib.request.urlopen(self.url + "/_fake/streams") as response:
            return json.load(response)

    def token_fault(self, mode: str | None) -> None:
        """Have the token endpoint answer 500, close, hang (or, with None, behave)."""
        request = urllib.request.Request(self.url + "/_fake/token-fault", data=(mode or "").encode(), method="PUT")
        urllib.request.urlopen(request).read()

    def model_fault(self, mode: str | None) -> None:
        """Have model calls hang, answer ``mode`` seconds late (or, with None, behave)."""
        request = urllib.request.Request(self.url + "/_fake/model-fault", data=(mode or "").encode(), method="PUT")
        urllib.request.urlopen(request).read()

    def held(self) -> dict[str, object]:
        """The model fault, the calls it holds now and those whose client left."""
        with urllib.request.urlopen(self.url + "/_fake/model-fault") as response:
            return json.load(response)

    def clear(self) -> None:
        request = urllib.request.Request(self.url + "/_fake/requests", method="DELETE")
        urllib.request.urlopen(request).read()

    def seed_environment(self, location: str = "us-central1") -> dict[str, str]:
        """The seed's exports, pointed at this fake instead of Google."""
        env = dict(os.environ)
        env.update(
            {
                "DECK_GEMINI_API_KEY": self.key_path.read_text(),
                "DECK_GEMINI_API_ENDPOINT": self.url,
                "DECK_GCP_PROJECT_ID": "fake-project",
                "DECK_GEMINI_LOCATION_ID": location,
            }
        )
        return env

    def stop(self) -> None:
        _terminate(self.process)
        self.output.close()


class Daemon:
    """``twistd -n --pidfile= gatewayd``, its log captured, its port read from the log."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        workdir: Path,
        listen: str = "tcp:0:interface=127.0.0.1",
        status_listen: str | None = None,
        *,
        twistd_args: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = workdir / "twistd.log"
        self.output = open(self.log_path, "wb")
        status = ["--status-listen", status_listen] if status_listen else []
        env = source_environment(env)
        check_same_code(env)
        self.process = subprocess.Popen(
            [
                str(BIN / "twistd"), "-n", "--pidfile=", *twistd_args,
                "gatewayd", "--config", str(config), "--listen", listen, *status, *args,
            ],
            stdout=self.output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            preexec_fn=_die_with_parent(),
        )
        self.port = int(wait_for(self._port, what=f"twistd to listen (log: {self.log_path})"))
        self.url = f"http://127.0.0.1:{self.port}"
        self.status_url = None
        if status_listen:
            status_port = wait_for(lambda: self._port("StatusSite"), what="the status listener")
            self.status_url = f"http://127.0.0.1:{status_port}"

    def _port(self, site: str = "Site") -> str | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"twistd exited {self.process.returncode}:\n{self.log()}")
        found = re.search(rf"\b{site} starting on (\d+)", self.log())
        return found.group(1) if found else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        _terminate(self.process)
        self.output.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def file_text(path: Path) -> str | None:
    """The stripped text of ``path``, or None while it does not exist (a port file, say)."""
    return path.read_text().strip() if path.exists() else None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when this process dies, however it dies.

    Without it a demo killed with SIGKILL would leave ``twistd`` holding its
    port.  Linux only (``prctl``); elsewhere children outlive a killed demo.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class Stop(Exception):
    """Raised in the main thread by one of :data:`STOP_SIGNALS`."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


SEED_QUESTION = "Tell me about Anna Komnene's Alexiad."


def tool_session_plan(project: Path) -> list:
    """A Claude Code session for the fake's ``[[plan ...]]`` directive, in ``project``:
    two Writes in parallel, Read, Edit, then Bash and Glob in parallel."""
    return [
        [{"Write": {"file_path": f"{project}/notes.txt", "content": "alpha\nbeta\n"}},
         {"Write": {"file_path": f"{project}/count.py", "content": "print(len(open('notes.txt').read().split()))\n"}}],
        {"Read": {"file_path": f"{project}/notes.txt"}},
        {"Edit": {"file_path": f"{project}/notes.txt", "old_string": "beta", "new_string": "beta\ngamma"}},
        [{"Bash": {"command": "python3 count.py > count.txt", "description": "Count words"}},
         {"Glob": {"pattern": "*.txt"}}],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatewayd.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="etc/gatewayd", help="decK configuration (default: etc/gatewayd)")
    parser.add_argument("--listen", default="tcp:8000:interface=127.0.0.1", help="gateway endpoint")
    parser.add_argument("--once", action="store_true", help="stop after showing the answer")
    options = parser.parse_args(argv)
    # Before anything starts, so that a signal at any moment reaches the cleanup below.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-demo-"))
    started: list[FakeVertex | Daemon] = []
    try:
        fake = FakeVertex(workdir)
        started.append(fake)
        print(f"fake Vertex AI on {fake.url} (pid {fake.process.pid}, service-account key {fake.key_path})")
        try:
            daemon = Daemon(Path(options.config).resolve(), fake.seed_environment(), workdir, options.listen)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
        started.append(daemon)
        print(f"gatewayd on {daemon.url} (pid {daemon.process.pid}, its log: {daemon.log_path})\n")
        print(f"$ POST {daemon.url}/anything/v1/messages  {SEED_QUESTION!r}")
        body = json.dumps(
            {"model": "gemini-2.0-flash", "max_tokens": 1024, "messages": [{"role": "user", "content": SEED_QUESTION}]}
        ).encode()
        request = urllib.request.Request(
            daemon.url + "/anything/v1/messages",
            data=body,
            headers={"content-type": "application/json", "x-api-key": "x", "anthropic-version": "2023-06-01"},
        )
        log_path = Path("/tmp/claude.json")  # the sample configuration's file-log path
        before = len(_lines(log_path))
        with urllib.request.urlopen(request) as response:
            answer = json.load(response)
        print(answer["content"][0]["text"], "\n")
        records = wait_for(lambda: len(lines := _lines(log_path)) > before and lines, what="file-log")
        print(f"$ tail -n 1 {log_path} | jq")
        print(json.dumps(json.loads(records[-1]), indent=2))
        if options.once:
            return 0
        print(
            f"\nReady. In another shell:\n  ANTHROPIC_BASE_URL={daemon.url}/anything "
            "ANTHROPIC_MODEL=gemini-2.0-flash claude\nCtrl-C stops the demo.",
            flush=True,
        )
        while True:
            signal.pause()
    except Stop as stop:
        try:
            print(f"\n{stop}: stopping gatewayd and the fake", flush=True)
        except OSError:
            pass  # the terminal is gone (SIGHUP): nobody to tell
        return 0
    finally:
        # No second signal may cut the cleanup short: a closed terminal sends SIGHUP and more.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        for process in reversed(started):
            process.stop()

if __name__ == "__main__":
    sys.exit(main())
