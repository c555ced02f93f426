"""Following the store until something is true: the one polling loop of `client wait`, `--wait` and `.wait()`."""
from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

POLL_INTERVAL_S = 0.5

T = TypeVar("T")
_NOTHING: Any = object()


class StillWaiting(TimeoutError):
    """The timeout passed first; `last` is the value read last."""

    def __init__(self, last: Any, timeout: float) -> None:
        super().__init__(f"still waiting after {timeout:g}s")
        self.last = last


def poll_until(read: Callable[[], T], finished: Callable[[T], bool], timeout: float | None,
               on_change: Callable[[T], None] | None = None, interval: float = POLL_INTERVAL_S) -> T:
    """Read every `interval` seconds until `finished(value)` and return that value; StillWaiting once
    `timeout` seconds (None: no limit) have passed. `on_change` gets the first value read and every
    one that differs (`!=`) from the value before it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    previous = _NOTHING
    while True:
        value = read()
        if on_change is not None and (previous is _NOTHING or value != previous):
            on_change(value)
        previous = value
        if finished(value):
            return value
        if deadline is not None and time.monotonic() >= deadline:
            raise StillWaiting(value, timeout)
        time.sleep(interval)
