"""Submitting many jobs: one sweep against as many single submits, in one process, per store.

    python -m bench.submit [--jobs 1000] [--stores sqlite,postgresql] [--repeats 3]

Per store (a temp SQLite file; a fresh PostgreSQL database, dropped after) and a private Redis
queue (purged after; no worker runs): `Client.sweep("train-vae", seed=range(N))` (validate every
point, one transaction for the rows, pipelined wake-ups) against N `Client.submit("train-vae",
seed=i)` (the CLI's path per job: validate, INSERT + COMMIT, send, record the send). Each mode runs
--repeats times, alternating; the median is reported. A job submitted is a row in SQL and a message
in Redis: both are counted after each round, and the round fails if either is short.
Last line: `ratio: <store> X.X, ...`, sweep jobs/s over single-submit jobs/s (the goal is >= 20).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import redis

from bench.queue_overhead import POSTGRES_ADMIN_URL, REDIS_URL, postgres_database, private_queue
from bench.sd_queue import broker


def client_for(database_url: str, redis_url: str, queue: str, home: Path):
    from genq import Client
    from genq.core.config import load_settings
    from genq.core.store.db import upgrade

    upgrade(database_url)
    env = {"GENQ_HOME": str(home), "GENQ_DATABASE_URL": database_url, "GENQ_BROKER_URL": redis_url,
           "GENQ_QUEUE": queue, "GENQ_DATA_ROOT": str(home / "data"), "GENQ_MAX_SWEEP": "1000000"}
    client = Client(load_settings(env))
    client.store, client.lifecycle.app  # connect before timing
    return client


def messages_waiting(redis_url: str, queue: str) -> int:
    from genq.core.broker import priority_lists

    connection = redis.Redis.from_url(redis_url)
    try:
        return sum(connection.llen(key) for key in priority_lists(queue))
    finally:
        connection.close()


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_store(stack: contextlib.ExitStack, store: str, args, redis_url: str, tmp: Path) -> tuple[float, float]:
    """(median seconds per sweep of --jobs, median seconds for --jobs single submits)."""
    database_url = (f"sqlite:///{tmp / f'{store}.db'}" if store == "sqlite"
                    else postgres_database(stack, args.postgres_admin_url))
    queue = private_queue(stack, redis_url, f"submit-{store}")
    client = client_for(database_url, redis_url, queue, tmp)
    client.sweep("train-vae", seed=range(10))  # warm: imports, statement caches, the broker connection
    client.submit("train-vae", seed=0)
    sweeps, singles = [], []
    expected = 11
    for _ in range(args.repeats):
        sweeps.append(timed(lambda: client.sweep("train-vae", seed=range(args.jobs))))
        singles.append(timed(lambda: [client.submit("train-vae", seed=i) for i in range(args.jobs)]))
        expected += 2 * args.jobs
        rows, messages = len(client.store.list(limit=None)), messages_waiting(redis_url, queue)
        if (rows, messages) != (expected, expected):
            raise RuntimeError(f"{store}: {rows} rows and {messages} messages after the round, expected {expected} each")
    return statistics.median(sweeps), statistics.median(singles)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--postgres-admin-url", default=POSTGRES_ADMIN_URL)
    args = parser.parse_args(argv)
    stores = [store.strip() for store in args.stores.split(",") if store.strip()]
    ratios = []
    print(f"{'store':<12} {'jobs':>6} {'sweep s':>9} {'sweep jobs/s':>13} {'single s':>9} {'single jobs/s':>14}")
    with contextlib.ExitStack() as stack:
        redis_url = broker(stack, args.redis_url)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genq-bench-submit-")))
        for store in stores:
            sweep_s, single_s = bench_store(stack, store, args, redis_url, tmp)
            print(f"{store:<12} {args.jobs:>6} {sweep_s:>9.3f} {args.jobs / sweep_s:>13.0f} "
                  f"{single_s:>9.3f} {args.jobs / single_s:>14.0f}", flush=True)
            ratios.append(f"{store} {single_s / sweep_s:.1f}")
    print("ratio: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
