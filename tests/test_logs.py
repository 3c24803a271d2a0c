"""file-log's JSON lines: batched per reactor turn, reopened on demand."""

import json
import os

from twisted.internet.task import Clock

from gatewayd.plugins.file_log import FileLog, Rotation, redact_headers


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_records_are_written_once_per_reactor_turn(tmp_path):
    clock = Clock()
    log = FileLog.open(str(tmp_path / "claude.json"), clock)
    log.write({"n": 1})
    log.write({"n": 2, "text": "Anna Komnēnē"})
    assert not (tmp_path / "claude.json").exists()
    clock.advance(0)
    assert lines(tmp_path / "claude.json") == [{"n": 1}, {"n": 2, "text": "Anna Komnēnē"}]


def test_reopen_follows_a_rename(tmp_path):
    clock = Clock()
    path = tmp_path / "claude.json"
    log = FileLog.open(str(path), clock)
    log.write({"n": 1})
    clock.advance(0)
    os.rename(path, tmp_path / "claude.json.1")
    log.file.reopen()
    log.write({"n": 2})
    clock.advance(0)
    assert lines(tmp_path / "claude.json.1") == [{"n": 1}]
    assert lines(path) == [{"n": 2}]


def test_kong_reopen_option_reopens_every_batch(tmp_path):
    clock = Clock()
    path = tmp_path / "claude.json"
    log = FileLog.open(str(path), clock, reopen=True)
    log.write({"n": 1})
    clock.advance(0)
    os.rename(path, tmp_path / "old.json")
    log.write({"n": 2})
    clock.advance(0)
    assert lines(path) == [{"n": 2}]


def test_close_flushes_what_is_buffered(tmp_path):
    log = FileLog.open(str(tmp_path / "x.json"), Clock())
    log.write({"n": 1})
    log.file.close()
    assert lines(tmp_path / "x.json") == [{"n": 1}]


def test_secret_headers_are_redacted():
    headers = redact_headers({"authorization": "Bearer x", "x-api-key": "k", "user-agent": "claude-cli"})
    assert headers == {"authorization": "REDACTED", "x-api-key": "REDACTED", "user-agent": "claude-cli"}


def test_size_rotation_keeps_the_configured_number_of_files(tmp_path):
    clock = Clock()
    path = tmp_path / "claude.json"
    log = FileLog.open(str(path), clock, rotation=Rotation(max_bytes=20, keep=2))
    for n in range(4):
        log.write({"n": n, "pad": "xxxxxx"})  # 22 bytes a line: every record fills a file
        clock.advance(0)
    assert not path.exists()
    assert lines(tmp_path / "claude.json.1") == [{"n": 3, "pad": "xxxxxx"}]
    assert lines(tmp_path / "claude.json.2") == [{"n": 2, "pad": "xxxxxx"}]
    assert not (tmp_path / "claude.json.3").exists()
    log.write({"n": 4})
    clock.advance(0)
    assert lines(path) == [{"n": 4}]
