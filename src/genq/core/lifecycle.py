"""The lifecycle engine: every verb that changes a job, with its side effects, in one place.

The CLI, the Python API, the dashboard and the worker call these verbs; none moves a job itself.

- submit one job or a sweep's group (stored first, then woken: a message is only a wake-up);
- wake: send queued jobs' wake-ups and record when;
- claim (queued -> running, one statement that also returns the row, refused while the job's owner
  has their max_running jobs running) and claim companions to batch;
- record a run's progress, metrics, artifacts and log lines, each fenced by its attempt;
- finish a run (succeeded, failed, cancelled, or queued again to retry later), then wake the owner's
  jobs its running limit held back and release the jobs that wait for it;
- take over a run whose lease has passed; release or fail waiting jobs; cancel a job or a group.

Every move is a conditional transition (core.store.states), so of two callers racing for the same
move exactly one wins; the loser's side effects never run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Sequence

from genq.core.broker import SEND_RETRY_S, BrokerApp, BrokerUnavailable, make_app, publish
from genq.core.config import Settings
from genq.core.params import JobParams, RunOptions
from genq.core.retry import is_transient, retrying
from genq.core.store.artifacts import StoredFile
from genq.core.store.clock import db_now_plus
from genq.core.store.groups import GroupStore, PlannedJob
from genq.core.store.jobs import CancelOutcome, JobNotFound, JobStore, RunWrites
from genq.core.store.models import GroupRow, JobRow, utcnow
from genq.core.store.states import JobStatus, TransitionError
from genq.core.store.users import OverLimit

log = logging.getLogger("genq.lifecycle")


def fault_point(point: str, job_id: str) -> None:
    """A window the lifecycle tests can open (GENQ_TEST_PAUSE_AT); the hooks are imported only then."""
    if os.environ.get("GENQ_TEST_PAUSE_AT") == point:
        from genq.core.fault_points import pause_at

        pause_at(point, job_id)


@dataclass
class Outcome:
    """How a run ended, as its final transition records it."""

    status: JobStatus
    values: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: its outcome, and the waiting jobs it failed with it."""

    job_id: str
    outcome: CancelOutcome
    failed_dependents: list[str]

    @property
    def message(self) -> str:
        return self.outcome.message


class Lifecycle:
    """The verbs over one store. `app` (the Celery app) is made on first use: only a wake needs it."""

    def __init__(self, store: JobStore, settings: Settings, app: BrokerApp | None = None) -> None:
        self.store, self.settings = store, settings
        if app is not None:
            self.app = app

    @cached_property
    def app(self) -> BrokerApp:
        return make_app(self.settings)

    @cached_property
    def groups(self) -> GroupStore:
        return GroupStore(self.store)

    # -- submit ---------------------------------------------------------------------------
    def submit(self, params: JobParams, depends_on: str | None = None, options: RunOptions | None = None,
               retry_for_s: float | None = None, owner: str | None = None) -> tuple[JobRow, str | None]:
        """Store a job (queued, or waiting for `depends_on`) and wake a worker when it is ready.

        Returns the job and, when its wake-up could not be sent, why. Nothing is lost then: the job is
        stored, and a worker's reconciler sends it once the broker answers (as it does when this
        process is killed between the insert and the send). Each step retries through a database or
        broker blip; once the row is stored, a blip that outlasts it leaves the job to the reconciler.
        OverLimit, nothing stored, when the job would take `owner` past their max_queued.
        """
        retry_for_s = self.settings.retry_for_s if retry_for_s is None else retry_for_s
        job = retrying(lambda: self.store.create(params, depends_on, options, owner), retry_for_s, "storing the job")
        if not job.created:
            return job, None  # its idempotency key was used before: that job, as it is
        fault_point("after-insert", job.id)
        unsent = self._after_storing(lambda: (self.release_if_ready(job, retry_for_s=retry_for_s)
                                              if job.status == JobStatus.WAITING.value
                                              else self.wake([job.id], retry_for_s, {job.id: (job.queue, job.priority)})),
                                     "the job was stored")
        if unsent is None and job.status == JobStatus.QUEUED.value:
            return job, None  # as stored: queued, and woken
        try:
            return retrying(lambda: self.store.get(job.id), retry_for_s, "reading the job back"), unsent
        except Exception as exc:
            if not is_transient(exc):
                raise
            return job, unsent  # as it was stored

    def submit_group(self, kind: str, name: str | None, definition: dict[str, Any], planned: Sequence[PlannedJob],
                     options: RunOptions, owner: str | None = None) -> tuple[GroupRow, str | None]:
        """Store a group and all its jobs in one transaction, then wake the queued ones over one connection
        and release the waiting ones whose dependency has already ended. OverLimit, nothing stored, when
        its jobs would take `owner` past their max_queued."""
        group, rows = self.groups.create(kind, name, definition, planned, options, owner)
        retry_for_s = self.settings.retry_for_s

        def wake_all() -> None:
            queued = [row["id"] for row in rows if row["status"] == JobStatus.QUEUED.value]
            self.wake(queued, retry_for_s, {row["id"]: (row["queue"], row["priority"]) for row in rows})
            for row in rows:
                if row["status"] == JobStatus.WAITING.value:
                    self.release_if_ready(self.store.get(row["id"]), retry_for_s=retry_for_s)

        return group, self._after_storing(wake_all, "the jobs were stored")

    @staticmethod
    def _after_storing(action: Callable[[], None], stored: str) -> str | None:
        """Run the wake-ups of stored jobs; why they were not sent, or None. Stored all the same: a
        worker's reconciler sends them once the broker (or the store) answers again."""
        try:
            action()
        except BrokerUnavailable as exc:
            return str(exc)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return f"the store stopped answering after {stored}: {type(exc).__name__}"
        return None

    # -- wake -------------------------------------------------------------------------------
    def wake(self, job_ids: list[str], retry_for_s: float = 0.0,
             routes: dict[str, tuple[str, int]] | None = None) -> None:
        """Wake a worker for each of these queued jobs, on its queue at its priority, and record when.
        With `routes` (each job's queue and priority) the jobs were just stored, their send time with
        them: neither is read or written again."""
        if not job_ids:
            return
        just_stored = routes is not None
        if routes is None:
            routes = retrying(lambda: self.store.routes(job_ids), retry_for_s, "reading where jobs go")
        what = f"sending job {job_ids[0]}" if len(job_ids) == 1 else f"sending {len(job_ids)} jobs"
        retrying(lambda: publish(self.app, job_ids, routes), min(retry_for_s, SEND_RETRY_S), what)
        if not just_stored:
            retrying(lambda: self.store.mark_sent(job_ids), retry_for_s, "recording sends")

    # -- claim ------------------------------------------------------------------------------
    def claim(self, job_id: str, worker: str, device: str | None = None,
              queues: Sequence[str] | None = None) -> JobRow | None:
        """queued (and due, and on one of `queues` when given) -> running for `worker` with a fresh
        lease, in one statement that returns the claimed row (its `attempts` is this run's attempt);
        None when it is not claimable now."""
        return self.store.claim(job_id, worker, self.settings.lease_s, device, queues=queues)

    def claim_companions(self, first: JobRow, queues: tuple[str, ...], worker: str, device: str | None,
                         take: Callable[[JobRow], bool]) -> list[tuple[str, int]]:
        """Claim queued jobs of `first`'s kind to run in one batch with it: (id, attempt) each."""
        return self.store.claim_companions(first, queues, worker, self.settings.lease_s, device, take)

    # -- record (fenced by the run's attempt) ---------------------------------------------
    def record(self, job_id: str, attempt: int, writes: RunWrites, stored: StoredFile | None = None,
               publish_file: Callable[[], None] | None = None) -> None:
        """A run's progress, metric points and log lines, and an artifact when given, in one transaction;
        RunSuperseded when the run no longer holds the job (nothing is written)."""
        self.store.record(job_id, attempt, writes, stored, publish_file,
                          before_commit=lambda: fault_point("inside-write", job_id))

    def record_log(self, job_id: str, level: str, message: str, attempt: int) -> None:
        self.record(job_id, attempt, RunWrites(logs=[(level, message, utcnow())]))

    # -- finish -----------------------------------------------------------------------------
    def retry_later(self, job: JobRow, message: str) -> Outcome:
        """A failed run's outcome: queued again after a back-off while --retries are left, else failed."""
        if job.failed_runs >= job.retries:
            return Outcome(JobStatus.FAILED, {"error": message}, message)
        delay = self.settings.retry_backoff_s * 2 ** job.failed_runs
        reason = f"{message}; retry {job.failed_runs + 1} of {job.retries} in {delay:g}s"
        return Outcome(JobStatus.QUEUED, {"error": message, "failed_runs": job.failed_runs + 1,
                                          "run_after": db_now_plus(delay), "last_sent_at": None}, reason)

    def finish(self, job_id: str, attempt: int, outcome: Outcome, worker: str,
               writes: RunWrites | None = None) -> Outcome | None:
        """The run's final transition with its last pending writes (retried through a database blip,
        the result kept in memory), then the jobs that waited for it. The outcome recorded (a cancel
        asked meanwhile wins over a retry); None when the run no longer held the job: nothing was recorded."""
        def record(outcome: Outcome, only_if=None) -> None:
            retrying(lambda: self.store.finish(job_id, attempt, outcome.status, worker, outcome.reason, outcome.values,
                                               writes, only_if), self.settings.retry_for_s,
                     f"recording the end of job {job_id}")
        try:
            if outcome.status is JobStatus.QUEUED:  # a retry, unless a cancel was asked meanwhile: the cancel wins
                try:
                    record(outcome, only_if=JobRow.cancel_requested.is_not(True))
                except TransitionError:
                    outcome = self.cancelled_instead(outcome)
                    record(outcome)
            else:
                record(outcome)
        except TransitionError as exc:
            log.warning("job %s finished on this worker but was no longer its (%s)", job_id, exc)
            return None
        log.info("job %s %s", job_id, outcome.status.value)
        self.wake_held_back(job_id)
        if outcome.status is JobStatus.QUEUED:
            return outcome  # a retry: the reconciler sends it once its back-off has passed
        fault_point("after-finish", job_id)
        self.release_dependents(job_id, worker, self.settings.retry_for_s)
        return outcome

    def wake_held_back(self, job_id: str) -> None:
        """`job_id` stopped running: wake the queued jobs of its owner that their max_running held back,
        as many as may start now. A failure here costs only a delay: the reconciler re-sends queued jobs
        whose wake-up was dropped."""
        try:
            startable = self.store.startable_of_owner_of(job_id)
            if startable:
                self.wake(startable, self.settings.retry_for_s)
        except Exception as exc:
            if not is_transient(exc) and not isinstance(exc, BrokerUnavailable):
                raise
            log.warning("could not wake the jobs held back by job %s's owner's running limit (%s): the reconciler "
                        "will", job_id, exc)

    @staticmethod
    def cancelled_instead(retry: Outcome) -> Outcome:
        """A failed run whose job was asked to stop: cancelled, its failure kept as the reason."""
        failure = retry.values.get("error")
        reason = f"cancelled by request (its run had failed: {failure})"
        return Outcome(JobStatus.CANCELLED, {"error": "cancelled by request", "progress_message": "cancelled"}, reason)

    # -- take over ---------------------------------------------------------------------------
    def take_over(self, job: JobRow, worker: str) -> JobStatus | None:
        """Act on a running job whose lease has passed: cancelled if that was asked, failed after
        GENQ_MAX_ATTEMPTS runs, else queued and sent again. Its new status; None if its lease is
        still live or someone else acted first (the UPDATE checks the lease and the attempt)."""
        lost = f"lease of {job.worker_host} expired (attempt {job.attempts})"
        if job.cancel_requested:
            outcome, reason, values = JobStatus.CANCELLED, f"{lost}; cancelled as asked", {"error": "cancelled by request"}
        elif job.attempts >= self.settings.max_attempts:
            reason = f"{lost}; gave up after {job.attempts} attempts"
            outcome, values = JobStatus.FAILED, {"error": reason}
        else:
            outcome, reason, values = JobStatus.QUEUED, f"{lost}; requeued", {"last_sent_at": db_now_plus(0)}
        try:
            self.store.transition(job.id, JobStatus.RUNNING, outcome, worker=worker, reason=reason,
                                  expected_attempts=job.attempts, values=values,
                                  only_if=JobRow.lease_until < db_now_plus(0))  # renewed since it was read: not ours
        except TransitionError:
            return None
        log.warning("job %s: %s", job.id, reason)
        if outcome is JobStatus.QUEUED:
            self.wake([job.id], self.settings.retry_for_s)
        else:
            self.wake_held_back(job.id)
            self.release_dependents(job.id, worker, self.settings.retry_for_s)
        return outcome

    # -- jobs that wait for another ---------------------------------------------------------
    def release_if_ready(self, job: JobRow, worker: str | None = None, retry_for_s: float = 0.0) -> None:
        """A waiting job whose dependency has ended: queue and wake it, or fail its chain.

        Whoever notices first (the dependency's worker, the submitting client, or any worker's
        reconciler) wins the conditional transition, so exactly one of them sends its wake-up."""
        dependency = self.store.get(job.depends_on) if job.depends_on else None
        state = JobStatus(dependency.status) if dependency else JobStatus.FAILED
        if not state.finished:
            return
        if state is JobStatus.SUCCEEDED:
            try:
                self.store.transition(job.id, JobStatus.WAITING, JobStatus.QUEUED, worker=worker,
                                      reason=f"dependency {job.depends_on} succeeded",
                                      values={"last_sent_at": db_now_plus(0)})
            except TransitionError:
                return  # released (or cancelled) by someone else
            self.wake([job.id], retry_for_s)
        else:
            reason = f"dependency {job.depends_on} {'does not exist' if dependency is None else state.value}"
            self.fail_chain(job.id, reason, worker)

    def release_dependents(self, job_id: str, worker: str | None = None, retry_for_s: float = 0.0) -> None:
        """After `job_id` ended: release or fail each job waiting for it."""
        for waiting in self.store.waiting_on(job_id):
            self.release_if_ready(waiting, worker, retry_for_s)

    def fail_chain(self, job_id: str, reason: str, worker: str | None = None) -> list[str]:
        """Fail a waiting job and all that wait on it, iteratively (chains can be thousands long);
        returns the ids this call failed."""
        failed, pending = [], [(job_id, reason)]
        while pending:
            current, why = pending.pop()
            try:
                self.store.transition(current, JobStatus.WAITING, JobStatus.FAILED, worker=worker, reason=why,
                                      values={"error": why})
                failed.append(current)
            except TransitionError:
                pass  # not waiting any more: released, cancelled or failed by someone else
            pending += [(waiting.id, f"dependency {current} failed") for waiting in self.store.waiting_on(current)]
        return failed

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Cancelled:
        """Cancel a job: a queued or waiting one never runs (and what waits for it fails); a running
        one is asked to stop at its next step. If this process dies between the two, a worker's
        reconciler fails the waiting jobs instead."""
        outcome = self.store.request_cancel(job_id)
        fault_point("after-cancel", job_id)
        failed: list[str] = []
        if outcome.never_ran:
            for waiting in self.store.waiting_on(job_id):
                failed += self.fail_chain(waiting.id, f"dependency {job_id} was cancelled")
        return Cancelled(job_id, outcome, failed)

    def cancel_group(self, group_id: str) -> list[Cancelled]:
        """Cancel every job of a group that has not finished."""
        return [self.cancel(row.id) for row in self.groups.jobs_of(group_id) if not JobStatus(row.status).finished]


__all__ = ["Lifecycle", "Outcome", "Cancelled", "JobNotFound", "OverLimit", "fault_point"]
