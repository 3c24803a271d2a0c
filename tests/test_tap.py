"""``twistd gatewayd`` options that shape the listeners."""

from __future__ import annotations

import pytest
from twisted.python import usage

from gatewayd.daemon.tap import DEFAULT_BACKLOG, Options, with_backlog


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:8000:interface=127.0.0.1", "tcp:8000:interface=127.0.0.1:backlog=511"),
        ("tcp6:8000", "tcp6:8000:backlog=511"),
        ("unix:/run/gatewayd.sock", "unix:/run/gatewayd.sock:backlog=511"),
        ("tcp:8000:backlog=64", "tcp:8000:backlog=64"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),  # the socket unit's Backlog=
        ("adopt:fileno=3:domain=INET", "adopt:fileno=3:domain=INET"),
    ],
)
def test_the_backlog_goes_to_listeners_that_bind_unless_they_name_their_own(description, expected):
    assert with_backlog(description, 511) == expected


def test_the_default_backlog_is_a_production_one_and_at_least_1():
    options = Options()
    options.parseOptions([])
    assert options["backlog"] == DEFAULT_BACKLOG >= 4096
    with pytest.raises(usage.UsageError, match="--backlog"):
        Options().parseOptions(["--backlog", "0"])


def test_the_garbage_collector_leaves_the_start_alone_and_collects_young_objects_less_often():
    import gc

    from gatewayd.daemon.tap import GC_YOUNG_THRESHOLD, settle_garbage_collector

    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0  # what the start made is out of every collection
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert GC_YOUNG_THRESHOLD > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
