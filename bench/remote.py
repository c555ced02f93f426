"""Submitting over HTTP: a sweep and single submits through a genq server against the same in-process.

    python -m bench.remote [--jobs 1000] [--singles 200] [--store postgresql] [--repeats 3]

One store (a fresh PostgreSQL database, dropped after; or a temp SQLite file), a private Redis queue
(purged after; no worker runs) and a real `client server` subprocess on a free port. A user is added
and its token used by `genq.Client(address=..., token=...)`, so every request is authenticated as a
user's is. Per round: `Client.sweep("train-vae", seed=range(--jobs))` in-process and over HTTP (one
POST /api/jobs, whose answer is the group with its table), then --singles `Client.submit` each way
(one POST each over HTTP). Each runs --repeats times, alternating; medians are reported. Every round
checks that the store holds every job submitted.
Last line: `ratio: sweep X.XX, single X.XX`: jobs/s over HTTP over jobs/s in-process (the sweep's
goal is >= 0.5).
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
import time
from pathlib import Path

from bench.queue_overhead import POSTGRES_ADMIN_URL, REDIS_URL, postgres_database, private_queue
from bench.sd_queue import broker
from bench.submit import client_for, timed

SERVER_START_S = 60.0


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_server(stack: contextlib.ExitStack, env: dict[str, str], log_path: Path) -> str:
    """`client server --port 0` in the background; its URL (stopped when the stack closes)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "genq.client.cli", "server", "--port", "0"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop_server, process)
    deadline = time.monotonic() + SERVER_START_S
    while not (lines := [line for line in log_path.read_text().splitlines() if line.startswith("genq server: ")]):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return lines[0].split()[2].partition("/?")[0].rstrip("/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in each sweep")
    parser.add_argument("--singles", type=int, default=200, help="single submits each way per round")
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--postgres-admin-url", default=POSTGRES_ADMIN_URL)
    args = parser.parse_args(argv)

    from genq import Client
    from genq.core.store.users import UserStore

    with contextlib.ExitStack() as stack:
        redis_url = broker(stack, args.redis_url)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genq-bench-remote-")))
        database_url = (f"sqlite:///{tmp / 'genq.db'}" if args.store == "sqlite"
                        else postgres_database(stack, args.postgres_admin_url))
        queue = private_queue(stack, redis_url, "remote")
        local = client_for(database_url, redis_url, queue, tmp)
        _, token = UserStore(local.store.sessions).add("bench")
        env = {key: value for key, value in os.environ.items() if not key.startswith("GENQ_")}
        env.update({"GENQ_HOME": str(tmp), "GENQ_DATABASE_URL": database_url, "GENQ_BROKER_URL": redis_url,
                    "GENQ_QUEUE": queue, "GENQ_MAX_SWEEP": "1000000"})
        remote = Client(address=start_server(stack, env, tmp / "server.log"), token=token)
        for client in (local, remote):  # warm: imports, statement caches, connections
            client.sweep("train-vae", seed=range(10))
            client.submit("train-vae", seed=0)
        expected = 22
        times: dict[str, list[float]] = {"sweep local": [], "sweep http": [], "single local": [], "single http": []}
        for _ in range(args.repeats):
            for where, client in (("local", local), ("http", remote)):
                times[f"sweep {where}"].append(timed(lambda: client.sweep("train-vae", seed=range(args.jobs))))
                times[f"single {where}"].append(
                    timed(lambda: [client.submit("train-vae", seed=i) for i in range(args.singles)]))
            expected += 2 * (args.jobs + args.singles)
            if (rows := len(local.store.list(limit=None))) != expected:
                raise RuntimeError(f"{rows} jobs stored after the round, expected {expected}")
        median = {what: statistics.median(seconds) for what, seconds in times.items()}
        print(f"{'what':<14} {'jobs':>6} {'median s':>9} {'jobs/s':>9}   ({args.store}, {args.repeats} rounds)")
        for what, seconds in median.items():
            jobs = args.jobs if what.startswith("sweep") else args.singles
            print(f"{what:<14} {jobs:>6} {seconds:>9.3f} {jobs / seconds:>9.0f}")
        print(f"ratio: sweep {median['sweep local'] / median['sweep http']:.2f}, "
              f"single {median['single local'] / median['single http']:.2f}")


if __name__ == "__main__":
    main()
