"""The Celery app, configured for long GPU jobs (see GUIDE.md, "Pitfalls")."""
from __future__ import annotations

from celery import Celery

from genq.core.config import Settings, load_settings

PRIORITY_SEPARATOR = ":"  # kombu's Redis transport option `sep`: priority lists are `<queue>:<n>`
PRIORITY_STEPS = list(range(10))  # kombu's Redis transport option `priority_steps`: one list per priority

RUN_JOB_TASK = "genq.run_job"


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = Celery("genq", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # status lives in SQL, never in Celery's result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,  # every send names the job's own queue (genq.worker.dispatch)
        # Priorities on Redis: one list per priority step, the list of step 0 popped first.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  "priority_steps": PRIORITY_STEPS, "sep": PRIORITY_SEPARATOR},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    app.genq_settings = settings
    return app
