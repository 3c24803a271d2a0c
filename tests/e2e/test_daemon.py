"""The daemon as an operator starts it: plugin discovery and refusing a broken configuration."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.harness import SAMPLE_CONFIG, config_dir
from gatewayd.demo import BIN, SOURCE, check_same_code, source_environment


def twistd(*args: str, env=None, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "twistd"), *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def test_twistd_lists_the_installed_plugin(tmp_path):
    done = twistd("--help", cwd=tmp_path)  # not from the source tree: the installed copy
    assert done.returncode == 0
    assert "gatewayd" in done.stdout


def test_gatewayd_options_are_documented(tmp_path):
    done = twistd("gatewayd", "--help", cwd=tmp_path)
    assert "--config" in done.stdout and "--listen" in done.stdout


def test_an_unset_variable_stops_the_daemon_with_its_name(tmp_path):
    done = twistd("-n", "--pidfile=", "gatewayd", "--config", str(SAMPLE_CONFIG), env=source_environment({"PATH": "/usr/bin"}), cwd=tmp_path)
    assert done.returncode != 0
    assert "DECK_GEMINI_API_KEY" in done.stderr + done.stdout


def test_an_unknown_field_is_named_with_its_file(fake, tmp_path):
    broken = config_dir(
        tmp_path,
        (
            "40-broken.yaml",
            '_format_version: "3.0"\nplugins:\n  - name: file-log\n    config:\n      path: /tmp/x.json\n      colour: blue\n',
        ),
    )
    done = twistd("-n", "--pidfile=", "gatewayd", "--config", str(broken), env=source_environment(fake.seed_environment()), cwd=tmp_path)
    output = done.stderr + done.stdout
    assert done.returncode != 0
    assert "40-broken.yaml" in output and "colour" in output
    assert "PRIVATE KEY" not in output


def test_another_llm_format_is_refused(fake, tmp_path):
    text = (SAMPLE_CONFIG / "20-ai-proxy-advanced.yaml").read_text().replace("llm_format: anthropic", "llm_format: openai")
    broken = config_dir(tmp_path, ("80-openai.yaml", text))
    done = twistd("-n", "--pidfile=", "gatewayd", "--config", str(broken), env=source_environment(fake.seed_environment()), cwd=tmp_path)
    output = done.stderr + done.stdout
    assert done.returncode != 0 and "llm_format" in output and "80-openai.yaml" in output


def test_daemons_run_the_code_under_test(tmp_path):
    """The harness puts this gatewayd first on the child's path, and refuses another copy."""
    check_same_code(source_environment())
    stale = tmp_path / "gatewayd"
    stale.mkdir()
    (stale / "__init__.py").write_text("")
    (stale / "tap.py").write_text("")
    env = source_environment()
    env["PYTHONPATH"] = str(tmp_path)
    with pytest.raises(RuntimeError, match=str(SOURCE)):
        check_same_code(env)
