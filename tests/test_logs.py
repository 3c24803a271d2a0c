"""file-log's JSON lines: batched per reactor turn, reopened on demand."""

import errno
import json
import os

from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gatewayd.plugins import file_log
from gatewayd.plugins.file_log import FileLog, Rotation


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


class Disk:
    """A file whose disk has ``room`` bytes left: a write takes what fits, then ENOSPC."""

    def __init__(self, path, space):
        self.real = open(path, "ab", buffering=0)
        self.space = space

    def write(self, data):
        if self.space["room"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = data[: self.space["room"]]
        self.space["room"] -= len(taken)
        return self.real.write(taken)

    def fileno(self):
        return self.real.fileno()

    def tell(self):
        return self.real.tell()

    def close(self):
        self.real.close()


def full_disk(monkeypatch, room):
    disk = {"room": room}
    monkeypatch.setattr(file_log, "_open_append", lambda path: Disk(path, disk))
    return disk


def test_a_full_disk_tears_no_line_and_the_backlog_is_written_when_space_returns(tmp_path, monkeypatch):
    clock, reports = Clock(), []
    path = tmp_path / "claude.json"
    disk = full_disk(monkeypatch, room=30)
    log = FileLog.open(str(path), clock, report=lambda *args: reports.append(args))
    with capturedLogs() as events:
        for n in range(5):
            log.write({"n": n, "pad": "x"})  # 18 bytes a line: one line and 12 bytes of the next fit
        clock.advance(0)
        assert lines(path) == [{"n": 0, "pad": "x"}]  # the part of the second line was cut off
        assert path.read_bytes().endswith(b"\n") and log.file.backlog == 4
        log.write({"n": 5, "pad": "x"})
        clock.advance(0)
        clock.advance(1)
        assert log.file.backlog == 5 and len(lines(path)) == 1
        disk["room"] = 10_000
        clock.advance(1)
    assert [r["n"] for r in lines(path)] == [0, 1, 2, 3, 4, 5]
    assert log.file.backlog == 0 and log.file.lost == 0
    assert reports[-1] == (str(path), 0, 0)
    texts = [e["log_format"] for e in events]
    assert sum("cannot write" in t for t in texts) == 1 and sum("again after" in t for t in texts) == 1


def test_records_past_the_backlog_bound_are_counted_lost(tmp_path, monkeypatch):
    clock, reports = Clock(), []
    path = tmp_path / "claude.json"
    disk = full_disk(monkeypatch, room=0)
    log = FileLog.open(str(path), clock, backlog_limit=40, report=lambda *args: reports.append(args))
    with capturedLogs() as events:
        for n in range(5):
            log.write({"n": n, "pad": "x"})
            clock.advance(0)
        assert log.file.backlog == 2 and log.file.lost == 3
        assert sum(lost for _, lost, _ in reports) == 3
        disk["room"] = 10_000
        clock.advance(1)
    assert [r["n"] for r in lines(path)] == [0, 1]
    recovered = [e for e in events if "again after" in e["log_format"]]
    assert len(recovered) == 1 and recovered[0]["lost"] == 3
    assert sum("backlog" in e["log_format"] and "full" in e["log_format"] for e in events) == 1


def test_what_is_still_unwritten_at_close_is_counted_lost(tmp_path, monkeypatch):
    clock, reports = Clock(), []
    full_disk(monkeypatch, room=0)
    log = FileLog.open(str(tmp_path / "claude.json"), clock, report=lambda *args: reports.append(args))
    log.write({"n": 1})
    log.file.close()
    assert log.file.lost == 1 and sum(lost for _, lost, _ in reports) == 1
    assert not clock.getDelayedCalls()
