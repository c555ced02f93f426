"""Adapts one job row to its core run function: claim, run, record, release the jobs that wait.

Every delivery of a message goes through `JobRunner.execute`; a message is only a wake-up. A
delivery for a job that is not queued is dropped, except for a running job whose lease has passed
(it is taken over, see liveness). The claim and every write of the run are fenced by the attempt
number; a run that finished keeps its result and retries recording it through a database blip
instead of being run again.
"""
from __future__ import annotations

import logging
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from celery import Celery

from genq.core.cache import ModelCache
from genq.core.config import Settings
from genq.core.context import JobCancelled
from genq.core.kinds import KINDS, batch_function, params_from_json, run_function
from genq.core.store.artifacts import ArtifactStore
from genq.core.store.clock import db_now_plus
from genq.core.store.jobs import JobStore
from genq.core.store.states import JobStatus, TransitionError
from genq.worker.context import JobSuperseded, StoreContext, TimeLimitExceeded
from genq.worker.dependencies import release_dependents
from genq.worker import testing_hooks
from genq.worker.liveness import Heartbeat, take_over
from genq.worker.presence import Presence, device_label
from genq.worker.retry import retrying

log = logging.getLogger("genq.worker")


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
    presence: Presence | None = None  # this worker's registry row, when it runs as a worker

    @property
    def me(self) -> str:
        return self.settings.worker_name

    def execute(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            log.warning("message for unknown job %s dropped", job_id)
            return
        me = self.me
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
        device = prepare_torch(self.settings)
        where = self._where(device)
        try:
            attempt = self.store.claim(job_id, me, self.settings.lease_s, where)
        except TransitionError:
            log.info("job %s was claimed by another delivery", job_id)
            return
        # Every claimed job keeps its lease from here: its heartbeat runs until its end is recorded
        # (a run retrying its final write keeps its lease), or, in a batch, until that job ends.
        with ExitStack() as leases:
            heartbeats = {job_id: leases.enter_context(Heartbeat(self.store, job_id, attempt, self.settings))}
            members = [(job_id, attempt), *self._companions(job, where)]
            for companion_id, companion_attempt in members[1:]:
                heartbeats[companion_id] = leases.enter_context(
                    Heartbeat(self.store, companion_id, companion_attempt, self.settings))
            if self.presence:
                self.presence.busy(job_id)
            try:
                if len(members) == 1:
                    self._run_alone(job_id, attempt, device, heartbeats[job_id])
                else:
                    self._run_together(job.kind, members, device, heartbeats)
            finally:
                if self.presence:
                    self.presence.idle(len(members))

    def _where(self, device: str) -> str:
        """The device of a claimed run as the job's history shows it: "cuda:0 (NVIDIA H100 80GB HBM3)", "cpu"."""
        identity = self.presence.identity if self.presence else None
        if identity is None:
            return device_label(device)
        return f"{identity.device} ({identity.device_name})" if identity.device.startswith("cuda") else identity.device

    # -- one job -------------------------------------------------------------------------
    def _run_alone(self, job_id: str, attempt: int, device: str, heartbeat: Heartbeat) -> None:
        job = self.store.get(job_id)
        started = time.monotonic()
        try:
            ctx = self._context(job, attempt, heartbeat, device)
            params = params_from_json(job.kind, job.params, self.settings)
            result = run_function(job.kind)(params, ctx) or {}
        except Exception as exc:
            result = exc
        self._finish(job, attempt, self._outcome(job, attempt, result, started))

    def _context(self, job, attempt: int, heartbeat: Heartbeat, device: str) -> StoreContext:
        deadline = time.monotonic() + job.time_limit_s if job.time_limit_s else None
        ctx = StoreContext(job.id, attempt, self.store, self.artifacts, heartbeat, device=device,
                           data_root=self.settings.data_root, cache=self.cache,
                           retry_for_s=self.settings.retry_for_s, deadline=deadline,
                           compile_models=self.settings.sd_compile)
        if attempt > 1:
            ctx.log(f"attempt {attempt}: resuming where the previous run left off, if it saved state")
        return ctx

    # -- jobs run together (cross-job batching) ------------------------------------------
    def _companions(self, first, where: str) -> list[tuple[str, int]]:
        """Queued jobs that can share `first`'s batch (same batch key), claimed now, within the
        kind's budget (GENQ_SD_MAX_BATCH images in all): (id, attempt) each."""
        if KINDS.get(first.kind) is None or KINDS[first.kind].batch_function is None or self.settings.sd_max_batch <= 1:
            return []
        try:
            leader = params_from_json(first.kind, first.params, self.settings)
        except Exception:
            return []  # its own run reports what is wrong with it
        key, room = leader.batch_key(), self.settings.sd_max_batch - leader.batch_images()
        if room <= 0:
            return []

        def take(candidate) -> bool:
            nonlocal room
            try:
                params = params_from_json(candidate.kind, candidate.params, self.settings)
            except Exception:
                return False
            if params.batch_key() != key or params.batch_images() > room:
                return False
            room -= params.batch_images()
            return True

        try:
            return self.store.claim_companions(first, self.settings.worker_queues, self.me, self.settings.lease_s,
                                               where, take)
        except Exception as exc:
            log.warning("job %s runs alone: could not claim jobs to batch with it (%s)", first.id, one_line(exc))
            return []

    def _run_together(self, kind: str, members: list[tuple[str, int]], device: str,
                      heartbeats: dict[str, Heartbeat]) -> None:
        """Run claimed jobs as one batch; each job's end is recorded as soon as it is known (a job
        cancelled mid-batch ends `cancelled` at that step while the others go on)."""
        log.info("running %d %s jobs as one batch: %s", len(members), kind, ", ".join(job_id[:8] for job_id, _ in members))
        started = time.monotonic()
        entries, owners = [], []
        for job_id, attempt in members:
            heartbeat = heartbeats[job_id]
            job = self.store.get(job_id)
            try:
                ctx = self._context(job, attempt, heartbeat, device)
                params = params_from_json(kind, job.params, self.settings)
            except Exception as exc:  # this job's own inputs: it fails alone
                self._finish(job, attempt, self._outcome(job, attempt, exc, started), heartbeat)
                continue
            entries.append((params, ctx))
            owners.append((job, attempt, heartbeat))
        ended: set[int] = set()
        try:
            for index, result in batch_function(kind)(entries):
                ended.add(index)
                job, attempt, heartbeat = owners[index]
                self._finish(job, attempt, self._outcome(job, attempt, result, started), heartbeat)
        except Exception as exc:  # the batch itself broke: it ends every job not ended yet
            broke = exc
        else:
            broke = RuntimeError("the batch ended without a result for this job")
        for index, (job, attempt, heartbeat) in enumerate(owners):
            if index not in ended:
                self._finish(job, attempt, self._outcome(job, attempt, broke, started), heartbeat)

    # -- the end of a run ----------------------------------------------------------------
    def _outcome(self, job, attempt: int, result: dict | BaseException, started: float) -> Outcome | None:
        """What a run's result or exception means for its job; None when this run lost the job
        (nothing of it is recorded)."""
        if isinstance(result, JobSuperseded):
            log.warning("job %s: %s", job.id, result)
            return None
        if isinstance(result, TimeLimitExceeded):
            outcome = Outcome(JobStatus.FAILED, {"error": str(result)}, str(result))
        elif isinstance(result, JobCancelled):
            outcome = Outcome(JobStatus.CANCELLED, {"error": str(result)}, str(result))
        elif isinstance(result, BaseException):
            self._safe_log(job.id, attempt, "".join(traceback.format_exception(result)))
            outcome = self._retry_or_fail(job, one_line(result))
        else:
            outcome = Outcome(JobStatus.SUCCEEDED, {"result": result or {}, "error": None}, None)
        ended = "failed, to be retried" if outcome.status is JobStatus.QUEUED else outcome.status.value
        outcome.values["progress_message"] = f"{ended} in {time.monotonic() - started:.1f}s"
        return outcome

    def _finish(self, job, attempt: int, outcome: Outcome | None, heartbeat: Heartbeat | None = None) -> None:
        if outcome is not None:
            self._record(job.id, attempt, self.me, outcome)
        if heartbeat is not None:
            heartbeat.__exit__(None, None, None)  # this job is done; the others of its batch go on

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
