"""The one Celery task. Its message carries only the job id; everything else is in SQL."""
from __future__ import annotations

import logging
import time

from celery import Celery, signals
from celery.exceptions import Reject

from genq.core.broker import RUN_JOB_TASK, make_app
from genq.core.cache import ModelCache
from genq.core.config import Settings, load_settings
from genq.core.lifecycle import Lifecycle
from genq.core.retry import is_transient
from genq.core.store.artifacts import ArtifactStore
from genq.core.store.db import check_schema, make_engine, session_factory
from genq.core.store.jobs import JobStore
from genq.core.store.workers import worker_registry
from genq.worker.liveness import Reconciler
from genq.worker.presence import Presence, describe
from genq.worker.runner import JobRunner, prepare_torch

log = logging.getLogger("genq.worker")
REQUEUE_PAUSE_S = 1.0  # before handing back a message whose job could not be read (database down)


def build_runner(app: Celery, settings: Settings) -> JobRunner:
    engine = make_engine(settings.database_url)
    check_schema(engine)
    sessions = session_factory(engine)
    lifecycle = Lifecycle(JobStore(sessions, settings.queue_for), settings, app)
    return JobRunner(settings=settings, lifecycle=lifecycle, artifacts=ArtifactStore(settings.artifact_root),
                     cache=ModelCache(settings.model_cache_size),
                     presence=Presence(worker_registry(sessions), settings.heartbeat_interval_s))


def create_worker_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = make_app(settings)
    runner = build_runner(app, settings)
    reconciler = Reconciler(runner.lifecycle, settings.worker_name)

    @app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_job(self, job_id: str) -> None:
        try:
            runner.execute(job_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("job %s: the store is unreachable (%s); handing the message back", job_id, type(exc).__name__)
            time.sleep(REQUEUE_PAUSE_S)
            raise Reject(str(exc), requeue=True) from exc

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

    app.genq_runner = runner
    return app
