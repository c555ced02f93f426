"""The one polling loop: the final value, a call on each change, and the last value on timeout."""
from __future__ import annotations

import pytest

from genq.core.polling import StillWaiting, poll_until


def test_it_returns_the_value_that_finishes_and_reports_only_changes():
    values = iter([1, 1, 2, 2, 3])
    seen = []
    assert poll_until(lambda: next(values), lambda value: value == 3, None, on_change=seen.append, interval=0.001) == 3
    assert seen == [1, 2, 3]


def test_a_timeout_raises_a_timeout_error_carrying_the_last_value():
    with pytest.raises(TimeoutError) as raised:
        poll_until(lambda: "queued", lambda value: False, 0.05, interval=0.01)
    assert isinstance(raised.value, StillWaiting) and raised.value.last == "queued"
