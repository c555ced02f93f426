"""Fault-injection points for the soak and the lifecycle tests: imported only when a test asks.

With GENQ_TEST_PAUSE_AT set to a point's name, the process writes the job id to the file named by
GENQ_TEST_PAUSE_FILE and sleeps there until it is killed: a test can kill it in that exact window.
With GENQ_TEST_PAUSE_S too, it goes on after that many seconds: a test can break something under it.
The lifecycle engine imports this module only when GENQ_TEST_PAUSE_AT is set (see lifecycle.fault_point).
Points: after-insert (a submit stored its job, before its wake-up), after-finish (a run's end is
committed, before its dependants are released), after-cancel (a cancel is committed, before the
waiting jobs are failed), inside-write (a run's writes are made, before their transaction commits:
the process holds the job's row lock).
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def pause_at(point: str, job_id: str) -> None:
    if os.environ.get("GENQ_TEST_PAUSE_AT") != point:
        return
    marker = os.environ.get("GENQ_TEST_PAUSE_FILE")
    if marker:
        Path(marker).write_text(job_id)
    if (seconds := os.environ.get("GENQ_TEST_PAUSE_S")):
        time.sleep(float(seconds))
        return
    while True:
        time.sleep(3600)
