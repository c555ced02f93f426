"""The chaos soak's short form (bench.soak): 36 jobs on 2 real workers while workers are killed and
frozen, Redis loses every message, PostgreSQL restarts, a client dies between insert and send,
PostgreSQL is down for 15 s (longer than GENQ_RETRY_FOR, 10 s here) with clients submitting and a
worker child killed during it, a worker is frozen inside a write transaction past its lease, Redis is
down for 15 s and comes back with its data, and malformed messages are pushed onto the queues.

Every job must end `succeeded` exactly once: nothing lost, nothing duplicated, nothing failed, no
worker child dead on its own; a client may give up only while the database is down.
The services are private (tests.faults): this test does not use the machine's Redis or PostgreSQL.
GENQ_SOAK_SEED picks another random order of faults and jobs.
"""
from __future__ import annotations

import os

import pytest

from bench.soak import SoakConfig, run_soak

pytestmark = pytest.mark.integration


@pytest.mark.timeout(540)
def test_soak_loses_duplicates_and_fails_nothing(mnist_root):
    config = SoakConfig(jobs=36, workers=2, kills=3, stops=1, redis_wipes=1, postgres_restarts=1, client_kills=1,
                        postgres_downs=1, postgres_down_s=15, frozen_writes=1, redis_downs=1, redis_down_s=15,
                        malformed_pushes=1, outage_submits=2, retry_for=10, vae_pairs=2,
                        seed=int(os.environ.get("GENQ_SOAK_SEED", "1")), timeout=180, quiet=30, lease=6,
                        data_root=mnist_root)
    report = run_soak(config)
    print(report.render())
    if not report.ok:
        pytest.fail(report.failure_message(), pytrace=False)
    for kind in ("postgres-down", "frozen-in-write", "redis-down", "malformed"):
        assert report.count(kind) == 1, f"{kind} was not injected:\n{report.render()}"
