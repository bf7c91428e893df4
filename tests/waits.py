"""The one bounded poll of the test suite, for synchronous code that has no event to wait on.

Async tests bound their waits with `anyio.fail_after`; code with an event or a future waits on it with a
timeout. What is left (a container's log, a store row another process writes) is polled here: a short
interval, a hard deadline, and a failure that says what never happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.2) -> T:
    """Poll `check` until it returns something truthy, failing with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)
