"""`genq-worker` / `python -m worker`: a Celery worker with the settings GPU jobs need.

Solo pool (CUDA cannot live in a forked child), prefetch 1 (no hoarding of long jobs), the
project's queue. Run one per GPU with CUDA_VISIBLE_DEVICES=i. Extra arguments go to Celery.
"""
from __future__ import annotations

import logging
import os
import socket
import sys

from genq.core.config import load_settings
from genq.core.store.db import SchemaError


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nusage: genq-worker [celery worker options]\n"
              "environment: GENQ_DATABASE_URL, GENQ_BROKER_URL, GENQ_ARTIFACT_ROOT, GENQ_DATA_ROOT, GENQ_DEVICE, ...\n"
              "(`client config` prints them all)")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    from genq.worker.tasks import create_worker_app

    try:
        app = create_worker_app(settings)
    except SchemaError as exc:
        print(f"genq-worker: {exc}", file=sys.stderr)
        raise SystemExit(1)
    name = f"genq-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(["worker", "--pool", "solo", "--prefetch-multiplier", "1", "--queues", settings.queue,
                     "--hostname", name, "--loglevel", "INFO", "--without-gossip", "--without-mingle", *argv])


if __name__ == "__main__":
    main()
