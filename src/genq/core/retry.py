"""Transient failures: a database or broker blip is retried with back-off for a bounded time.

Only errors that can pass are retried (lost connections, lock timeouts, a server restarting);
anything else, or the same error past the deadline, is raised to the caller.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger("genq.retry")

T = TypeVar("T")
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 2.0


def is_transient(error: BaseException | None) -> bool:
    """A failure that can pass by itself (also when it is the cause of another error)."""
    if error is None:
        return False
    if isinstance(error, OperationalError):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (BrokerOperationalError, ConnectionError, TimeoutError)):
        return True
    return is_transient(error.__cause__)


def retrying(action: Callable[[], T], for_s: float, what: str) -> T:
    """`action()`, again after each transient failure until `for_s` seconds have passed."""
    deadline = time.monotonic() + for_s
    delay = FIRST_DELAY_S
    while True:
        try:
            return action()
        except Exception as error:
            if not is_transient(error) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, type(error).__name__, delay)
        time.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)
