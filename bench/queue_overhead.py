"""genq's per-job overhead, submit to terminal in SQL, against a raw Celery round trip on the same Redis.

    python -m bench.queue_overhead [--jobs 200] [--stores sqlite,postgresql]

Per store (a temp SQLite file; a fresh PostgreSQL database, dropped after): one real `genq-worker`
(threads pool of one, GENQ_TORCH_THREADS=1) on a private queue, its model cache warmed by one job; then --jobs
one-step 64x64 `sd` jobs on the tiny model, submitted in this process through the CLI's path
(validate, INSERT + COMMIT, send the id to Redis), and waited for until all are terminal in SQL.
Job i's overhead = finished_at(i) - finished_at(i-1) (the first: from the first submit) - its run
function's own `seconds`; their mean is wall time per job minus run time per job.
Baseline, measured just before each store: one `celery worker` process (solo pool, acks_late,
prefetch 1) running a no-op task whose result goes to Redis, --jobs messages sent at once; round
trip per job = the gap between consecutive results' date_done.
`submit ms` is the client's time per submit: below the per-job wall time, the worker sets the pace.
Last line: `ratio: <store> X.X, ...`, median overhead / median raw round trip (how many raw Celery
round trips a genq job costs). Run it with -m from the repository root, like every benchmark.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("GENQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get("GENQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NOOP_TASK = "genq_bench.noop"
STALL_S = 180  # no job finished for this long: give up and show the worker's log


# -- processes, queues, databases: everything is undone by the ExitStack, also on Ctrl-C ----------------
def start_worker(stack: contextlib.ExitStack, command: list[str], env: dict[str, str], log_path: Path) -> None:
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # Ctrl-C reaches us only; we stop it
    stack.callback(stop_worker, process)
    deadline = time.monotonic() + STALL_S
    while b" ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{' '.join(command)} did not start:\n{log_tail(log_path)}")
        time.sleep(0.1)


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # its own session, which only it and its children are in
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def purge_queue(redis_url: str, queue: str) -> None:
    """Delete the queue's keys (messages, bindings, results, the worker's pidbox) and its unacked messages."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{queue}*"))
    if keys:
        client.delete(*keys)
    for tag, message in client.hscan_iter("unacked"):
        if queue.encode() in message:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    for key in client.scan_iter(match="_kombu.binding.*", _type="set"):
        for member in client.smembers(key):
            if queue.encode() in member:
                client.srem(key, member)
    client.close()


def postgres_database(stack: contextlib.ExitStack, admin_url: str) -> str:
    name = f"genq_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    stack.callback(drop)
    return admin.url.set(database=name).render_as_string(hide_password=False)


def private_queue(stack: contextlib.ExitStack, redis_url: str, what: str) -> str:
    queue = f"genq-bench-{what}-{uuid.uuid4().hex[:10]}"
    stack.callback(purge_queue, redis_url, queue)
    return queue


def epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def gaps(start: float, ends: list[float]) -> list[float]:
    ends = sorted(ends)
    return [b - a for a, b in zip([start] + ends[:-1], ends)]


# -- the baseline: a no-op Celery task ------------------------------------------------------------------
def baseline_app(redis_url: str, queue: str) -> Celery:
    app = Celery("genq-bench", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue=queue,
                    result_expires=3600, broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
    app.task(name=NOOP_TASK)(noop)
    return app


def noop() -> None:
    """The baseline's task: nothing but the round trip."""


def baseline_round_trips(app: Celery, queue: str, jobs: int) -> list[float]:
    run = uuid.uuid4().hex[:6]
    app.send_task(NOOP_TASK, task_id=f"{queue}-{run}-warm").get(timeout=STALL_S)
    started = time.time()
    results = [app.send_task(NOOP_TASK, task_id=f"{queue}-{run}-{i}") for i in range(jobs)]
    for result in results:
        result.get(timeout=STALL_S)
    return gaps(started, [epoch(result.date_done) for result in results])


# -- genq: the CLI's submit path, a real genq-worker, SQL until terminal ---------------------------------
def submit(rt, model: Path, seed: int) -> str:
    """One job through the path `client submit sd` takes (genq.api.Client.submit: validate, store, send)."""
    job = rt.client.submit("sd", prompt="a red bicycle", negative="blurry", steps=1, width=64, height=64, seed=seed,
                           model=str(model))
    return job.id


def wait_finished(store, job_ids: list[str], log_path: Path) -> list:
    from genq.core.store.states import JobStatus

    pending, done, last_change = list(job_ids), [], time.monotonic()
    while pending:
        job = store.get(pending[0])
        if JobStatus(job.status).finished:
            if job.status != JobStatus.SUCCEEDED.value:
                raise RuntimeError(f"job {job.id} {job.status}: {job.error}\n{log_tail(log_path)}")
            done.append(pending.pop(0))
            last_change = time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            raise RuntimeError(f"job {job.id} still {job.status} after {STALL_S}s:\n{log_tail(log_path)}")
        else:
            time.sleep(0.05)
    return [store.get(job_id) for job_id in done]


def run_seconds(job) -> float:
    seconds = (job.result or {}).get("seconds")
    return float(seconds) if seconds is not None else epoch(job.finished_at) - epoch(job.started_at)


def genq_overheads(stack, args, store: str, model: Path, tmp: Path) -> tuple[list[float], list[float], float]:
    """(per-job overheads, run seconds, submit seconds per job) of --jobs sd jobs on one store."""
    from genq.client.runtime import Runtime
    from genq.core.config import load_settings
    from genq.core.store.db import upgrade

    url = f"sqlite:///{tmp / 'genq.sqlite3'}" if store == "sqlite" else postgres_database(stack, args.postgres)
    upgrade(url)
    env = {**os.environ, "GENQ_HOME": str(tmp / "home"), "GENQ_DATABASE_URL": url, "GENQ_BROKER_URL": args.redis,
           "GENQ_QUEUE": private_queue(stack, args.redis, store), "GENQ_DEVICE": "cpu", "GENQ_TORCH_THREADS": "1",
           "GENQ_SD_MAX_BATCH": "1", "HF_HUB_OFFLINE": "1"}  # each job alone: its own run time is its `seconds`
    log_path = tmp / "genq-worker.log"
    start_worker(stack, [str(BIN / "genq-worker")], env, log_path)
    rt = Runtime(load_settings(env))
    wait_finished(rt.store, [submit(rt, model, 0)], log_path)  # loads the model into the worker's cache
    started = time.time()
    job_ids = [submit(rt, model, seed) for seed in range(1, args.jobs + 1)]
    submitting = time.time() - started
    jobs = wait_finished(rt.store, job_ids, log_path)
    runs = {job.id: run_seconds(job) for job in jobs}
    jobs.sort(key=lambda job: epoch(job.finished_at))
    overheads = [gap - runs[job.id] for gap, job in zip(gaps(started, [epoch(j.finished_at) for j in jobs]), jobs)]
    return overheads, list(runs.values()), submitting / args.jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--redis", default=REDIS_URL, help="default: GENQ_TEST_REDIS_URL or the local Redis")
    parser.add_argument("--postgres", default=POSTGRES_ADMIN_URL, help="a database to CREATE/DROP DATABASE from")
    parser.add_argument("--baseline-worker", metavar="QUEUE", help=argparse.SUPPRESS)  # the baseline's worker process
    args = parser.parse_args(argv)
    if args.baseline_worker:
        baseline_app(args.redis, args.baseline_worker).worker_main(
            ["worker", "--pool", "solo", "--prefetch-multiplier", "1", "--queues", args.baseline_worker, "--hostname",
             f"{args.baseline_worker}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle"])
        return
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - {"sqlite", "postgresql"} or args.jobs < 1:
        parser.error("--stores takes sqlite and/or postgresql, --jobs at least 1")

    from genq.core.sd.tiny import make_tiny_model

    rows, handlers = [], {}
    if threading.current_thread() is threading.main_thread():
        handlers = {number: signal.signal(number, interrupted) for number in (signal.SIGINT, signal.SIGTERM)}
    with contextlib.ExitStack() as stack:
        for number, handler in handlers.items():
            stack.callback(signal.signal, number, handler)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genq-bench-")))
        model = make_tiny_model(tmp / "tiny-sd")
        queue = private_queue(stack, args.redis, "raw")
        start_worker(stack, [sys.executable, "-m", "bench.queue_overhead", "--redis", args.redis,
                             "--baseline-worker", queue],
                     dict(os.environ), tmp / "celery-worker.log")
        app = baseline_app(args.redis, queue)
        print(f"{args.jobs} jobs per store: sd, 1 step, 64x64, tiny model; one worker process each; "
              f"medians and means over the jobs")
        for store in stores:
            raw = baseline_round_trips(app, queue, args.jobs)
            with contextlib.ExitStack() as per_store:
                (tmp / store).mkdir()
                overheads, runs, submit_s = genq_overheads(per_store, args, store, model, tmp / store)
            rows.append((store, overheads, runs, submit_s, raw))
            print(f"{store}: {sum(overheads) + sum(runs):.1f} s for {args.jobs} jobs, raw Celery {sum(raw):.2f} s",
                  flush=True)

    print(f"\n{'store':<11} {'jobs':>5} {'jobs/s':>7} {'overhead median ms':>19} {'mean ms':>8} {'run median ms':>14} "
          f"{'submit ms':>10} {'raw Celery median ms':>21} {'mean ms':>8}")
    for store, overheads, runs, submit_s, raw in rows:
        print(f"{store:<11} {len(runs):>5} {len(runs) / (sum(overheads) + sum(runs)):>7.2f} "
              f"{1e3 * statistics.median(overheads):>19.1f} {1e3 * statistics.mean(overheads):>8.1f} "
              f"{1e3 * statistics.median(runs):>14.1f} {1e3 * submit_s:>10.1f} "
              f"{1e3 * statistics.median(raw):>21.2f} {1e3 * statistics.mean(raw):>8.2f}")
    means = [f"{row[0]} {statistics.mean(row[1]) / statistics.mean(row[4]):.1f}" for row in rows]
    medians = [f"{row[0]} {statistics.median(row[1]) / statistics.median(row[4]):.1f}" for row in rows]
    print("overhead / raw Celery round trip, means: " + ", ".join(means))
    print("ratio: " + ", ".join(medians))


def interrupted(signum, frame) -> None:
    """Ctrl-C or SIGTERM: unwind (which stops the workers, purges the queues, drops the database);
    further signals are ignored so that the cleanup finishes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: workers stopped, queues purged, temp database dropped")
