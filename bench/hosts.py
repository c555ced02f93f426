"""genq across hosts, at size: the several-host bed of tests/hosts.py (a head with PostgreSQL, Redis and
moto's S3 server; two GPU nodes with a worker each; a laptop that reaches only the head), a sweep
of N jobs from the laptop, and K partitions while it runs: each cuts the link of a node that runs a
job until the other node has taken that job over, then restores it.

Audited as the soak is: lost (a submitted job that did not end), duplicated (a job that ended more
than once, or whose artifacts come from more than one attempt), failed; every artifact is downloaded
on the laptop and checked against its sha256. A partition's recovery is the time from the cut to its
job running on the other node. Prints, last:

    hosts: nodes=2 jobs=N ok=N lost=0 dup=0 failed=0 partitions=K recovery median X s / max Y s

Needs root (network namespaces) and GENQ_DATA_ROOT with MNIST/raw. Exit 0 only with nothing lost,
duplicated or failed.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.hosts import VAE, Bed, Cluster, namespaces_refused

REPO = Path(__file__).resolve().parents[1]
TAKEOVER_WAIT_S = 120


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100, help="jobs in all (default 100): a train-vae, an "
                        "interpolate and a sample-vae after it, the rest a sweep of tiny SD jobs")
    parser.add_argument("--partitions", type=int, default=2, help="node links cut mid-job (default 2)")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps of each SD job (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="which node is cut first, and when (default 1)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the jobs may take (default 1800)")
    args = parser.parse_args(argv)
    if args.jobs < 4:
        parser.error("--jobs must be at least 4")
    return args


def partition(cluster: Cluster, job_id: str) -> float | None:
    """Cut the link of the node that runs `job_id` until the other node runs it; the seconds that took
    (None if the job ended first: the cut came too late)."""
    victim = cluster.node_running(job_id)
    cut_at = time.monotonic()
    victim.cut()
    try:
        while time.monotonic() - cut_at < TAKEOVER_WAIT_S:
            status = cluster.client_json("status", job_id)
            if status["status"] == "running" and not status["worker"].startswith(f"{victim.name}:"):
                return time.monotonic() - cut_at
            if status["status"] in ("succeeded", "failed", "cancelled"):
                return None
            time.sleep(0.5)
        raise SystemExit(f"hosts: job {job_id} was not taken over within {TAKEOVER_WAIT_S} s of the cut")
    finally:
        victim.restore()


def audit(cluster: Cluster, ids: list[str], out: Path) -> dict[str, int]:
    counts = {"ok": 0, "lost": 0, "dup": 0, "failed": 0}
    for job_id in ids:
        found = cluster.audit(job_id, out)
        if not found.ends:
            counts["lost"] += 1
            continue
        if found.ends > 1 or len(found.attempts) > 1:
            counts["dup"] += 1
        if found.shown["status"] != "succeeded":
            counts["failed"] += 1
        elif found.bad_downloads:
            counts["dup"] += 1  # an artifact whose bytes are not the recorded ones: counted as a bad copy
        else:
            counts["ok"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if refused := namespaces_refused():
        print(f"hosts: cannot build the bed here: {refused}", file=sys.stderr)
        return 2
    from genq.core.sd.tiny import make_tiny_model
    from genq.core.vae.data import default_data_root

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="genq-bench-hosts-", dir="/var/tmp"))
    try:
        model = make_tiny_model(work / "tiny-sd")
        return run(args, rng, model, default_data_root(REPO))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, rng: random.Random, model: Path, data_root: Path) -> int:
    with Bed() as bed:
        cluster = Cluster(bed, model, data_root)
        for node in cluster.nodes:
            cluster.start_worker(node)
        for node in cluster.nodes:
            cluster.wait_ready(node)
        started = time.monotonic()
        sd = cluster.sd(args.steps)
        group = cluster.client_json("submit", "sd", *sd, "--prompt", "a lighthouse", "--sweep",
                                    f"seed=1..{args.jobs - 3 - args.partitions}", "--yes")
        trained = cluster.client("submit", "train-vae", *VAE).stdout.strip()
        after = [cluster.client("submit", "interpolate", "--model", trained).stdout.strip(),
                 cluster.client("submit", "sample-vae", "--model", trained).stdout.strip()]
        ids = [job["id"] for job in group["jobs"]] + [trained, *after]
        print(f"hosts: {len(ids)} jobs submitted from the laptop; one long job more for each partition", file=sys.stderr)

        recoveries = []
        for index in range(args.partitions):  # each on a long job of its own, which outlives a lease
            time.sleep(rng.uniform(0, 5))
            long_job = cluster.client("submit", "sd", *cluster.long_sd(), "--priority", "9").stdout.strip()
            ids.append(long_job)
            took = partition(cluster, long_job)
            print(f"hosts: partition {index + 1}: " + (f"taken over after {took:.1f} s" if took is not None
                                                       else "its job ended before the takeover"), file=sys.stderr)
            if took is not None:
                recoveries.append(took)
        cluster.wait_all(ids, timeout=args.timeout)
        elapsed = time.monotonic() - started
        counts = audit(cluster, ids, bed.root / "out")
    recovery = (f"recovery median {statistics.median(recoveries):.1f} s / max {max(recoveries):.1f} s"
                if recoveries else "no partition took effect")
    print(f"hosts: {len(ids)} jobs in {elapsed:.0f} s", file=sys.stderr)
    print(f"hosts: nodes=2 jobs={len(ids)} ok={counts['ok']} lost={counts['lost']} dup={counts['dup']} "
          f"failed={counts['failed']} partitions={len(recoveries)} {recovery}")
    return 0 if counts["lost"] == counts["dup"] == counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
