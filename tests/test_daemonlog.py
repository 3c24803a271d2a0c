"""The daemon's own log: one eventAsJSON line per event, reopened by the SIGHUP event."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, eventsFromJSONLogFile

from gatewayd.daemon.jsonlog import JSONLinesLog, observer


def test_events_are_json_lines_with_their_fields_and_text(tmp_path):
    path = tmp_path / "gatewayd.log"
    log = Logger(namespace="test", observer=observer({"GATEWAYD_LOG_FILE": str(path)}))
    log.info("Configuration reloaded from {files}", files="a.yaml")
    log.error("not loaded: {problem}", problem="x.yaml: plugins (file-log): colour")
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first["files"] == "a.yaml" and first["text"] == "Configuration reloaded from a.yaml"
    assert second["log_level"]["name"] == "error" and second["problem"].startswith("x.yaml")
    # Twisted reads them back as events.
    with open(path) as f:
        assert [e["log_format"] for e in eventsFromJSONLogFile(f, recordSeparator="")][0].startswith("Configuration")


def test_the_reopen_event_starts_the_new_file(tmp_path):
    path = tmp_path / "gatewayd.log"
    log = Logger(namespace="test", observer=JSONLinesLog(str(path)))
    log.info("before")
    path.rename(tmp_path / "gatewayd.log.1")
    log.info("SIGHUP: reopening", gatewayd_reopen=True)
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == ["SIGHUP: reopening"]
    assert len((tmp_path / "gatewayd.log.1").read_text().splitlines()) == 1


def test_without_a_file_it_writes_to_stdout(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    Logger(namespace="test", observer=observer({})).info("hello {who}", who="journal")
    assert json.loads(out.getvalue())["text"] == "hello journal"
