"""The grammar checker itself: it must refuse each way a stream can be out of order."""

import pytest

from tests.grammar import check_stream

START = ("message_start", {"type": "message_start", "message": {}})
PING = ("ping", {"type": "ping"})


def block(index, kind="text"):
    return [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": kind}}),
        ("content_block_delta", {"type": "content_block_delta", "index": index,
                                 "delta": {"type": {"text": "text_delta", "tool_use": "input_json_delta"}[kind]}}),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


DELTA = ("message_delta", {"type": "message_delta", "delta": {}})
STOP = ("message_stop", {"type": "message_stop"})
GOOD = [START, PING, *block(0), *block(1, "tool_use"), DELTA, STOP]


def test_a_well_formed_stream_passes():
    check_stream(GOOD)
    check_stream([START, *block(0), ("error", {"type": "error", "error": {}})])


@pytest.mark.parametrize(
    "events, complaint",
    [
        ([*GOOD, STOP], "after the end"),
        ([START, *block(0)[:2], *block(0)[2:], block(0)[1], DELTA, STOP], "is not open"),
        ([START, *block(1), DELTA, STOP], "expected index 0"),
        ([START, *block(0)[:2], *block(1), DELTA, STOP], "while block 0 is open"),
        ([START, *block(0), DELTA, DELTA, STOP], "a second message_delta"),
        ([START, *block(0), STOP], "without a message_delta"),
        ([START, *block(0), DELTA], "ends without message_stop"),
        ([PING, START, DELTA, STOP], "first event is ping"),
        ([START, *block(0), DELTA, *block(1), STOP], "after message_delta"),
        ([START, block(0)[0], ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                       "delta": {"type": "input_json_delta"}}),
          block(0)[2], DELTA, STOP], "input_json_delta in a text block"),
    ],
)
def test_each_disorder_is_refused(events, complaint):
    with pytest.raises(AssertionError, match=complaint):
        check_stream(events)
