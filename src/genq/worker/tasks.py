"""The one Celery task. Its message carries only the job id; everything else is in SQL."""
from __future__ import annotations

import logging
import time

from celery import Celery, signals
from celery.exceptions import Reject, Retry

from genq.core.broker import RUN_JOB_TASK, make_app
from genq.core.cache import ModelCache
from genq.core.config import Settings, load_settings
from genq.core.lifecycle import Lifecycle
from genq.core.retry import is_transient
from genq.core.store.artifacts import open_artifact_store
from genq.core.store.db import StoreUnreachable, check_schema, make_engine, session_factory
from genq.core.store.jobs import JobStore
from genq.core.store.states import JobStatus
from genq.core.store.workers import worker_registry
from genq.worker.liveness import Reconciler
from genq.worker.pod_deletion_cost import PodDeletionCost
from genq.worker.presence import Presence, describe
from genq.worker.runner import Delivery, JobRunner, prepare_torch

log = logging.getLogger("genq.worker")
REQUEUE_PAUSE_S = 1.0  # before handing back a message whose job could not be read (database down)
FIRST_WAIT_S, LONGEST_WAIT_S = 1.0, 30.0  # back-off while waiting for the database at start


class JobFailed(Exception):
    """The job failed: the task's FAILURE in Celery's events (Flower), with the job's error."""


class JobCancelled(Exception):
    """The job was cancelled: the task's FAILURE in Celery's events, with the reason."""


def task_outcome(delivery: Delivery) -> str:
    """The job's outcome as Celery's task state: succeeded returns (SUCCESS), failed and cancelled
    raise (FAILURE), a failed run to be retried raises Retry (RETRY; genq itself sends the job again
    after its back-off, Celery sends nothing). A dropped delivery of a job that is queued or running
    elsewhere is SUCCESS, its result saying why it was dropped."""
    if delivery.status is JobStatus.FAILED:
        raise JobFailed(delivery.reason)
    if delivery.status is JobStatus.CANCELLED:
        raise JobCancelled(delivery.reason)
    if delivery.status is JobStatus.QUEUED and delivery.ran:
        raise Retry(delivery.reason)
    return delivery.reason


def wait_for_the_store(engine, settings: Settings) -> None:
    """Check the schema, waiting with back-off for as long as the database does not answer: an outage
    at start is waited out (and said in the log), a wrong schema (SchemaError) is raised at once."""
    delay, since = FIRST_WAIT_S, time.monotonic()
    while True:
        try:
            check_schema(engine)
        except StoreUnreachable as exc:
            log.warning("%s; waiting %.0f s (%.0f s so far)", exc, delay, time.monotonic() - since)
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_WAIT_S)
            continue
        if time.monotonic() - since > FIRST_WAIT_S:
            log.info("the database answers again after %.0f s", time.monotonic() - since)
        return


def build_runner(app: Celery, settings: Settings) -> JobRunner:
    engine = make_engine(settings.database_url, settings.lease_s)
    wait_for_the_store(engine, settings)
    sessions = session_factory(engine)
    lifecycle = Lifecycle(JobStore(sessions, settings.queue_for), settings, app)
    return JobRunner(settings=settings, lifecycle=lifecycle, artifacts=open_artifact_store(settings.artifact_root),
                     cache=ModelCache(settings.model_cache_size),
                     presence=Presence(worker_registry(sessions), settings.heartbeat_interval_s,
                                       settings.home / "run" / "unrecorded-worker-stops"),
                     pod_cost=PodDeletionCost.from_environment())


def create_worker_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = make_app(settings)
    runner = build_runner(app, settings)
    reconciler = Reconciler(runner.lifecycle, settings.worker_name)

    # throws: a job's own failure is an expected end, logged in one line (its traceback is in the job's log)
    @app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, throws=(JobFailed, JobCancelled))
    def run_job(self, *args, **kwargs) -> str:  # any call is taken: one whose arguments are not one job id is dropped
        from genq.core.params import MAX_JOB_ID_LENGTH, short_repr

        job_id = args[0] if len(args) == 1 and not kwargs else None
        if not (isinstance(job_id, str) and 0 < len(job_id) <= MAX_JOB_ID_LENGTH and job_id.isprintable()):
            call = args[0] if len(args) == 1 and not kwargs else {"args": list(args), "kwargs": kwargs}
            log.warning("dropped a message whose arguments are not one job id: %s", short_repr(call, 200))
            return "dropped: not a job id"
        try:
            delivery = runner.execute(job_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("job %s: the store is unreachable (%s); handing the message back", job_id, type(exc).__name__)
            time.sleep(REQUEUE_PAUSE_S)
            raise Reject(str(exc), requeue=True) from exc
        return task_outcome(delivery)

    @signals.worker_ready.connect(weak=False)
    def _start_reconciler(**_):
        runner.presence.start(describe(settings, prepare_torch(settings)))
        try:
            reconciler.reconcile()
        except Exception:
            log.exception("first reconcile failed")
        reconciler.start()

    @signals.worker_shutdown.connect(weak=False)
    def _stop_reconciler(**_):
        reconciler.stop()
        runner.presence.stop()
        if runner.pod_cost:
            runner.pod_cost.stop()

    app.genq_runner = runner
    return app
