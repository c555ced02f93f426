"""Adapts one job row to its core run function: claim, run, finish; every move through the lifecycle engine.

Every delivery of a message goes through `JobRunner.execute`; a message is only a wake-up. The
runner first claims the job in one statement that returns its row; only when that fails does it
read the job, to drop the delivery (not queued, or retrying later) or take over a running job whose
lease has passed. The claim and every write of the run are fenced by the attempt number; a run that
finished keeps its result and retries recording it through a database blip instead of being run again.
"""
from __future__ import annotations

import logging
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass

from genq.core.cache import ModelCache
from genq.core.config import Settings
from genq.core.context import JobCancelled
from genq.core.kinds import KINDS, batch_function, missing_kind_message, params_from_json, run_function
from genq.core.lifecycle import Lifecycle, Outcome
from genq.core.store.artifacts import ArtifactStore
from genq.core.store.models import JobRow
from genq.core.store.states import JobStatus
from genq.worker.liveness import Heartbeat
from genq.worker.pod_deletion_cost import PodDeletionCost
from genq.worker.presence import Presence, device_label
from genq.worker.run_context import JobSuperseded, RunContext, StoreLost, TimeLimitExceeded

log = logging.getLogger("genq.worker")


@dataclass(frozen=True)
class Delivery:
    """What one delivery of a job's message came to, as Celery's task state reports it: the job's
    status as this delivery left it (or found it, when the delivery was dropped) and why."""

    status: JobStatus | None  # None: no such job
    reason: str
    ran: bool = False  # this delivery ran the job (or ran it in a batch with others)


class KindNotInstalled(LookupError):
    """The job's kind is not installed on this worker (its message says which kinds are)."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KindNotInstalled):
        return text
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
    lifecycle: Lifecycle
    artifacts: ArtifactStore
    cache: ModelCache
    presence: Presence | None = None  # this worker's registry row, when it runs as a worker
    pod_cost: PodDeletionCost | None = None  # its pod's deletion cost, when it runs in a Kubernetes pod

    @property
    def store(self):
        return self.lifecycle.store

    @property
    def me(self) -> str:
        return self.settings.worker_name

    def execute(self, job_id: str) -> Delivery:
        device = prepare_torch(self.settings)
        where = self._where(device)
        job = self._claim(job_id, where)
        if isinstance(job, Delivery):
            return job
        attempt = job.attempts
        # Every claimed job keeps its lease from here: its heartbeat runs until its end is recorded
        # (a run retrying its final write keeps its lease), or, in a batch, until that job ends.
        with ExitStack() as leases:
            heartbeats = {job_id: leases.enter_context(Heartbeat(self.lifecycle, job_id, attempt, self.settings))}
            members = [(job_id, attempt), *self._companions(job, where)]
            for companion_id, companion_attempt in members[1:]:
                heartbeats[companion_id] = leases.enter_context(
                    Heartbeat(self.lifecycle, companion_id, companion_attempt, self.settings))
            if self.presence:
                self.presence.busy(job_id)
            if self.pod_cost:
                self.pod_cost.busy()
            try:
                if len(members) == 1:
                    ended = self._run_alone(job, attempt, device, heartbeats[job_id])
                else:
                    ended = self._run_together(job, members, device, heartbeats)
            finally:
                if self.presence:
                    self.presence.idle(len(members))
                if self.pod_cost:
                    self.pod_cost.idle()
        if ended is None:
            return Delivery(None, f"this run lost job {job_id} (superseded, or its store was lost): nothing recorded")
        return Delivery(ended.status, ended.reason or ended.status.value, ran=True)

    def _claim(self, job_id: str, where: str) -> JobRow | Delivery:
        """The claimed job's row, or why this delivery is dropped. The usual case is one statement
        (the claim); the job is read only when the claim fails, to learn why."""
        me, queues = self.me, self.settings.worker_queues
        job = self.lifecycle.claim(job_id, me, where, queues)
        if job is not None:
            return job
        job = self.store.get(job_id)
        if job is None:
            log.warning("message for unknown job %s dropped", job_id)
            return Delivery(None, f"no job {job_id}: message dropped")
        if job.status == JobStatus.RUNNING.value:
            if self.lifecycle.take_over(job, me) is not JobStatus.QUEUED:
                log.info("job %s is running on %s: message dropped (its lease is live, or it ended)",
                         job_id, job.worker_host)
                return self._dropped(self.store.get(job_id), f"running on {job.worker_host}, or ended")
            claimed = self.lifecycle.claim(job_id, me, where, queues)
            if claimed is None:
                log.info("job %s was claimed by another delivery", job_id)
                return self._dropped(self.store.get(job_id), "claimed by another delivery")
            return claimed
        if job.status == JobStatus.QUEUED.value and job.queue not in queues:
            log.warning("job %s is for queue %s, which this worker does not consume: message dropped (the "
                        "reconciler sends it to its queue)", job_id, job.queue)
            reason = f"for queue {job.queue}, which this worker does not consume"
        elif job.status == JobStatus.QUEUED.value:
            log.info("job %s retries later, its owner is at their running limit, or another delivery claimed it: "
                     "message dropped", job_id)
            reason = "retries later, its owner is at their running limit, or another delivery claimed it"
        else:
            log.info("job %s is %s: message dropped", job_id, job.status)
            reason = f"job is {job.status}"
        return self._dropped(job, reason)

    @staticmethod
    def _dropped(job: JobRow | None, reason: str) -> Delivery:
        """A dropped delivery, with its job's status as it is now: an ended job's outcome, else why."""
        if job is None:
            return Delivery(None, f"message dropped: {reason}")
        status = JobStatus(job.status)
        if status.finished:
            return Delivery(status, job.error or job.status)
        return Delivery(status, f"message dropped: {reason}")

    def _where(self, device: str) -> str:
        """The device of a claimed run as the job's history shows it: "cuda:0 (NVIDIA H100 80GB HBM3)", "cpu"."""
        identity = self.presence.identity if self.presence else None
        if identity is None:
            return device_label(device)
        return f"{identity.device} ({identity.device_name})" if identity.device.startswith("cuda") else identity.device

    # -- one job -------------------------------------------------------------------------
    def _run_alone(self, job: JobRow, attempt: int, device: str, heartbeat: Heartbeat) -> Outcome | None:
        started = time.monotonic()
        ctx = None
        try:
            ctx = self._context(job, attempt, heartbeat, device)
            if job.kind not in KINDS:
                raise KindNotInstalled(missing_kind_message(job.kind))
            params = params_from_json(job.kind, job.params, self.settings)
            result = run_function(job.kind)(params, ctx) or {}
        except Exception as exc:
            result = exc
        return self._finish(job, attempt, self._outcome(job, attempt, result, started), ctx=ctx)

    def _context(self, job, attempt: int, heartbeat: Heartbeat, device: str) -> RunContext:
        deadline = time.monotonic() + job.time_limit_s if job.time_limit_s else None
        ctx = RunContext(job.id, attempt, self.lifecycle, self.artifacts, heartbeat, device=device,
                           data_root=self.settings.data_root, cache=self.cache,
                           retry_for_s=self.settings.retry_for_s, deadline=deadline,
                           compile_models=self.settings.sd_compile)
        if attempt > 1:
            ctx.log(f"attempt {attempt}: resuming where the previous run left off, if it saved state")
        return ctx

    # -- jobs run together (cross-job batching) ------------------------------------------
    def _companions(self, first, where: str) -> list[tuple[str, int]]:
        """Queued jobs that can share `first`'s batch (same batch key), claimed now, within the
        kind's batch budget (for sd, GENQ_SD_MAX_BATCH images in all): (id, attempt) each."""
        kind = KINDS.get(first.kind)
        if kind is None or kind.batch_function is None or (budget := kind.batch_budget(self.settings)) <= 1:
            return []
        try:
            leader = params_from_json(first.kind, first.params, self.settings)
        except Exception:
            return []  # its own run reports what is wrong with it
        key, room = leader.batch_key(), budget - leader.batch_images()
        if room <= 0:
            return []

        def take(candidate) -> bool:
            nonlocal room
            if room <= 0:
                return False  # full: the rest are not even read
            try:
                params = params_from_json(candidate.kind, candidate.params, self.settings)
            except Exception:
                return False
            if params.batch_key() != key or params.batch_images() > room:
                return False
            room -= params.batch_images()
            return True

        try:
            return self.lifecycle.claim_companions(first, self.settings.worker_queues, self.me, where, take)
        except Exception as exc:
            log.warning("job %s runs alone: could not claim jobs to batch with it (%s)", first.id, one_line(exc))
            return []

    def _run_together(self, first: JobRow, members: list[tuple[str, int]], device: str,
                      heartbeats: dict[str, Heartbeat]) -> Outcome | None:
        """Run claimed jobs as one batch; each job's end is recorded as soon as it is known (a job
        cancelled mid-batch ends `cancelled` at that step while the others go on). The first job's
        recorded outcome: the one whose message this is."""
        kind = first.kind
        log.info("running %d %s jobs as one batch: %s", len(members), kind, ", ".join(job_id[:8] for job_id, _ in members))
        started = time.monotonic()
        entries, owners, recorded = [], [], {}
        for job_id, attempt in members:
            heartbeat = heartbeats[job_id]
            job = first if job_id == first.id else self.store.get(job_id)
            try:
                ctx = self._context(job, attempt, heartbeat, device)
                params = params_from_json(kind, job.params, self.settings)
            except Exception as exc:  # this job's own inputs: it fails alone
                recorded[job_id] = self._finish(job, attempt, self._outcome(job, attempt, exc, started), heartbeat)
                continue
            entries.append((params, ctx))
            owners.append((job, attempt, heartbeat, ctx))
        ended: set[int] = set()
        try:
            for index, result in batch_function(kind)(entries):
                ended.add(index)
                job, attempt, heartbeat, ctx = owners[index]
                recorded[job.id] = self._finish(job, attempt, self._outcome(job, attempt, result, started), heartbeat, ctx)
        except Exception as exc:  # the batch itself broke: it ends every job not ended yet
            broke = exc
        else:
            broke = RuntimeError("the batch ended without a result for this job")
        for index, (job, attempt, heartbeat, ctx) in enumerate(owners):
            if index not in ended:
                recorded[job.id] = self._finish(job, attempt, self._outcome(job, attempt, broke, started), heartbeat, ctx)
        return recorded.get(first.id)

    # -- the end of a run ----------------------------------------------------------------
    def _outcome(self, job, attempt: int, result: dict | BaseException, started: float) -> Outcome | None:
        """What a run's result or exception means for its job; None when this run lost the job
        (nothing of it is recorded)."""
        if isinstance(result, JobSuperseded):
            log.warning("job %s: %s", job.id, result)
            return None
        if isinstance(result, StoreLost):
            log.warning("job %s: %s; the run stops and the job is taken over once its lease passes", job.id, result)
            return None
        if isinstance(result, TimeLimitExceeded):
            outcome = Outcome(JobStatus.FAILED, {"error": str(result)}, str(result))
        elif isinstance(result, JobCancelled):
            outcome = Outcome(JobStatus.CANCELLED, {"error": str(result)}, str(result))
        elif isinstance(result, BaseException):
            self._safe_log(job.id, attempt, "".join(traceback.format_exception(result)))
            outcome = self.lifecycle.retry_later(job, one_line(result))
        else:
            outcome = Outcome(JobStatus.SUCCEEDED, {"result": result or {}, "error": None}, None)
        ended = "failed, to be retried" if outcome.status is JobStatus.QUEUED else outcome.status.value
        outcome.values["progress_message"] = f"{ended} in {time.monotonic() - started:.1f}s"
        return outcome

    def _finish(self, job, attempt: int, outcome: Outcome | None, heartbeat: Heartbeat | None = None,
                ctx: RunContext | None = None) -> Outcome | None:
        """Record the run's end with what it has not written yet; then, in a batch, end its heartbeat.
        The outcome recorded, None when nothing was (the run had lost the job)."""
        writes = ctx.take_pending() if ctx is not None else None
        recorded = None
        try:
            if outcome is not None:
                recorded = self.lifecycle.finish(job.id, attempt, outcome, self.me, writes)
        finally:
            if ctx is not None:
                ctx.close()
        if heartbeat is not None:
            heartbeat.__exit__(None, None, None)  # this job is done; the others of its batch go on
        return recorded

    def _safe_log(self, job_id: str, attempt: int, message: str) -> None:
        log.error("[%s] %s", job_id[:8], message)
        try:
            self.lifecycle.record_log(job_id, "error", message, attempt)
        except Exception:
            log.exception("could not store a log line for job %s", job_id)
