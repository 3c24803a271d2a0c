"""The real Claude Code CLI (npm @anthropic-ai/claude-code) in -p mode through the daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gatewayd.demo import tool_session_plan
from tests.e2e.harness import (
    REPO,
    Daemon,
    config_dir,
    file_log_override,
    model_override,
    read_records,
    settled_records,
    wait_for,
)


def claude_binary() -> str | None:
    candidates = [
        os.environ.get("GATEWAYD_CLAUDE"),
        str(REPO / ".cache" / "npm" / "node_modules" / ".bin" / "claude"),
        shutil.which("claude"),
    ]
    return next((c for c in candidates if c and os.path.exists(c)), None)


CLAUDE = claude_binary()
pytestmark = pytest.mark.skipif(
    CLAUDE is None, reason="Claude Code CLI not installed: .ci/run installs it with npm"
)


def claude_home(tmp_path: Path, key: str = "x") -> Path:
    """A throwaway HOME set up exactly as the seed says: settings.json and the key helper."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    (home / ".claude" / "settings.json").write_text(
        json.dumps({"apiKeyHelper": "~/.claude/anthropic_key.sh"})
    )
    helper = home / ".claude" / "anthropic_key.sh"
    helper.write_text(f'#!/bin/sh\necho "{key}"\n')
    helper.chmod(0o755)
    return home


def run_claude(
    daemon: Daemon, model: str, prompt: str, tmp_path: Path, *extra: str, key: str = "x", check: bool = True
) -> dict:
    workdir = tmp_path / "project"
    workdir.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(claude_home(tmp_path, key)),
        "ANTHROPIC_BASE_URL": daemon.url + "/anything",
        "ANTHROPIC_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    done = subprocess.run(
        [CLAUDE, "-p", prompt, "--output-format", "json", *extra],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 or not check, f"claude failed: {done.stdout}\n{done.stderr}\n{daemon.log()}"
    return json.loads(done.stdout)


def test_seed_question(seed_daemon, tmp_path):
    before = len(settled_records(seed_daemon.file_log))
    result = run_claude(seed_daemon, "gemini-2.0-flash", "Tell me about Anna Komnene's Alexiad.", tmp_path)
    assert result["is_error"] is False, result
    assert "Alexiad" in result["result"]
    # A record is written once its answer has gone out: wait for it rather than race it.
    seen = wait_for(lambda: [r for r in read_records(seed_daemon.file_log)[before:]
                             if r["request"]["uri"].startswith("/anything/v1/messages")],
                    what="a file-log record for Claude Code's request")
    record = seen[-1]
    assert record["request"]["headers"]["user-agent"].startswith("claude-cli/")
    assert record["request"]["headers"]["authorization"] == "REDACTED"
    assert record["request"]["querystring"] == {"beta": "true"}
    assert record["ai"]["proxy"]["meta"]["request_mode"] == "stream"
    assert record["ai"]["proxy"]["usage"]["prompt_tokens"] > 1000  # Claude Code's long system prompt
    assert record["response"]["status"] == 200


@pytest.fixture(scope="module")
def gemini3_daemon(fake, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gemini3")
    log_path = workdir / "claude.json"
    daemon = Daemon(
        config_dir(workdir, model_override("gemini-3-pro-preview"), file_log_override(log_path)),
        fake.seed_environment(location="global"),
        workdir,
    )
    daemon.file_log = log_path
    yield daemon
    daemon.stop()


def test_read_tool_turn_on_gemini_3(gemini3_daemon, fake, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("The Alexiad has fifteen books.\n")
    fake.clear()
    result = run_claude(
        gemini3_daemon,
        "gemini-3-pro-preview",
        f"Please read the file {project / 'notes.txt'} and tell me what it says.",
        tmp_path,
        "--allowedTools",
        "Read",
    )
    assert result["is_error"] is False, result
    assert "fifteen books" in result["result"]
    calls = [r for r in fake.requests() if ":streamGenerateContent" in r["path"] or ":generateContent" in r["path"]]
    # The second model call carried the function response, and the strict fake
    # accepted its thought signature (it would have answered 400 otherwise).
    follow_up = [r for r in calls if any("functionResponse" in p for c in r["body"]["contents"] for p in c["parts"])]
    assert follow_up and follow_up[-1]["status"] == 200
    model_turns = [c for c in follow_up[-1]["body"]["contents"] if c.get("role") == "model"]
    call_parts = [p for c in model_turns for p in c["parts"] if "functionCall" in p]
    assert call_parts[0]["functionCall"]["name"] == "Read"
    assert call_parts[0].get("thoughtSignature") not in (None, "skip_thought_signature_validator")


def test_multi_turn_tool_session_on_gemini_3(gemini3_daemon, fake, tmp_path):
    """Claude Code runs a scripted plan: parallel Writes, Read, Edit, then Bash and Glob in parallel."""
    project = tmp_path / "project"
    project.mkdir()
    plan = tool_session_plan(project)
    fake.clear()
    result = run_claude(
        gemini3_daemon, "gemini-3-pro-preview", f"Set up the notes. [[plan {json.dumps(plan)}]]", tmp_path,
        "--allowedTools", "Read,Write,Edit,Bash,Glob",
    )
    assert result["is_error"] is False, result
    assert result["result"].startswith("Plan done. Tool results: Bash"), result["result"]
    assert (project / "notes.txt").read_text() == "alpha\nbeta\ngamma\n"
    assert (project / "count.txt").read_text() == "3\n"
    main = [r for r in fake.requests() if ":streamGenerateContent" in r["path"] and r["body"].get("tools")]
    assert len(main) == 5 and all(r["status"] == 200 for r in main)
    last = main[-1]["body"]["contents"]
    steps = [[p["functionCall"]["name"] for p in c["parts"] if "functionCall" in p] for c in last if c["role"] == "model"]
    assert [s for s in steps if s] == [["Write", "Write"], ["Read"], ["Edit"], ["Bash", "Glob"]]


def test_web_search_tool_shows_the_grounding_sources(seed_daemon, fake, tmp_path):
    """Claude Code's WebSearch makes a sub-call with only web_search; Gemini's grounding comes back
    as Anthropic's search blocks, so the CLI lists the sources in the tool result it answers from."""
    fake.clear()
    result = run_claude(
        seed_daemon, "gemini-2.0-flash", 'Search the web for the Alexiad. [[call WebSearch {"query": "Alexiad"}]]',
        tmp_path, "--allowedTools", "WebSearch",
    )
    assert result["is_error"] is False, result
    assert result["result"].startswith("Tool results: WebSearch"), result["result"]
    assert 'Web search results for query: \\"Alexiad\\"' in result["result"]
    assert '{\\"title\\":\\"wikipedia.org\\"' in result["result"]  # a source, not "No links found"
    searches = [r for r in fake.requests() if r["body"] and r["body"].get("tools") == [{"googleSearch": {}}]]
    assert searches and searches[-1]["status"] == 200


def test_session_continues_after_compaction_on_gemini_3(gemini3_daemon, fake, tmp_path):
    """A tool turn, ``/compact``, then more tool turns with ``--continue``: the compacted history
    lost the Gemini 3 signatures, yet every request is accepted by the strict fake."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("The Alexiad has fifteen books.\n")
    (project / "more.txt").write_text("It was written in Greek.\n")
    fake.clear()
    first = run_claude(gemini3_daemon, "gemini-3-pro-preview", f"Please read the file {project / 'notes.txt'}",
                       tmp_path, "--allowedTools", "Read")
    assert "fifteen books" in first["result"], first
    compacted = run_claude(gemini3_daemon, "gemini-3-pro-preview", "/compact", tmp_path, "--continue")
    assert compacted["is_error"] is False, compacted
    after = run_claude(gemini3_daemon, "gemini-3-pro-preview", f"Now read the file {project / 'more.txt'}",
                       tmp_path, "--continue", "--allowedTools", "Read")
    assert after["is_error"] is False, after
    assert "written in Greek" in after["result"], after["result"]
    calls = [r for r in fake.requests() if "GenerateContent" in r["path"] or "generateContent" in r["path"]]
    assert calls and all(r["status"] == 200 for r in calls)
    # The compaction call itself carried the first turn's call with its real signature; after it,
    # Claude Code keeps only a summary (earlier calls become notes), and a new call is signed anew.
    compacting = [r for r in calls if "CRITICAL: Respond with TEXT ONLY" in json.dumps(r["body"]["contents"])]
    assert compacting, "no compaction request"
    resumed = [r for r in calls if "/compact</command-name>" in json.dumps(r["body"]["contents"])]
    assert resumed
    for request in resumed:
        parts = [p for c in request["body"]["contents"] for p in c["parts"]]
        assert all(p["functionCall"]["args"]["file_path"].endswith("more.txt") for p in parts if "functionCall" in p)
    last = resumed[-1]["body"]["contents"]
    signatures = [p.get("thoughtSignature") for c in last for p in c["parts"] if "functionCall" in p]
    assert signatures and signatures[-1] not in (None, "skip_thought_signature_validator")


CONSUMER_KEY = "sk-cc-alice-5f1e2d3c4b5a69788796"
KEY_AUTH = f"""_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: {CONSUMER_KEY}
plugins:
  - name: key-auth
    config:
      key_names: [x-api-key]
"""


def test_key_auth_with_the_key_helper(fake, tmp_path):
    """The seed's apiKeyHelper prints a consumer's key: Claude Code sends it (as a Bearer token),
    a wrong one ends in a clean authentication error, and the key goes no further than the gateway."""
    log_path = tmp_path / "claude.json"
    daemon = Daemon(config_dir(tmp_path, file_log_override(log_path), ("40-consumers.yaml", KEY_AUTH)),
                    fake.seed_environment(), tmp_path)
    for name in ("wrong", "right"):
        (tmp_path / name).mkdir()
    try:
        fake.clear()
        wrong = run_claude(daemon, "gemini-2.0-flash", "Tell me about the Alexiad.", tmp_path / "wrong",
                           key="sk-cc-mallory-000000000000", check=False)
        assert wrong["is_error"] is True, wrong
        assert "401" in wrong["result"] and "authenticat" in wrong["result"], wrong["result"]
        assert not [r for r in fake.requests() if "enerateContent" in r["path"]], "a wrong key reached Gemini"
        right = run_claude(daemon, "gemini-2.0-flash", "Tell me about the Alexiad.", tmp_path / "right",
                           key=CONSUMER_KEY)
        assert right["is_error"] is False and "Alexiad" in right["result"], right
        upstream = [r for r in fake.requests() if "enerateContent" in r["path"]]
        assert upstream and all(r["status"] == 200 for r in upstream)
        for request in upstream:
            assert "x-api-key" not in request["headers"]
            assert request["headers"]["authorization"].startswith("Bearer ")
            assert "sk-cc" not in json.dumps(request["headers"])
        records = wait_for(lambda: (r := read_records(log_path)) and any(x["response"]["status"] == 200 for x in r)
                           and r, what="file-log records")
        assert {r["response"]["status"] for r in records} >= {200, 401}
        assert {r["consumer"]["username"] for r in records if r["response"]["status"] == 200} == {"alice"}
        for text in (log_path.read_text(), daemon.log()):
            assert "sk-cc-" not in text
    finally:
        daemon.stop()


def test_context_command_counts_tokens(seed_daemon, fake, tmp_path):
    """/context is the command that calls /v1/messages/count_tokens (once per part of the context)."""
    fake.clear()
    before = len(settled_records(seed_daemon.file_log))
    result = run_claude(seed_daemon, "gemini-2.0-flash", "/context", tmp_path)
    assert result["is_error"] is False and "Context Usage" in result["result"], result
    counted = [r for r in fake.requests() if r["path"].endswith(":countTokens")]
    assert counted and all(r["status"] == 200 for r in counted)

    def count_records() -> list[dict] | None:
        found = [r for r in read_records(seed_daemon.file_log)[before:]
                 if r["request"]["uri"].startswith("/anything/v1/messages/count_tokens")]
        return found if len(found) == len(counted) else None

    records = wait_for(count_records, what="a count_tokens record per countTokens call")
    assert {r["response"]["status"] for r in records} == {200}


# A 1x1 red PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc0"
    "00000301010018dd8db00000000049454e44ae426082"
)


def test_read_an_image_the_image_reaches_gemini(gemini3_daemon, fake, tmp_path):
    """Claude Code's Read on an image answers with an image block inside the tool_result."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "dot.png").write_bytes(PNG)
    fake.clear()
    result = run_claude(gemini3_daemon, "gemini-3-pro-preview", f"Please read the file {project / 'dot.png'}",
                        tmp_path, "--allowedTools", "Read")
    assert result["is_error"] is False, result
    follow_up = [r for r in fake.requests() if "enerateContent" in r["path"]
                 and any("functionResponse" in p for c in r["body"]["contents"] for p in c["parts"])]
    assert follow_up and follow_up[-1]["status"] == 200
    parts = follow_up[-1]["body"]["contents"][-1]["parts"]
    response = next(p["functionResponse"] for p in parts if "functionResponse" in p)
    assert response["name"] == "Read" and "attachment(s) follow" in response["response"]["output"]
    images = [p["inlineData"] for p in parts if "inlineData" in p]
    assert images and images[0]["mimeType"] == "image/png"
