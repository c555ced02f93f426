"""Abandoned jobs: a running job whose heartbeat went stale lost its worker (SIGKILL, power).

Its message may sit unacknowledged in Redis until the visibility timeout (hours). A live worker
looks for such jobs every few seconds and sends their id again; the runner then takes the job
over with a conditional transition, so several workers doing this at once is harmless.
"""
from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from genq.core.store.jobs import JobStore
from genq.core.store.models import Job
from genq.core.store.states import JobStatus
from genq.worker.dispatch import BrokerUnavailable, send
from genq.worker.runner import heartbeat_age_s

log = logging.getLogger("genq.recovery")


def abandoned_jobs(store: JobStore, stale_after_s: float) -> list[Job]:
    with store.sessions() as session:
        running = session.scalars(select(Job).where(Job.status == JobStatus.RUNNING.value)).all()
    return [job for job in running if heartbeat_age_s(job) >= stale_after_s]


class AbandonedJobSweeper:
    def __init__(self, app, store: JobStore, stale_after_s: float) -> None:
        self.app, self.store, self.stale_after_s = app, store, stale_after_s
        self.interval_s = max(1.0, stale_after_s / 2)
        self._stop = threading.Event()
        self._seen: dict[str, int] = {}  # job id -> attempts when last re-sent
        self._thread = threading.Thread(target=self._loop, name="abandoned-job-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sweep(self) -> None:
        for job in abandoned_jobs(self.store, self.stale_after_s):
            if self._seen.get(job.id) == job.attempts:
                continue  # already re-sent for this attempt; its delivery is on its way
            log.warning("job %s: worker %s stopped sending heartbeats; sending it again", job.id, job.worker_host)
            try:
                send(self.app, job.id)
                self._seen[job.id] = job.attempts
            except BrokerUnavailable:
                log.exception("could not re-send abandoned job %s", job.id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("abandoned-job sweep failed")
