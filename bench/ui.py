"""The dashboard with a real history: the jobs page and a job page rendered in process (Starlette's
TestClient), against the same pages over an empty store.

    python -m bench.ui [--jobs 10000] [--metrics 200000] [--repeats 21] [--stores sqlite,postgresql]

Per store (a temp SQLite file; a fresh PostgreSQL database, dropped after) the history goes in with
bulk inserts: --jobs jobs of every kind and state (sd prompts, sweeps' groups, two queues), a
submitted event each and three more for finished ones, --metrics metric points spread over the
train-vae jobs, a few artifact rows and log lines per job. Then each page is fetched --repeats times
(after one warm-up) and the median printed in ms: the jobs page, the jobs page filtered by state,
kind, queue and prompt text, page 20 of it, the page of the train-vae job with the most metric
points, the groups list, the jobs of one group by its name, and the compare page of that job. The goal is a median under 100 ms for each.
Last line: `ratio: <store> jobs X.X job Y.Y, ...`, each page's median over the same page's on an empty store.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert

from bench.queue_overhead import POSTGRES_ADMIN_URL, postgres_database

KINDS = ("sd", "train-vae", "sample-vae", "interpolate")
STATES = ("succeeded", "succeeded", "succeeded", "failed", "cancelled", "queued", "running")
WORDS = "a red bicycle lighthouse at dusk boat harbour portrait of an old sailor forest in fog city night".split()
BATCH = 5000


def app_for(database_url: str, home: Path):
    from starlette.testclient import TestClient

    from genq.client.ui.app import make_app
    from genq.client.ui.security import token_file
    from genq.core.config import load_settings
    from genq.core.store.db import upgrade

    upgrade(database_url)
    settings = load_settings({"GENQ_HOME": str(home), "GENQ_DATABASE_URL": database_url,
                              "GENQ_BROKER_URL": "redis://127.0.0.1:6379/0"})
    web = TestClient(make_app(settings))
    signed_in = web.get("/", params={"token": token_file(settings).read_text().strip()})  # as the printed URL: the cookie
    if signed_in.status_code != 200:
        raise RuntimeError(f"the dashboard refused its home's token: {signed_in.status_code}")
    return web, settings


def fill(sessions, jobs: int, metrics: int, seed: int = 0) -> str:
    """The history, in bulk; returns the id of the train-vae job with the most metric points."""
    from genq.core.store.models import ArtifactRow, GroupRow, JobRow, JobEvent, JobLog, Metric

    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    groups = [str(uuid.uuid4()) for _ in range(max(1, jobs // 100))]
    job_rows, event_rows, artifact_rows, log_rows, trainers = [], [], [], [], []
    for index in range(jobs):
        job_id, kind, state = str(uuid.uuid4()), KINDS[index % len(KINDS)], rng.choice(STATES)
        submitted = start + timedelta(seconds=index * 7)
        params = ({"prompt": " ".join(rng.sample(WORDS, 5)), "steps": 30, "seed": index, "width": 512, "height": 512}
                  if kind == "sd" else {"epochs": 10, "seed": index})
        finished = state in ("succeeded", "failed", "cancelled")
        in_group = index % 3 == 0
        job_rows.append(dict(id=job_id, kind=kind, status=state, params=params, attempts=0 if state == "queued" else 1,
                             cancel_requested=False, submitted_at=submitted, queue=("gpu", "cpu")[index % 2],
                             priority=5, progress_done=3, progress_total=10, progress_message="step 3/10",
                             started_at=None if state == "queued" else submitted + timedelta(seconds=2),
                             finished_at=submitted + timedelta(seconds=60) if finished else None,
                             result={"images": 1} if state == "succeeded" else None, retries=0, failed_runs=0,
                             group_id=rng.choice(groups) if in_group else None, group_index=index if in_group else None))
        event_rows.append(dict(job_id=job_id, at=submitted, from_status=None, to_status="queued", reason="submitted"))
        if finished:
            event_rows += [dict(job_id=job_id, at=submitted + timedelta(seconds=2), from_status="queued",
                                to_status="running", worker="bench:cpu0", device="cpu", reason="claimed"),
                           dict(job_id=job_id, at=submitted + timedelta(seconds=60), from_status="running",
                                to_status=state, worker="bench:cpu0", reason=None)]
        for n in range(2):
            name = f"image-{n}.png"
            artifact_rows.append(dict(job_id=job_id, name=name, relative_path=f"{job_id}/{name}", media_type="image/png",
                                      size=1000, sha256="0" * 64, created_at=submitted))
        log_rows += [dict(job_id=job_id, at=submitted, level="info", message=f"line {n}", attempt=1) for n in range(3)]
        if kind == "train-vae":
            trainers.append(job_id)
    metric_rows = []
    per_job = max(1, metrics // max(1, len(trainers)))
    for number, job_id in enumerate(trainers):
        count = per_job + (metrics - per_job * len(trainers) if number == 0 else 0)
        metric_rows += [dict(job_id=job_id, step=step, name=("train_loss_per_image", "test_loss_per_image")[step % 2],
                             value=200.0 / (step + 1), recorded_at=start) for step in range(max(0, count))]
    group_rows = [dict(id=group_id, name=f"sweep-{n}", kind="sd", created_at=start, definition={}, size=0)
                  for n, group_id in enumerate(groups)]
    with sessions() as session:
        for model, rows in ((GroupRow, group_rows), (JobRow, job_rows), (JobEvent, event_rows), (ArtifactRow, artifact_rows),
                            (JobLog, log_rows), (Metric, metric_rows)):
            for first in range(0, len(rows), BATCH):
                session.execute(insert(model), rows[first:first + BATCH])
        session.commit()
    return trainers[0] if trainers else job_rows[0]["id"]


def median_ms(web, path: str, repeats: int) -> float:
    response = web.get(path)  # warm-up; the page must render
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code}")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        web.get(path)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def pages(job_id: str) -> dict[str, str]:
    return {"jobs": "/", "filtered": "/?state=succeeded&kind=sd&queue=gpu&prompt=boat",
            "page 20": "/?page=20", "job": f"/jobs/{job_id}", "groups": "/groups", "by group": "/?group=sweep-1",
            "compare": f"/compare?job={job_id}"}


def bench_store(stack: contextlib.ExitStack, store: str, args, tmp: Path) -> tuple[dict[str, float], dict[str, float]]:
    def database(label: str) -> str:
        if store == "sqlite":
            return f"sqlite:///{tmp / f'{store}-{label}.db'}"
        return postgres_database(stack, args.postgres_admin_url)

    empty_web, _ = app_for(database("empty"), tmp / "empty")
    web, _ = app_for(database("full"), tmp / "full")
    sessions = web.app.state.client.store.sessions
    started = time.perf_counter()
    job_id = fill(sessions, args.jobs, args.metrics)
    print(f"{store}: filled {args.jobs} jobs and {args.metrics} metric points in {time.perf_counter() - started:.1f}s")
    empty_job = fill(empty_web.app.state.client.store.sessions, 1, 2)
    full = {name: median_ms(web, path, args.repeats) for name, path in pages(job_id).items()}
    empty = {name: median_ms(empty_web, path, args.repeats) for name, path in pages(empty_job).items()}
    return full, empty


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--metrics", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--stores", default="sqlite")
    parser.add_argument("--postgres-admin-url", default=POSTGRES_ADMIN_URL)
    args = parser.parse_args(argv)
    ratios = []
    print(f"{'store':<11} {'page':<9} {'median ms':>10} {'empty ms':>9}")
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="genq-bench-ui-") as folder:
        for store in args.stores.split(","):
            full, empty = bench_store(stack, store, args, Path(folder))
            for name in full:
                print(f"{store:<11} {name:<9} {full[name]:>10.1f} {empty[name]:>9.1f}")
            ratios.append(f"{store} jobs {full['jobs'] / empty['jobs']:.1f} job {full['job'] / empty['job']:.1f}")
    print("ratio: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
