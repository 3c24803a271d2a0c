"""The shipped units under a real systemd, installed the way the README says.

One systemd boots for the module (:mod:`tests.booted`); the README's install
commands run in it, with the strict fake standing in for Google on the booted
system's own loopback.  Each test leaves ``gatewayd.service`` serving the sample
configuration.  Where systemd cannot be booted the tests skip with the reason;
under ``CI=true`` that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.booted import BootedSystemd, command_lines, unavailable
from tests.e2e.harness import REPO, model_override, wait_for

PORT = "8000"  # the units' port, on the booted system's own loopback
FAKE_PORT = "9000"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BROKEN = '_format_version: "3.0"\nplugins:\n  - name: file-log\n    config:\n      path: /x.json\n      colour: blue\n'


def skip(reason: str) -> None:
    """Skip with the reason; under CI=true, where .ci/run installs what is needed, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and this cannot run here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    reason = unavailable()
    if reason is not None:
        skip(reason)
    workdir = tmp_path_factory.mktemp("systemd")
    booted = BootedSystemd(workdir)
    fake = None
    try:
        key = workdir / "my-service-account.json"
        fake = subprocess.Popen(
            booted.enter(sys.executable, "-m", "gatewayd.fakevertex", "--listen", f"tcp:{FAKE_PORT}:interface=127.0.0.1",
                         "--write-service-account", str(key), "--stream-delay", "0.15", mounts=False),
            stdout=open(workdir / "fake.log", "wb"), stderr=subprocess.STDOUT,
        )
        wait_for(key.exists, what="the fake's service-account key")
        install(booted, key)
        yield booted
    finally:
        if fake is not None:
            fake.terminate()
            fake.wait(10)
        (workdir / "journal.txt").write_text(booted.journal("-b"))
        booted.poweroff()


def install(system: BootedSystemd, key) -> None:  # type: ignore[no-untyped-def]
    """The README's commands, word for word but for the seed's values, which point at the fake.

    They run in a copy of this checkout in the booted system's files (where the host's /tmp is
    not visible), with the key beside it, where the README has it.
    """
    checkout = system.root / "usr/src/gatewayd"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "build", "*.egg-info", "__pycache__", ".hypothesis"))
    (checkout / "my-service-account.json").write_text(key.read_text())
    lines = command_lines((REPO / "README.md").read_text(), "Running it as a system service")
    script = "\n".join(lines)
    for seed, ours in [
        ("my-project", "fake-project"),
        ("us-central1-aiplatform.googleapis.com", f"http://127.0.0.1:{FAKE_PORT}"),
    ]:
        assert seed in script
        script = script.replace(seed, ours)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # The host's network (mounts=True, network=False), for pip; the rest happens in the booted system.
    system.run("/bin/sh", "-euc", f"cd /usr/src/gatewayd\n{script}", network=False, timeout=300,
               env={**environment, "PATH": PATH})
    system.sh("cp -p /etc/gatewayd/gatewayd.env /root/gatewayd.env.installed")


@pytest.fixture
def service(system):
    """The system as installed; afterwards, back to gatewayd.service on the sample configuration."""
    yield system
    system.sh(
        """changed=
        for f in /etc/gatewayd/8*.yaml /etc/gatewayd/9*.yaml; do [ -e "$f" ] && rm "$f" && changed=1; done
        cmp -s /root/gatewayd.env.installed /etc/gatewayd/gatewayd.env || { cp -p /root/gatewayd.env.installed /etc/gatewayd/gatewayd.env; changed=1; }
        systemctl stop gatewayd.socket 'gatewayd@*.service'
        systemctl reset-failed
        if [ -n "$changed" ] || ! systemctl is-active -q gatewayd; then systemctl restart gatewayd; fi
        """
    )


def ask(system: BootedSystemd) -> dict:
    done = system.run(sys.executable, "-m", "tests.e2e.nsclient", "ask", PORT, mounts=False, cwd=str(REPO))
    return json.loads(done.stdout)


def write(system: BootedSystemd, path: str, text: str) -> None:
    (system.root / path.lstrip("/")).write_text(text)


def output_since(system: BootedSystemd, cursor: str, unit: str) -> str:
    """What the unit's processes wrote to stdout and stderr, without systemd's own messages."""
    return system.journal(f"--after-cursor={cursor}", f"--unit={unit}", "_TRANSPORT=stdout")


def cursor(system: BootedSystemd) -> str:
    return system.run("journalctl", "-n0", "--show-cursor", "-q").stdout.split("cursor: ")[-1].strip()


def test_the_readme_install_starts_a_service_that_serves_and_warns_of_nothing(service):
    # "enable --now" returned: Type=notify says it listens, so it answers at once.
    answer = ask(service)
    assert answer["status"] == 200 and answer["model"] == "gemini-2.0-flash"
    journal = service.journal("-u", "gatewayd")
    events = [json.loads(line) for line in journal.splitlines() if line.startswith("{")]
    assert events and not [e for e in events if e["log_level"]["name"] in ("warn", "error", "critical")], journal
    assert "Unable to write to plugin cache" not in journal and "Traceback" not in journal
    assert "PRIVATE KEY" not in service.journal("-b")
    warnings = service.journal("-b", "-p", "warning", "--grep", "gatewayd")
    assert warnings.strip() == "", warnings
    pid = service.run("systemctl", "show", "-P", "MainPID", "gatewayd").stdout.strip()
    limits = (service.root / f"proc/{pid}/limits").read_text()
    soft, hard = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
    assert soft == hard and int(soft) > 1024


@pytest.mark.parametrize("unit", ["gatewayd.service", "gatewayd@1.service"])
def test_systemd_analyze_security_rates_the_units_at_most_2(service, unit):
    done = service.run("systemd-analyze", "security", "--no-pager", unit)
    level = float(done.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])
    assert level <= 2.0, done.stdout


def test_a_port_already_taken_makes_start_fail_with_one_line(service):
    service.run("systemctl", "stop", "gatewayd")
    taker = subprocess.Popen(service.enter(
        sys.executable, "-c",
        f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {PORT})); s.listen(); print(1, flush=True); time.sleep(60)",
        mounts=False), stdout=subprocess.PIPE)
    try:
        assert taker.stdout.readline() == b"1\n"
        mark = cursor(service)
        started = service.run("systemctl", "start", "gatewayd", check=False)
        assert started.returncode != 0
        output = output_since(service, mark, "gatewayd")
        # Besides twistd's JSON log lines, one line, and no traceback.
        assert [line for line in output.splitlines() if not line.startswith("{")] == [
            "gatewayd: cannot listen: Couldn't listen on 127.0.0.1:8000: [Errno 98] Address already in use."
        ], output
    finally:
        taker.kill()
        taker.wait()


def test_an_unquoted_key_in_the_env_file_fails_start_with_one_line_and_no_restart(service):
    env = (service.root / "etc/gatewayd/gatewayd.env").read_text()
    # What the README warns against: the key's JSON without its single quotes.
    write(service, "/etc/gatewayd/gatewayd.env", env.replace("DECK_GEMINI_API_KEY='", "DECK_GEMINI_API_KEY=").replace("}'\n", "}\n"))
    mark = cursor(service)
    assert service.run("systemctl", "restart", "gatewayd", check=False).returncode != 0
    state = service.run("systemctl", "show", "-P", "ActiveState", "gatewayd").stdout.strip()
    assert state == "failed"  # exit status 78: not restarted
    journal = output_since(service, mark, "gatewayd")
    expected = (
        "gatewayd: configuration /etc/gatewayd is invalid: /etc/gatewayd/20-ai-proxy-advanced.yaml: "
        "plugins (ai-proxy-advanced): config.targets[0].auth: gcp_service_account_json is not valid JSON "
        "(only one line: in a systemd EnvironmentFile, put a multi-line key in single quotes)"
    )
    assert [line for line in journal.splitlines() if not line.startswith("{")] == [expected], journal
    assert "PRIVATE KEY" not in journal


def test_reload_applies_a_changed_model_before_systemctl_reload_returns(service):
    name, text = model_override("gemini-2.5-flash")
    write(service, f"/etc/gatewayd/{name}", text)
    service.run("systemctl", "reload", "gatewayd")
    assert ask(service)["model"] == "gemini-2.5-flash"


def test_a_broken_file_fails_reload_and_the_old_config_keeps_serving(service):
    name, text = model_override("gemini-2.5-flash")
    write(service, f"/etc/gatewayd/{name}", text)
    service.run("systemctl", "reload", "gatewayd")
    write(service, f"/etc/gatewayd/{name}", model_override("gemini-2.5-pro")[1])
    write(service, "/etc/gatewayd/85-broken.yaml", BROKEN)
    mark = cursor(service)
    reloaded = service.run("systemctl", "reload", "gatewayd", check=False)
    assert reloaded.returncode != 0
    journal = output_since(service, mark, "gatewayd")
    assert (
        "gatewayd: reload failed, still serving the previous configuration: /etc/gatewayd/85-broken.yaml: "
        "plugins[0] (file-log): config.colour: unknown field" in journal
    ), journal
    assert ask(service)["model"] == "gemini-2.5-flash"
    assert service.run("systemctl", "is-active", "gatewayd").stdout.strip() == "active"


def records(service: BootedSystemd, name: str) -> list[dict]:
    path = service.root / "var/log/gatewayd" / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_logrotate_moves_the_file_log_and_the_next_record_goes_to_a_new_file(service):
    if shutil.which("logrotate") is None:
        skip("logrotate is not installed (Debian: apt-get install logrotate); .ci/run installs it")
    write(service, "/etc/gatewayd/90-file-log.yaml",
          '_format_version: "3.0"\nplugins:\n  - name: file-log\n    config:\n      path: /var/log/gatewayd/claude.json\n')
    service.run("systemctl", "reload", "gatewayd")
    ask(service)
    wait_for(lambda: records(service, "claude.json"), what="the first record")

    service.run("logrotate", "--force", "/etc/logrotate.d/gatewayd")
    assert len(records(service, "claude.json.1")) == 1
    ask(service)
    new = wait_for(lambda: records(service, "claude.json"), what="a record in the new file")
    assert [r["response"]["status"] for r in new] == [200]
    assert len(records(service, "claude.json.1")) == 1


def test_stop_lets_a_stream_in_flight_finish(service):
    client = subprocess.Popen(
        service.enter(sys.executable, "-m", "tests.e2e.nsclient", "stream", PORT, mounts=False),
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    lines = []
    for line in client.stdout:
        lines.append(line)
        if "content_block_delta" in line:
            break
    started = time.monotonic()
    service.run("systemctl", "stop", "gatewayd")  # returns once the daemon has ended
    lines += client.stdout.readlines()
    assert client.wait(10) == 0
    assert time.monotonic() - started < 10
    events = [json.loads(line[6:])["type"] for line in lines if line.startswith("data: ")]
    assert events[-1] == "message_stop" and "error" not in events
    assert "First Crusade." in "".join(lines)


def test_socket_activation_with_no_worker_running_starts_one(service):
    service.run("systemctl", "start", "gatewayd.socket")  # Conflicts= stops gatewayd.service
    assert service.run("systemctl", "is-active", "gatewayd.service", "gatewayd@1.service", check=False).stdout.split() == [
        "inactive", "inactive"]
    assert ask(service)["status"] == 200
    assert service.run("systemctl", "is-active", "gatewayd@1.service").stdout.strip() == "active"


def test_two_socket_activated_workers_share_the_port_and_reload_synchronously(service):
    # The README's command, from "All cores".
    service.run("systemctl", "enable", "--now", "gatewayd.socket", "gatewayd@1", "gatewayd@2")
    assert service.run("systemctl", "is-active", "gatewayd@1", "gatewayd@2").stdout.split() == ["active", "active"]
    assert ask(service)["model"] == "gemini-2.0-flash"
    name, text = model_override("gemini-2.5-flash")
    write(service, f"/etc/gatewayd/{name}", text)
    service.run("systemctl", "reload", "gatewayd@1", "gatewayd@2")
    assert {ask(service)["model"] for _ in range(4)} == {"gemini-2.5-flash"}
    service.run("systemctl", "stop", "gatewayd@1")
    assert ask(service)["model"] == "gemini-2.5-flash"  # gatewayd@2 alone, on the same socket
    service.run("systemctl", "disable", "gatewayd.socket", "gatewayd@1", "gatewayd@2")
