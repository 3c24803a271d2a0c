"""Record what the Claude Code CLI sends, scrubbed, as test fixtures.

    python tools/capture_claude_code.py OUTDIR [--model gemini-3-flash-preview]

Starts the strict fake upstream and ``twistd gatewayd`` on the sample configuration (like
``python -m gatewayd.demo``), puts a small recording proxy in front of the daemon, runs the
Claude Code CLI ($GATEWAYD_CLAUDE) in ``-p`` mode through it on a few scripted sessions, and
writes every request it made as ``OUTDIR/<session>-<n>.json`` (``path``, ``headers``, ``body``).
Scrubbing: the session id and ``metadata.user_id`` become zeros, the throwaway project and home
directories become ``/project`` and ``/home/user``.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from gatewayd.demo import Daemon, FakeVertex

ZERO_UUID = "00000000-0000-4000-8000-000000000000"
ZERO_USER = json.dumps({"device_id": "0" * 64, "account_uuid": "", "session_id": ZERO_UUID}, separators=(",", ":"))


def sessions(project: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (prompt, extra CLI arguments)."""
    plan = [
        [{"Write": {"file_path": f"{project}/notes.txt", "content": "alpha\nbeta\n"}},
         {"Write": {"file_path": f"{project}/count.py", "content": "print(len(open('notes.txt').read().split()))\n"}}],
        {"Read": {"file_path": f"{project}/notes.txt"}},
        {"Edit": {"file_path": f"{project}/notes.txt", "old_string": "beta", "new_string": "beta\ngamma"}},
        [{"Bash": {"command": "python3 count.py > count.txt", "description": "Count words"}},
         {"Glob": {"pattern": "*.txt"}}],
    ]
    tools = ["--allowedTools", "Read,Write,Edit,Bash,Glob"]
    return {
        "tool_session": (f"Set up the notes. [[plan {json.dumps(plan)}]]", tools),
        "web_search": ("Search the web for the Alexiad. [[call WebSearch {\"query\": \"Alexiad\"}]]", ["--allowedTools", "WebSearch"]),
        "compact": ("/compact", ["--continue"]),
    }


class Recorder(http.server.BaseHTTPRequestHandler):
    upstream: tuple[str, int]
    records: list[dict]

    def do_POST(self) -> None:
        self._forward()

    def do_GET(self) -> None:
        self._forward()

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name: value for name, value in self.headers.items()}
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.records.append({"method": self.command, "path": self.path, "headers": headers, "body": parsed})
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "accept-encoding", "connection")}
        connection.request(self.command, self.path, body=body or None, headers=forwarded)
        response = connection.getresponse()
        data = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def scrub(record: dict, replacements: list[tuple[str, str]]) -> dict:
    text = json.dumps(record)
    for old, new in replacements:
        text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
    record = json.loads(text)
    for name in list(record["headers"]):
        if name.lower() == "x-claude-code-session-id":
            record["headers"][name] = ZERO_UUID
    body = record.get("body")
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict) and "user_id" in body["metadata"]:
        body["metadata"]["user_id"] = ZERO_USER
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--model", default="gemini-3-flash-preview")
    parser.add_argument("--only", action="append", help="run only these sessions")
    options = parser.parse_args(argv)
    claude = os.environ["GATEWAYD_CLAUDE"]
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-capture-"))
    config = workdir / "config"
    config.mkdir()
    sample = Path(__file__).resolve().parents[1] / "etc" / "gatewayd"
    for path in sample.iterdir():
        text = path.read_text().replace("name: gemini-2.0-flash", f"name: {options.model}")
        text = text.replace('"/tmp/claude.json"', f'"{workdir}/claude.json"')
        (config / path.name).write_text(text)
    fake = FakeVertex(workdir)
    daemon = Daemon(config, fake.seed_environment(location="global"), workdir)
    Recorder.upstream = ("127.0.0.1", daemon.port)
    Recorder.records = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options.outdir.mkdir(parents=True, exist_ok=True)
    try:
        for name, (prompt, extra) in sessions(workdir / "project").items():
            if options.only and name not in options.only:
                continue
            project = workdir / "project"
            home = workdir / "home"
            project.mkdir(exist_ok=True)
            (home / ".claude").mkdir(parents=True, exist_ok=True)
            (home / ".claude" / "settings.json").write_text(json.dumps({"apiKeyHelper": "~/.claude/key.sh"}))
            helper = home / ".claude" / "key.sh"
            helper.write_text('#!/bin/sh\necho "x"\n')
            helper.chmod(0o755)
            env = {
                "PATH": os.environ["PATH"],
                "HOME": str(home),
                "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/anything",
                "ANTHROPIC_MODEL": options.model,
                "DISABLE_AUTOUPDATER": "1",
            }
            Recorder.records.clear()
            done = subprocess.run(
                [claude, "-p", prompt, "--output-format", "json", *extra],
                cwd=project, env=env, capture_output=True, text=True, timeout=180,
            )
            print(f"{name}: exit {done.returncode} {done.stdout[:300]} {done.stderr[:300]}")
            replacements = [
                (str(project), "/project"),
                (str(home), "/home/user"),
                (str(workdir), "/tmp/work"),
                (str(project).replace("/", "-"), "-project"),  # Claude Code's per-project directory
            ]
            for index, record in enumerate(list(Recorder.records)):
                out = options.outdir / f"{name}-{index}.json"
                out.write_text(json.dumps(scrub(record, replacements), indent=1, ensure_ascii=False) + "\n")
                body = record.get("body") or {}
                print(f"  {out.name}: {record['method']} {record['path']} model={body.get('model')} "
                      f"tools={len(body.get('tools') or [])} messages={len(body.get('messages') or [])}")
    finally:
        server.shutdown()
        daemon.stop()
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
