"""Liveness: the heartbeat that renews a run's lease, and the reconciler.

- A running job holds a lease (`lease_until`, database clock). Its run's heartbeat renews it with
  one query that also reports cancellation and whether the run still holds the job.
- Takeover rule (Lifecycle.take_over): only a job whose lease has passed by the database's clock is
  taken over: ended `cancelled` if cancellation was asked, `failed` after GENQ_MAX_ATTEMPTS runs,
  else requeued and sent again. The attempt number fences the transition, so two reconcilers cannot
  both act.
- The reconciler, on every worker, makes progress certain whatever messages were lost: it takes
  over expired leases, releases waiting jobs whose dependency ended, and re-sends queued jobs whose
  wake-up is older than GENQ_RESEND_AFTER and is not in the broker (see `resend_lost`).
"""
from __future__ import annotations

import logging
import threading
import time

from genq.core.broker import job_ids_in_broker, queued_message_count
from genq.core.config import Settings
from genq.core.lifecycle import Lifecycle
from genq.core.store.states import JobStatus
from genq.worker.loop import BackgroundLoop

log = logging.getLogger("genq.liveness")
# Between heartbeats a run looks for a cancel at every step; the store is read for it at most this often.
CANCEL_READ_EVERY_S = 0.25


class Heartbeat(BackgroundLoop):
    """Renews one run's lease every GENQ_HEARTBEAT_INTERVAL and is the one reader of its cancellation
    and of whether it still holds the job (superseded)."""

    def __init__(self, lifecycle: Lifecycle, job_id: str, attempt: int, settings: Settings) -> None:
        self.name = f"heartbeat-{job_id[:8]}"
        super().__init__(settings.heartbeat_interval_s)
        self.store, self.job_id, self.attempt = lifecycle.store, job_id, attempt
        self.lease_s = settings.lease_s
        self.cancel_requested = threading.Event()
        self.superseded = threading.Event()
        self._cancel_read = float("-inf")
        self.flush_stale = None  # set by the run's context: writes its small writes that have waited

    def __enter__(self) -> "Heartbeat":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop(wait=True)

    def tick(self) -> None:
        try:
            beat = self.store.heartbeat(self.job_id, self.attempt, self.lease_s)
        except Exception:
            log.exception("heartbeat for job %s failed; the lease runs on until the next one", self.job_id)
            return
        if not beat.holds_lease:
            self.superseded.set()  # taken over (or ended) elsewhere: this run must stop writing
        if beat.cancel_requested:
            self.cancel_requested.set()
        if self.flush_stale is not None and not self.superseded.is_set():
            try:
                self.flush_stale()
            except Exception as exc:  # the run meets the same failure at its next write
                log.warning("job %s: pending writes not written yet (%s)", self.job_id, type(exc).__name__)

    def cancel_asked(self, read) -> bool:
        """Whether cancellation was asked: as the last heartbeat learned it, or, between heartbeats, as
        `read()` finds it in the store (at most every CANCEL_READ_EVERY_S)."""
        if self.cancel_requested.is_set():
            return True
        now = time.monotonic()
        if now - self._cancel_read < CANCEL_READ_EVERY_S:
            return False
        self._cancel_read = now
        if read(lambda: self.store.cancel_requested(self.job_id), "cancel check"):
            self.cancel_requested.set()
        return self.cancel_requested.is_set()


class Reconciler(BackgroundLoop):
    """Every GENQ_RECONCILE_INTERVAL: expired leases, unreleased dependants, lost wake-ups."""

    name = "reconciler"

    def __init__(self, lifecycle: Lifecycle, me: str) -> None:
        super().__init__(lifecycle.settings.reconcile_interval_s)
        self.lifecycle, self.store, self.settings, self.me = lifecycle, lifecycle.store, lifecycle.settings, me

    def tick(self) -> None:
        self.reconcile()

    def reconcile(self) -> None:
        """One pass. Each repair is on its own: a job whose row stays locked, or a blip, costs that
        one job this pass, never the rest of the pass."""
        for job in self._each(self.store.expired_leases, "read expired leases"):
            self._repair(lambda: self.lifecycle.take_over(job, self.me), f"take over job {job.id}")
        for job in self._each(self.store.waiting_on_finished, "read the waiting jobs"):
            self._repair(lambda: self.lifecycle.release_if_ready(job, self.me), f"release job {job.id}")
        self._repair(self.resend_lost, "re-send lost wake-ups")

    def _repair(self, action, what: str) -> None:
        try:
            action()
        except Exception as exc:
            self._skipped(what, exc)

    def _each(self, read, what: str) -> list:
        try:
            return read()
        except Exception as exc:
            self._skipped(what, exc)
            return []

    @staticmethod
    def _skipped(what: str, exc: Exception) -> None:
        log.warning("reconciler: could not %s (%s: %s); next pass", what, type(exc).__name__,
                    " ".join(str(exc).split())[:200])

    def resend_lost(self) -> None:
        """Re-send queued jobs whose wake-up was lost, without flooding a long legitimate backlog.

        A queued job is suspect when its last wake-up is older than GENQ_RESEND_AFTER. It is re-sent
        only if no message for it is in the broker (waiting in its queue, or delivered and not yet
        acknowledged). Listing a queue is skipped while it holds at least as many messages as it has
        queued jobs: the usual long backlog, whose messages are all there. Every queue with suspects is
        looked at, whichever queues this worker consumes: any worker can heal any queue.
        """
        app = self.lifecycle.app
        by_queue: dict[str, list[str]] = {}
        for job_id, queue in self.store.queued_unsent_since(self.settings.resend_after_s):
            by_queue.setdefault(queue, []).append(job_id)
        for queue, suspects in by_queue.items():
            if queued_message_count(app, queue) >= self.store.count(JobStatus.QUEUED, queue):
                continue
            present = job_ids_in_broker(app, queue, unacked_for_at_most_s=self.settings.resend_after_s)
            lost = [job_id for job_id in suspects if job_id not in present]
            if lost:
                log.warning("re-sending %d queued job(s) whose wake-up was lost: %s", len(lost), ", ".join(lost[:5]))
                self.lifecycle.wake(lost)
