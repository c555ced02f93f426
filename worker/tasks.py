"""The one Celery task. Its message carries only the job id; everything else is in SQL."""
from __future__ import annotations

import logging

from celery import Celery, signals

from genq.core.cache import ModelCache
from genq.core.config import Settings, load_settings
from genq.core.store.artifacts import ArtifactStore
from genq.core.store.db import check_schema, make_engine, session_factory
from genq.core.store.jobs import JobStore
from genq.worker.app import RUN_JOB_TASK, make_app
from genq.worker.dispatch import release_dependents
from genq.worker.recovery import AbandonedJobSweeper
from genq.worker.runner import JobRunner, worker_name

log = logging.getLogger("genq.worker")


def build_runner(app: Celery, settings: Settings) -> JobRunner:
    engine = make_engine(settings.database_url)
    check_schema(engine)
    store = JobStore(session_factory(engine))
    return JobRunner(
        settings=settings,
        store=store,
        artifacts=ArtifactStore(settings.artifact_root),
        cache=ModelCache(settings.model_cache_size),
        release=lambda job_id: release_dependents(app, store, job_id, worker_name()),
    )


def create_worker_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = make_app(settings)
    runner = build_runner(app, settings)
    sweeper = AbandonedJobSweeper(app, runner.store, settings.stale_after_s)

    @app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_job(self, job_id: str) -> None:
        runner.execute(job_id)

    @signals.worker_ready.connect(weak=False)
    def _start_sweeper(**_):
        sweeper.sweep()
        sweeper.start()

    @signals.worker_shutdown.connect(weak=False)
    def _stop_sweeper(**_):
        sweeper.stop()

    app.genq_runner = runner
    return app
