"""The chaos soak's short form (bench.soak): 30 jobs on 2 real workers while workers are killed and
frozen, Redis loses every message, PostgreSQL restarts and a client dies between insert and send.

Every job must end `succeeded` exactly once: nothing lost, nothing duplicated, nothing failed.
The services are private (tests.faults): this test does not use the machine's Redis or PostgreSQL.
GENQ_SOAK_SEED picks another random order of faults and jobs.
"""
from __future__ import annotations

import os

import pytest

from bench.soak import SoakConfig, run_soak

pytestmark = pytest.mark.integration


@pytest.mark.timeout(360)
def test_soak_loses_duplicates_and_fails_nothing(mnist_root):
    config = SoakConfig(jobs=30, workers=2, kills=3, stops=1, redis_wipes=1, postgres_restarts=1, client_kills=1,
                        vae_pairs=2, seed=int(os.environ.get("GENQ_SOAK_SEED", "1")), timeout=90, quiet=30,
                        lease=6, data_root=mnist_root)
    report = run_soak(config)
    print(report.render())
    if not report.ok:
        pytest.fail(report.failure_message(), pytrace=False)
