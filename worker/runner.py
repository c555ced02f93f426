"""Adapts one job row to its core run function: claim, run, record, release the jobs that wait.

Every delivery of a message goes through `JobRunner.execute`; a message is only a wake-up. A
delivery for a job that is not queued is dropped, except for a running job whose lease has passed
(it is taken over, see liveness). The claim and every write of the run are fenced by the attempt
number; a run that finished keeps its result and retries recording it through a database blip
instead of being run again.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

from celery import Celery

from genq.core.cache import ModelCache
from genq.core.config import Settings
from genq.core.context import JobCancelled
from genq.core.kinds import params_from_json, run_function
from genq.core.store.artifacts import ArtifactStore
from genq.core.store.clock import db_now_plus
from genq.core.store.jobs import JobStore
from genq.core.store.states import JobStatus, TransitionError
from genq.worker.context import JobSuperseded, StoreContext, TimeLimitExceeded
from genq.worker.dependencies import release_dependents
from genq.worker import testing_hooks
from genq.worker.liveness import Heartbeat, take_over
from genq.worker.retry import retrying

log = logging.getLogger("genq.worker")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def prepare_torch(settings: Settings) -> str:
    """The device jobs run on, and torch's CPU threads. Only when a job runs: a worker never
    touches CUDA at import."""
    import torch

    if settings.torch_threads > 0 and torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if settings.device != "auto":
        return settings.device
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Outcome:
    status: JobStatus
    values: dict[str, Any]
    reason: str | None


@dataclass
class JobRunner:
    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    cache: ModelCache
    app: Celery  # to wake the jobs that waited for a finished one

    def execute(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            log.warning("message for unknown job %s dropped", job_id)
            return
        me = worker_name()
        if job.status == JobStatus.RUNNING.value:
            if not self.store.lease_expired(job_id):
                log.info("job %s is running on %s under a live lease: duplicate message dropped", job_id, job.worker_host)
                return
            if take_over(self.app, self.store, job, self.settings, me) is not JobStatus.QUEUED:
                return
        elif job.status != JobStatus.QUEUED.value:
            log.info("job %s is %s: message dropped", job_id, job.status)
            return
        elif self.store.not_due_yet(job_id):
            log.info("job %s retries later: message dropped (the reconciler sends it when due)", job_id)
            return
        try:
            attempt = self.store.claim(job_id, me, self.settings.lease_s)
        except TransitionError:
            log.info("job %s was claimed by another delivery", job_id)
            return
        # The heartbeat runs until the end is recorded: a run retrying its final write keeps its lease.
        with Heartbeat(self.store, job_id, attempt, self.settings) as heartbeat:
            outcome = self._run(job_id, attempt, heartbeat)
            if outcome is not None:
                self._record(job_id, attempt, me, outcome)

    def _run(self, job_id: str, attempt: int, heartbeat: Heartbeat) -> Outcome | None:
        """Run the job's function; None when this run lost the job (nothing of it is recorded)."""
        job = self.store.get(job_id)
        started = time.monotonic()
        deadline = started + job.time_limit_s if job.time_limit_s else None
        try:
            ctx = StoreContext(job_id, attempt, self.store, self.artifacts, heartbeat,
                               device=prepare_torch(self.settings), data_root=self.settings.data_root,
                               cache=self.cache, retry_for_s=self.settings.retry_for_s, deadline=deadline)
            if attempt > 1:
                ctx.log(f"attempt {attempt}: resuming where the previous run left off, if it saved state")
            params = params_from_json(job.kind, job.params, self.settings)
            result = run_function(job.kind)(params, ctx)
            outcome = Outcome(JobStatus.SUCCEEDED, {"result": result or {}, "error": None}, None)
        except JobSuperseded as exc:
            log.warning("job %s: %s", job_id, exc)
            return None
        except TimeLimitExceeded as exc:
            outcome = Outcome(JobStatus.FAILED, {"error": str(exc)}, str(exc))
        except JobCancelled as exc:
            outcome = Outcome(JobStatus.CANCELLED, {"error": str(exc)}, str(exc))
        except Exception as exc:
            message = one_line(exc)
            self._safe_log(job_id, attempt, traceback.format_exc())
            outcome = self._retry_or_fail(job, message)
        ended = "failed, to be retried" if outcome.status is JobStatus.QUEUED else outcome.status.value
        outcome.values["progress_message"] = f"{ended} in {time.monotonic() - started:.1f}s"
        return outcome

    def _retry_or_fail(self, job, message: str) -> Outcome:
        """A failed run: queued again after a back-off while --retries are left, else failed."""
        if job.failed_runs >= job.retries:
            return Outcome(JobStatus.FAILED, {"error": message}, message)
        delay = self.settings.retry_backoff_s * 2 ** job.failed_runs
        reason = f"{message}; retry {job.failed_runs + 1} of {job.retries} in {delay:g}s"
        return Outcome(JobStatus.QUEUED, {"error": message, "failed_runs": job.failed_runs + 1,
                                          "run_after": db_now_plus(delay), "last_sent_at": None}, reason)

    def _record(self, job_id: str, attempt: int, me: str, outcome: Outcome) -> None:
        """The final transition, retried through a database blip with the result kept in memory."""
        def record() -> None:
            self.store.transition(job_id, JobStatus.RUNNING, outcome.status, worker=me, reason=outcome.reason,
                                  expected_attempts=attempt, values=outcome.values)
        try:
            retrying(record, self.settings.retry_for_s, f"recording the end of job {job_id}")
        except TransitionError as exc:
            log.warning("job %s finished on this worker but was no longer its (%s)", job_id, exc)
            return
        log.info("job %s %s", job_id, outcome.status.value)
        if outcome.status is JobStatus.QUEUED:
            return  # a retry: the reconciler sends it once its back-off has passed
        testing_hooks.pause_at("after-finish", job_id)
        release_dependents(self.app, self.store, job_id, me, self.settings.retry_for_s)

    def _safe_log(self, job_id: str, attempt: int, message: str) -> None:
        log.error("[%s] %s", job_id[:8], message)
        try:
            self.store.append_log(job_id, "error", message, attempt)
        except Exception:
            log.exception("could not store a log line for job %s", job_id)
