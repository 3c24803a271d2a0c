"""One route, several models, with the real Claude Code CLI: ``model_alias`` sends the main loop
and the background calls (the session title, on the small/fast model) to different targets, and a
Claude-on-Vertex target serves the main loop's tool turns while Gemini serves the background."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, config_dir, file_log_override, read_records, settled_records, wait_for
from tests.e2e.test_claude_code import CLAUDE, claude_home

pytestmark = pytest.mark.skipif(
    CLAUDE is None, reason="Claude Code CLI not installed: .ci/run installs it with npm"
)


def target(name: str, alias: str) -> str:
    return f"""
      - route_type: llm/v1/chat
        logging: {{log_statistics: true}}
        auth:
          gcp_use_service_account: true
          gcp_service_account_json: '${{{{ env "DECK_GEMINI_API_KEY" }}}}'
        model:
          provider: gemini
          name: {name}
          model_alias: {alias}
          options:
            gemini:
              api_endpoint: '${{{{ env "DECK_GEMINI_API_ENDPOINT" }}}}'
              project_id: '${{{{ env "DECK_GCP_PROJECT_ID" }}}}'
              location_id: '${{{{ env "DECK_GEMINI_LOCATION_ID" }}}}'
"""


ALIASES = (
    "20-ai-proxy-advanced.yaml",
    '_format_version: "3.0"\nplugins:\n  - name: ai-proxy-advanced\n    config:\n'
    "      llm_format: anthropic\n      targets:"
    + target("gemini-2.5-pro", "smart")
    + target("gemini-2.5-flash", "fast")
    + target("claude-sonnet-4-5@20250929", "claude-sonnet-*"),
)


@pytest.fixture(scope="module")
def alias_daemon(fake, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("aliases")
    log_path = workdir / "claude.json"
    daemon = Daemon(config_dir(workdir, ALIASES, file_log_override(log_path)), fake.seed_environment(), workdir)
    daemon.file_log = log_path
    yield daemon
    daemon.stop()


def run_claude(daemon: Daemon, main: str, background: str, prompt: str, tmp_path: Path, *extra: str) -> dict:
    """Claude Code in -p mode with its main and background models set by their variables.

    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is left unset: it turns the title call off too.
    Telemetry and error reports are off, and the machine has no way out anyway.
    """
    workdir = tmp_path / "project"
    workdir.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(claude_home(tmp_path)),
        "ANTHROPIC_BASE_URL": daemon.url + "/anything",
        "ANTHROPIC_MODEL": main,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": background,
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    done = subprocess.run(
        [CLAUDE, "-p", prompt, "--output-format", "json", *extra],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"claude failed: {done.stdout}\n{done.stderr}\n{daemon.log()}"
    return json.loads(done.stdout)


def model_calls(fake) -> list[tuple[str, dict]]:
    """(the model's path segment, the request) of every call to a model, in order."""
    return [
        (r["path"].rsplit("/models/", 1)[1], r)
        for r in fake.requests()
        if "/models/" in r["path"]
    ]


def is_title_call(request: dict) -> bool:
    return "Generate a concise, sentence-case title" in json.dumps(request["body"])


def records_by_model(daemon: Daemon, before: int, count: int) -> list[dict]:
    def ready() -> list[dict] | None:
        found = [r for r in read_records(daemon.file_log)[before:] if "ai" in r]
        return found if len(found) >= count else None

    return wait_for(ready, what=f"{count} file-log records with ai")


def test_main_loop_and_background_calls_go_to_their_aliases(alias_daemon, fake, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("The Alexiad has fifteen books.\n")
    before = len(settled_records(alias_daemon.file_log))
    fake.clear()
    result = run_claude(alias_daemon, "smart", "fast", f"Please read the file {project / 'notes.txt'}",
                        tmp_path, "--allowedTools", "Read")
    assert result["is_error"] is False, result
    assert "fifteen books" in result["result"]
    assert set(result["modelUsage"]) == {"smart", "fast"}, result["modelUsage"]
    calls = model_calls(fake)
    titles = [model for model, r in calls if is_title_call(r)]
    main = [model for model, r in calls if r["body"].get("tools")]
    assert titles == ["gemini-2.5-flash:streamGenerateContent"], calls
    assert main == ["gemini-2.5-pro:streamGenerateContent"] * 2, calls  # the Read call, then its result
    assert all(r["status"] == 200 for _, r in calls)
    records = records_by_model(alias_daemon, before, len(calls))
    served = {(r["ai"]["proxy"]["meta"]["request_model"], r["ai"]["proxy"]["meta"]["response_model"])
              for r in records}
    assert served == {("smart", "gemini-2.5-pro"), ("fast", "gemini-2.5-flash")}


def test_claude_on_vertex_serves_the_tool_turn_and_gemini_the_background(alias_daemon, fake, tmp_path):
    """Claude Code's own model name (claude-sonnet-4-5) matches the claude-sonnet-* alias: its
    turns go to Claude on Vertex (streamRawPredict), the tool result answered by Claude, while the
    title call (background model ``fast``) goes to Gemini through the same route."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("The Alexiad has fifteen books.\n")
    fake.clear()
    result = run_claude(alias_daemon, "claude-sonnet-4-5", "fast",
                        f"Please read the file {project / 'notes.txt'} and tell me what it says.",
                        tmp_path, "--allowedTools", "Read")
    assert result["is_error"] is False, result
    assert result["result"].startswith("Tool results: Read"), result["result"]
    assert "fifteen books" in result["result"]
    calls = model_calls(fake)
    claude = [r for model, r in calls if model == "claude-sonnet-4-5@20250929:streamRawPredict"]
    titles = [model for model, r in calls if is_title_call(r)]
    assert titles == ["gemini-2.5-flash:streamGenerateContent"], calls
    assert len(claude) == 2 and all(r["status"] == 200 for r in claude), calls
    assert not [model for model, _ in calls if model.startswith("gemini-2.5-pro")]
    # The second Claude call carries Claude's own tool_use and Claude Code's tool_result for it.
    second = claude[-1]
    assert "model" not in second["body"] and second["body"]["anthropic_version"] == "vertex-2023-10-16"
    history = second["body"]["messages"]
    (call,) = [b for b in history[-2]["content"] if b["type"] == "tool_use"]
    assert (call["name"], call["input"]) == ("Read", {"file_path": str(project / "notes.txt")})
    (answer,) = [b for b in history[-1]["content"] if b["type"] == "tool_result"]
    assert answer["tool_use_id"] == call["id"]
