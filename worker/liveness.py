"""Liveness: the heartbeat that renews a run's lease, the takeover rule, and the reconciler.

- A running job holds a lease (`lease_until`, database clock). Its run's heartbeat renews it with
  one query that also reports cancellation and whether the run still holds the job.
- Takeover rule: only a job whose lease has passed by the database's clock is taken over: ended
  `cancelled` if cancellation was asked, `failed` after GENQ_MAX_ATTEMPTS runs, else requeued and
  sent again. The attempt number fences the transition, so two reconcilers cannot both act.
- The reconciler, on every worker, makes progress certain whatever messages were lost: it takes
  over expired leases, releases waiting jobs whose dependency ended, and re-sends queued jobs whose
  wake-up is older than GENQ_RESEND_AFTER and is not in the broker (see `resend_lost`).
"""
from __future__ import annotations

import logging
import threading

from celery import Celery

from genq.core.config import Settings
from genq.core.store.clock import db_now_plus
from genq.core.store.jobs import JobStore
from genq.core.store.models import Job
from genq.core.store.states import JobStatus, TransitionError
from genq.worker.dependencies import release_dependents, release_if_ready
from genq.worker.dispatch import job_ids_in_broker, queued_message_count, send_queued

log = logging.getLogger("genq.liveness")


class Heartbeat:
    """Renews the run's lease in a background thread and picks up cancellation and supersession."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, settings: Settings) -> None:
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self.interval_s = settings.heartbeat_interval_s
        self.lease_s = settings.lease_s
        self.cancel_requested = threading.Event()
        self.superseded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def beat(self) -> None:
        beat = self.store.heartbeat(self.job_id, self.attempt, self.lease_s)
        if not beat.holds_lease:
            self.superseded.set()  # taken over (or ended) elsewhere: this run must stop writing
        if beat.cancel_requested:
            self.cancel_requested.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat for job %s failed; the lease runs on until the next one", self.job_id)


def take_over(app: Celery, store: JobStore, job: Job, settings: Settings, me: str) -> JobStatus | None:
    """Act on a running job whose lease has passed; returns its new status, None if someone else acted."""
    lost = f"lease of {job.worker_host} expired (attempt {job.attempts})"
    if job.cancel_requested:
        outcome, reason, values = JobStatus.CANCELLED, f"{lost}; cancelled as asked", {"error": "cancelled by request"}
    elif job.attempts >= settings.max_attempts:
        reason = f"{lost}; gave up after {job.attempts} attempts"
        outcome, values = JobStatus.FAILED, {"error": reason}
    else:
        outcome, reason, values = JobStatus.QUEUED, f"{lost}; requeued", {"last_sent_at": db_now_plus(0)}
    try:
        store.transition(job.id, JobStatus.RUNNING, outcome, worker=me, reason=reason,
                         expected_attempts=job.attempts, values=values,
                         only_if=Job.lease_until < db_now_plus(0))  # renewed since it was read: not ours
    except TransitionError:
        return None
    log.warning("job %s: %s", job.id, reason)
    if outcome is JobStatus.QUEUED:
        send_queued(app, store, [job.id], settings.retry_for_s)
    else:
        release_dependents(app, store, job.id, me, settings.retry_for_s)
    return outcome


class Reconciler:
    """Every GENQ_RECONCILE_INTERVAL: expired leases, unreleased dependants, lost wake-ups."""

    def __init__(self, app: Celery, store: JobStore, settings: Settings, me: str) -> None:
        self.app, self.store, self.settings, self.me = app, store, settings, me
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def reconcile(self) -> None:
        for job in self.store.expired_leases():
            take_over(self.app, self.store, job, self.settings, self.me)
        for job in self.store.waiting_on_finished():
            release_if_ready(self.app, self.store, job, self.me)
        self.resend_lost()

    def resend_lost(self) -> None:
        """Re-send queued jobs whose wake-up was lost, without flooding a long legitimate backlog.

        A queued job is suspect when its last wake-up is older than GENQ_RESEND_AFTER. It is re-sent
        only if no message for it is in the broker (waiting in its queue, or delivered and not yet
        acknowledged). Listing a queue is skipped while it holds at least as many messages as it has
        queued jobs: the usual long backlog, whose messages are all there. Every queue with suspects is
        looked at, whichever queues this worker consumes: any worker can heal any queue.
        """
        by_queue: dict[str, list[str]] = {}
        for job_id, queue in self.store.queued_unsent_since(self.settings.resend_after_s):
            by_queue.setdefault(queue, []).append(job_id)
        for queue, suspects in by_queue.items():
            if queued_message_count(self.app, queue) >= self.store.count(JobStatus.QUEUED, queue):
                continue
            present = job_ids_in_broker(self.app, queue, unacked_for_at_most_s=self.settings.resend_after_s)
            self._resend([job_id for job_id in suspects if job_id not in present])

    def _resend(self, lost: list[str]) -> None:
        if lost:
            log.warning("re-sending %d queued job(s) whose wake-up was lost: %s", len(lost), ", ".join(lost[:5]))
            send_queued(self.app, self.store, lost)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_interval_s):
            try:
                self.reconcile()
            except Exception:
                log.exception("reconcile failed; trying again in %.1fs", self.settings.reconcile_interval_s)
