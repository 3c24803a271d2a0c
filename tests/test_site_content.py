"""Request bodies as the listener keeps them: in memory when small, on disk when large, counted past the limit."""

from __future__ import annotations

import io

import pytest

from gatewayd import site
from gatewayd.site import BoundedContent, body_size, request_body


class _Request:
    def __init__(self, content: BoundedContent) -> None:
        self.content = content


def _filled(limit: int, total: int, piece: int = 4096) -> BoundedContent:
    content = BoundedContent(limit, None)  # chunked: no length announced
    sent = bytes(range(256)) * (total // 256 + 1)
    for start in range(0, total, piece):
        content.write(sent[start:min(total, start + piece)])
    return content


@pytest.mark.parametrize("total", [0, 1, site._IN_MEMORY, site._IN_MEMORY + 1, 3 * site._IN_MEMORY + 7])
def test_a_body_reads_back_whole_wherever_it_is_kept(total):
    content = _filled(10 * site._IN_MEMORY, total)
    expected = (bytes(range(256)) * (total // 256 + 1))[:total]
    assert body_size(_Request(content)) == total
    assert request_body(_Request(content)) == expected
    # Small bodies stay in memory; large ones go to a temporary file, not the heap.
    assert isinstance(content._file, io.BytesIO) == (total <= site._IN_MEMORY)
    content.close()


def test_past_the_limit_a_body_is_only_counted():
    content = _filled(site._IN_MEMORY * 2, site._IN_MEMORY * 2 + 10)
    assert content.over and content.tell() == site._IN_MEMORY * 2 + 10
    assert request_body(_Request(content)) == b""
    announced = BoundedContent(100, 101)
    assert announced.over
