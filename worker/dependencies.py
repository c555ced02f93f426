"""Jobs that wait for another job (`--after`, `--model`): registered, released exactly once, or failed.

A job that depends on an unfinished job is stored `waiting`. When its dependency ends, whoever
notices first (the dependency's worker, the submitting client, or any worker's reconciler) moves it
`waiting -> queued` with a conditional transition (so exactly one of them wins and sends its
wake-up) or, if the dependency did not succeed, fails it and everything that waits on it.
"""
from __future__ import annotations

import logging

from celery import Celery

from genq.core.params import JobParams, RunOptions
from genq.core.store.clock import db_now_plus
from genq.core.store.jobs import JobStore
from genq.core.store.models import Job
from genq.core.store.states import JobStatus, TransitionError
from genq.worker import testing_hooks
from genq.worker.dispatch import BrokerUnavailable, send_queued
from genq.worker.retry import is_transient, retrying

log = logging.getLogger("genq.dependencies")


def submit(app: Celery, store: JobStore, params: JobParams, depends_on: str | None,
           retry_for_s: float = 0.0, options: RunOptions | None = None) -> tuple[Job, str | None]:
    """Store a job (queued, or waiting for `depends_on`) and wake a worker when it is ready.

    Returns the job and, when its wake-up could not be sent, why. Nothing is lost then: the job is
    stored, and a worker's reconciler sends it once the broker answers (as it does when this
    process is killed between the insert and the send). Each step retries through a database or broker
    blip for `retry_for_s`; once the row is stored, a blip that outlasts it leaves the job to the reconciler.
    """
    job = retrying(lambda: store.create(params, depends_on, options), retry_for_s, "storing the job")
    if not job.created:
        return job, None  # its idempotency key was used before: that job, as it is
    testing_hooks.pause_at("after-insert", job.id)
    unsent = None
    try:
        if job.status == JobStatus.WAITING.value:
            release_if_ready(app, store, job, retry_for_s=retry_for_s)
        else:
            send_queued(app, store, [job.id], retry_for_s)
    except BrokerUnavailable as exc:
        unsent = str(exc)
    except Exception as exc:
        if not is_transient(exc):
            raise
        unsent = f"the store stopped answering after the job was stored: {type(exc).__name__}"
    try:
        return retrying(lambda: store.get(job.id), retry_for_s, "reading the job back"), unsent
    except Exception as exc:
        if not is_transient(exc):
            raise
        return job, unsent  # as it was stored


def release_if_ready(app: Celery, store: JobStore, job: Job, worker: str | None = None, retry_for_s: float = 0.0) -> None:
    """A waiting job whose dependency has ended: queue and send it, or fail its chain."""
    dependency = store.get(job.depends_on) if job.depends_on else None
    state = JobStatus(dependency.status) if dependency else JobStatus.FAILED
    if not state.finished:
        return
    if state is JobStatus.SUCCEEDED:
        try:
            store.transition(job.id, JobStatus.WAITING, JobStatus.QUEUED, worker=worker,
                             reason=f"dependency {job.depends_on} succeeded", values={"last_sent_at": db_now_plus(0)})
        except TransitionError:
            return  # released (or cancelled) by someone else
        send_queued(app, store, [job.id], retry_for_s)
    else:
        reason = f"dependency {job.depends_on} {'does not exist' if dependency is None else state.value}"
        fail_chain(store, job.id, reason, worker)


def release_dependents(app: Celery, store: JobStore, job_id: str, worker: str | None = None,
                       retry_for_s: float = 0.0) -> None:
    """After `job_id` ended: release or fail each job waiting for it."""
    for waiting in store.waiting_on(job_id):
        release_if_ready(app, store, waiting, worker, retry_for_s)


def fail_chain(store: JobStore, job_id: str, reason: str, worker: str | None = None) -> None:
    """Fail a waiting job and all that wait on it, iteratively (chains can be thousands long)."""
    pending = [(job_id, reason)]
    while pending:
        current, why = pending.pop()
        try:
            store.transition(current, JobStatus.WAITING, JobStatus.FAILED, worker=worker, reason=why,
                             values={"error": why})
        except TransitionError:
            pass  # not waiting any more: released, cancelled or failed by someone else
        pending += [(waiting.id, f"dependency {current} failed") for waiting in store.waiting_on(current)]
