"""``python -m gatewayd.check``: ok and exit 0, or the reload's problem and exit 1."""

from __future__ import annotations

import json

import pytest

from gatewayd.check import main
from gatewayd.fakevertex.auth import ServiceAccount
from tests.test_reload import SAMPLE


@pytest.fixture(scope="module")
def env():
    key = ServiceAccount.generate("http://127.0.0.1:1/token", "fake-project").info()
    return {
        "DECK_GEMINI_API_KEY": json.dumps(key),
        "DECK_GEMINI_API_ENDPOINT": "http://127.0.0.1:1",
        "DECK_GCP_PROJECT_ID": "fake-project",
        "DECK_GEMINI_LOCATION_ID": "us-central1",
    }


def test_the_sample_configuration_is_ok(capsys, env):
    assert main(["--config", str(SAMPLE)], env) == 0
    assert "1 services, 1 routes, 2 plugins" in capsys.readouterr().out


def test_an_unset_variable_fails_with_its_name(capsys, env):
    env = {k: v for k, v in env.items() if k != "DECK_GCP_PROJECT_ID"}
    assert main(["--config", str(SAMPLE)], env) == 1
    err = capsys.readouterr().err
    assert "20-ai-proxy-advanced.yaml" in err and "DECK_GCP_PROJECT_ID" in err


def test_quiet_prints_nothing_when_ok(capsys, env):
    assert main(["-q", "--config", str(SAMPLE)], env) == 0
    assert capsys.readouterr().out == ""


def test_a_key_that_is_no_service_account_key_is_refused(capsys, env):
    assert main(["--config", str(SAMPLE)], {**env, "DECK_GEMINI_API_KEY": '{"type": "user"}'}) == 1
    assert "targets[0].auth" in capsys.readouterr().err
