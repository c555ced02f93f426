"""Adapts one job row to its core run function: claim, run, record, finish, release dependents.

Every delivery of a message goes through `JobRunner.execute`. It is safe to deliver a job twice:
the conditional transitions let exactly one delivery run it, and a job whose worker died (its
heartbeat went stale) is taken over by the next delivery, up to `max_attempts` runs.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from genq.core.cache import ModelCache
from genq.core.config import Settings
from genq.core.context import JobCancelled
from genq.core.kinds import params_from_json, run_function
from genq.core.store.artifacts import ArtifactStore
from genq.core.store.jobs import JobStore
from genq.core.store.models import Job
from genq.core.store.states import JobStatus, TransitionError
from genq.worker.context import Heartbeat, JobSuperseded, StoreContext

log = logging.getLogger("genq.worker")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_age_s(job: Job) -> float:
    if job.heartbeat_at is None:
        return float("inf")
    beat = job.heartbeat_at if job.heartbeat_at.tzinfo else job.heartbeat_at.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - beat).total_seconds()


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


@dataclass
class JobRunner:
    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    cache: ModelCache
    release: Callable[[str], None]  # sends the jobs that waited for this one (or fails them)

    def execute(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            log.warning("message for unknown job %s dropped", job_id)
            return
        status = JobStatus(job.status)
        if status is JobStatus.RUNNING:
            job = self._take_over_if_abandoned(job)
            if job is None:
                return
            status = JobStatus(job.status)
        if status is not JobStatus.QUEUED:
            log.info("job %s is %s: duplicate message dropped", job_id, status.value)
            return
        if job.depends_on:
            dependency = self.store.get(job.depends_on)
            if dependency is None or dependency.status != JobStatus.SUCCEEDED.value:
                log.warning("job %s delivered before its dependency %s succeeded: dropped", job_id, job.depends_on)
                return
        me = worker_name()
        try:
            self.store.transition(job_id, JobStatus.QUEUED, JobStatus.RUNNING, worker=me,
                                  reason=f"attempt {job.attempts + 1}", values={"cancel_requested": False})
        except TransitionError:
            log.info("job %s was taken by another delivery", job_id)
            return
        self._run(job_id, attempt=job.attempts + 1, worker=me)

    def _take_over_if_abandoned(self, job: Job) -> Job | None:
        age = heartbeat_age_s(job)
        if age < self.settings.stale_after_s:
            log.info("job %s is running on %s (heartbeat %.1fs ago): duplicate message dropped",
                     job.id, job.worker_host, age)
            return None
        me = worker_name()
        lost = f"worker {job.worker_host} lost (no heartbeat for {age:.0f}s)"
        try:
            if job.attempts >= self.settings.max_attempts:
                reason = f"{lost}; gave up after {job.attempts} attempts"
                self.store.transition(job.id, JobStatus.RUNNING, JobStatus.FAILED, worker=me, reason=reason,
                                      expected_attempts=job.attempts, values={"error": reason})
                self.release(job.id)
                return None
            self.store.transition(job.id, JobStatus.RUNNING, JobStatus.QUEUED, worker=me,
                                  reason=f"{lost}; requeued", expected_attempts=job.attempts)
        except TransitionError:
            return None
        return self.store.get(job.id)

    def _run(self, job_id: str, attempt: int, worker: str) -> None:
        job = self.store.get(job_id)
        started = time.monotonic()
        with Heartbeat(self.store, job_id, attempt, self.settings.heartbeat_interval_s) as heartbeat:
            try:
                ctx = StoreContext(job_id, self.store, self.artifacts, heartbeat,
                                   device=prepare_torch(self.settings),
                                   data_root=self.settings.data_root, cache=self.cache)
                if attempt > 1:
                    ctx.log(f"attempt {attempt}: resuming where the previous worker left off, if it saved state")
                spec = params_from_json(job.kind, job.params, self.settings)
                result = run_function(job.kind)(spec, ctx)
                outcome, values, reason = JobStatus.SUCCEEDED, {"result": result or {}}, None
            except JobSuperseded as exc:
                log.warning("job %s: %s", job_id, exc)
                return
            except JobCancelled as exc:
                outcome, values, reason = JobStatus.CANCELLED, {"error": str(exc)}, str(exc)
            except Exception as exc:
                message = one_line(exc)
                self._safe_log(job_id, traceback.format_exc(), "error")
                outcome, values, reason = JobStatus.FAILED, {"error": message}, message
        values["progress_message"] = f"{outcome.value} in {time.monotonic() - started:.1f}s"
        try:
            self.store.transition(job_id, JobStatus.RUNNING, outcome, worker=worker, reason=reason,
                                  expected_attempts=attempt, values=values)
        except TransitionError as exc:
            log.warning("job %s finished on this worker but could not be recorded: %s", job_id, exc)
            return
        log.info("job %s %s", job_id, outcome.value)
        self.release(job_id)

    def _safe_log(self, job_id: str, message: str, level: str) -> None:
        log.log(logging.getLevelName(level.upper()), "[%s] %s", job_id[:8], message)
        try:
            self.store.append_log(job_id, level, message)
        except Exception:
            log.exception("could not store a log line for job %s", job_id)
