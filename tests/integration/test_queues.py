"""Queues and priorities with a real worker, a real Redis and the SQL store (SQLite and PostgreSQL)."""
from __future__ import annotations

from pathlib import Path

import pytest

from genq.core.config import load_settings
from genq.core.kinds.sd import SD
from genq.core.params import RunOptions
from genq.core.broker import make_app
from genq.core.lifecycle import Lifecycle

LOW_JOBS = 50
FAST = {"steps": 1, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from genq.core.sd.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("queues") / "tiny-sd")


def test_a_high_priority_job_submitted_behind_fifty_low_priority_ones_starts_next_on_a_busy_worker(genq, model):
    # Given a worker busy with a long job (no batching: each job runs alone)
    genq.start_worker({"GENQ_SD_MAX_BATCH": "1", "GENQ_TORCH_THREADS": "1"})
    blocker = genq.client("submit", "sd", "--model", str(model), "--prompt", "long", "--steps", "150",
                          "--width", "64", "--height", "64").stdout.strip()
    store = genq.store()
    genq.wait_until(lambda: store.get(blocker).status == "running", 60, what="the long job to start")

    # When fifty low-priority jobs are queued behind it, then one high-priority job
    settings = load_settings(genq.env)
    app = make_app(settings)
    lifecycle = Lifecycle(store, settings, app)
    low = [store.create(SD(prompt=f"low {i}", model=str(model), seed=i, **FAST), options=RunOptions(priority=0))
           for i in range(LOW_JOBS)]
    lifecycle.wake([job.id for job in low])
    high = store.create(SD(prompt="urgent", model=str(model), seed=99, **FAST), options=RunOptions(priority=9))
    lifecycle.wake([high.id])
    app.close()
    assert store.get(blocker).status == "running"  # all were queued while the worker was busy
    genq.client("cancel", blocker)

    # Then the high-priority job is the next to start
    genq.wait_until(lambda: store.get(high.id).status == "succeeded", 120, what="the urgent job to run")
    claims = sorted((event.id, job_id) for job_id in [high.id, *(job.id for job in low)]
                    for event in store.events(job_id) if event.to_status == "running")
    assert claims[0][1] == high.id, f"{len(claims)} jobs started, the first was not the urgent one"
    for job in low:  # no need to run them all
        store.request_cancel(job.id)


# Routing is the broker's; the store only keeps the queue's name, which the priority test covers on both stores.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_on_another_queue_waits_for_a_worker_that_consumes_it(genq, model):
    queue = genq.env["GENQ_QUEUE"]
    other = f"{queue}-cpu"
    # Given a worker on the default queue only
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    # When a job is sent to another queue
    job_id = genq.client("submit", "sd", "--model", str(model), "--prompt", "x", "--steps", "1", "--width", "64",
                         "--height", "64", "--queue", other).stdout.strip()
    store = genq.store()
    assert store.get(job_id).queue == other
    default = genq.client_json("submit", "sd", "--model", str(model), "--prompt", "y", "--steps", "1", "--width", "64",
                               "--height", "64", "--wait")
    # Then the worker ran the job of its queue and left the other one queued
    assert (default["queue"], default["status"]) == (queue, "succeeded")
    assert store.get(job_id).status == "queued"
    # Until a worker that consumes that queue starts
    genq.start_worker({"GENQ_TORCH_THREADS": "1", "GENQ_WORKER_QUEUES": other})
    genq.wait_until(lambda: store.get(job_id).status == "succeeded", 60, what="the other queue's worker to run it")
    workers = {w["pid"]: w for w in genq.client_json("workers")}
    assert sorted(tuple(w["queues"]) for w in workers.values()) == [(queue,), (other,)]
