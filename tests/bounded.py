"""Loops that end: a test that waits for the gateway to change its answer fails, not hangs."""

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=tuple)


def until_refused(send: Callable[[], T], attempts: int = 50) -> T:
    """Call ``send`` (returning ``(status, ...)``) until the status is not 200; fail after ``attempts``."""
    for _ in range(attempts):
        result = send()
        if result[0] != 200:
            return result
    raise AssertionError(f"still 200 after {attempts} requests: the limit never took effect")
