"""One worker process of `genq-worker` (genq.worker.supervisor starts one per GPU or CPU slot).

A Celery worker with the settings long GPU jobs need: the threads pool with one thread (no fork, so
CUDA is never initialised in a forked parent; unlike the solo pool, the worker's main thread keeps
answering Celery's control channel, `celery -A genq inspect ping`, while a job runs), prefetch 1 (no
hoarding of long jobs: with acks_late the running job's message stays unacknowledged, so nothing more
is reserved until it ends), the queues of GENQ_WORKER_QUEUES. Its environment
comes from the supervisor: GENQ_WORKER_NAME, GENQ_DEVICE, CUDA_VISIBLE_DEVICES, and GENQ_PRELOAD,
GENQ_TORCH_THREADS when set. Arguments are `celery worker` options.

Exit status 78 (EXIT_CONFIG: bad settings, a database not at this version's schema) or 2 (EXIT_USAGE:
an option `celery worker` refuses) says that starting again cannot help: the supervisor then stops
instead of restarting it.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys

import click

from genq.core.config import Settings, load_settings
from genq.worker.supervisor import EXIT_CONFIG, EXIT_USAGE

log = logging.getLogger("genq.worker")


def celery_hostname(settings: Settings) -> str:
    """Celery's node name, unique per process (two supervisors on one host name their workers alike)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", settings.worker_name)
    return f"genq-{name}-{os.getpid()}@{socket.gethostname()}"


def fail(message: object, status: int = EXIT_CONFIG) -> None:
    print(f"genq-worker: {message}", file=sys.stderr)
    raise SystemExit(status)


def preload(app, settings: Settings) -> None:
    """Load GENQ_PRELOAD into the worker's model cache before it takes jobs, by each kind that declares
    how (the sd kind: a model)."""
    from genq.core.kinds import KIND_CLASSES, load_function
    from genq.worker.runner import prepare_torch

    loaders = [cls.preload_function for cls in KIND_CLASSES if cls.preload_function]
    if not loaders:
        fail("GENQ_PRELOAD: no installed job kind preloads anything")
    device = prepare_torch(settings)
    for reference in loaders:
        try:
            log.info(load_function(reference)(app.genq_runner.cache, settings, device))
        except ValueError as exc:
            fail(f"GENQ_PRELOAD: {exc}")


def check_artifact_store(store) -> None:
    """A missing bucket or refused credentials stop the worker in one line; an outage is only said (each
    upload retries it)."""
    from genq.core.store.artifacts import ArtifactStoreError, ArtifactStoreUnavailable

    try:
        store.check()
    except ArtifactStoreError as exc:
        fail(exc)
    except ArtifactStoreUnavailable as exc:
        log.warning("%s; jobs retry their uploads until it answers", exc)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except ValueError as exc:
        fail(exc)
    from genq.core.store.db import SchemaError
    from genq.worker.tasks import create_worker_app

    try:
        app = create_worker_app(settings)
    except SchemaError as exc:
        fail(exc)
    check_artifact_store(app.genq_runner.artifacts)
    if settings.preload:
        preload(app, settings)
    try:
        app.worker_main(["worker", "--pool", "threads", "--concurrency", "1", "--prefetch-multiplier", "1",
                         "--queues", ",".join(settings.worker_queues), "--hostname", celery_hostname(settings),
                         "--loglevel", "INFO", "--without-gossip", "--without-mingle", *argv])
    except click.ClickException as exc:  # Celery's command line: an option it does not know, a bad value
        fail(f"celery worker: {exc.format_message()}", EXIT_USAGE)


if __name__ == "__main__":
    main()
