"""Sending a job's message (only its id) and releasing the jobs that wait for another."""
from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import OperationalError

from genq.core.config import redact_url
from genq.core.store.jobs import JobStore
from genq.core.store.models import Job
from genq.core.store.states import JobStatus
from genq.worker.app import RUN_JOB_TASK

log = logging.getLogger("genq.dispatch")

PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


class BrokerUnavailable(RuntimeError):
    pass


def send(app: Celery, job_id: str) -> None:
    try:
        app.send_task(RUN_JOB_TASK, args=[job_id], retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {redact_url(app.conf.broker_url)}: {exc}") from exc


def dispatch_if_ready(app: Celery, store: JobStore, job: Job, worker: str | None = None) -> JobStatus:
    """Send a queued job whose dependency (if any) succeeded; fail it if the dependency did not.

    Called by the client after it committed the job, and by a worker after a job finished;
    `mark_dispatched` lets exactly one of them send. A job whose dependency is still
    unfinished is left queued: the dependency's worker releases it.
    """
    if job.depends_on:
        dependency = store.get(job.depends_on)
        state = JobStatus(dependency.status) if dependency else JobStatus.FAILED
        if state in (JobStatus.QUEUED, JobStatus.RUNNING):
            return JobStatus.QUEUED
        if state is not JobStatus.SUCCEEDED:
            reason = f"dependency {job.depends_on} {'does not exist' if dependency is None else state.value}"
            fail_with_dependents(store, job.id, reason, worker)
            return JobStatus.FAILED
    if store.mark_dispatched(job.id):
        try:
            send(app, job.id)
        except BrokerUnavailable as exc:
            store.fail_if_queued(job.id, str(exc), worker)
            raise
    return JobStatus.QUEUED


def fail_with_dependents(store: JobStore, job_id: str, reason: str, worker: str | None = None) -> None:
    store.fail_if_queued(job_id, reason, worker)
    for waiting in store.waiting_on(job_id):
        fail_with_dependents(store, waiting.id, f"dependency {job_id} failed", worker)


def release_dependents(app: Celery, store: JobStore, job_id: str, worker: str | None = None) -> None:
    for waiting in store.waiting_on(job_id):
        try:
            dispatch_if_ready(app, store, waiting, worker)
        except BrokerUnavailable:
            log.exception("could not send job %s, which waited for %s", waiting.id, job_id)
