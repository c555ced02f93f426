"""The worker registry and the claim of companion jobs for a batch, on SQLite and PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import pytest

from genq.core.params import RunOptions
from genq.core.store.db import make_engine, session_factory
from genq.core.store.jobs import JobStore
from genq.core.store.workers import WorkerIdentity, WorkerRegistry, WorkerState
from genq.core.kinds.sd import SD
from genq.core.config import load_settings
from tests.faults import wait_for

SHORT_LEASE_S = 1.5


def identity(name: str, pid: int, device: str = "cpu") -> WorkerIdentity:
    return WorkerIdentity(name=name, host="node-a", pid=pid, device=device, device_name="x86_64", device_memory=None,
                          queues=("gpu",), versions={"genq": "test"})


@pytest.fixture
def stores(database_url):
    sessions = session_factory(make_engine(database_url))
    return JobStore(sessions), WorkerRegistry(sessions)


def states(registry: WorkerRegistry, lease_s: float, include_all: bool = False) -> list[tuple[str, int, str]]:
    return [(v.row.name, v.row.pid, v.state.value) for v in registry.list(lease_s, include_all=include_all)]


def test_a_worker_is_idle_then_busy_with_its_job_then_idle_with_one_more_job_done(stores):
    store, registry = stores
    job = store.create(SD(prompt="a", model="org/model"))
    row = registry.register(identity("node-a:gpu0", 11, "cuda:0"))
    assert states(registry, 30) == [("node-a:gpu0", 11, "idle")]

    registry.busy(row, job.id)
    [view] = registry.list(30)
    assert (view.state, view.row.current_job, view.job_progress["id"]) == (WorkerState.BUSY, job.id, job.id)

    registry.idle(row, finished_jobs=3)
    [view] = registry.list(30)
    assert (view.state, view.row.current_job, view.row.jobs_done, view.job_progress) == (WorkerState.IDLE, None, 3, None)


def test_a_silent_worker_reads_lost_a_stopped_one_stopped_and_a_replaced_run_is_kept_in_view(stores):
    _, registry = stores
    # Given two workers of one node, one of which dies (it stops being seen) while the other beats
    alive = registry.register(identity("node-a:cpu0", 21))
    dead = registry.register(identity("node-a:cpu1", 22))

    def dead_one_lost() -> bool:
        registry.seen(alive)
        return ("node-a:cpu1", 22, "lost") in states(registry, SHORT_LEASE_S)

    wait_for(dead_one_lost, 10, "the silent run to read lost")
    # When the dead one is restarted under its name
    registry.register(identity("node-a:cpu1", 23))
    # Then the fleet shows the live runs first, then the lost one
    assert states(registry, SHORT_LEASE_S) == [("node-a:cpu0", 21, "idle"), ("node-a:cpu1", 23, "idle"),
                                               ("node-a:cpu1", 22, "lost")]
    assert [state for _, _, state in states(registry, 3600)] == ["idle", "idle", "idle"]  # none is silent that long

    # When the dead run is marked stopped (a warm shutdown), it no longer shows behind its replacement
    registry.stopped(dead)
    assert ("node-a:cpu1", 22, "stopped") not in states(registry, 3600)
    assert ("node-a:cpu1", 22, "stopped") in states(registry, 3600, include_all=True)


def test_companions_are_claimed_highest_priority_first_within_the_budget_and_never_twice(stores, tmp_path: Path):
    store, _ = stores
    first = store.create(SD(prompt="first", model="org/model", seed=1))
    low = store.create(SD(prompt="low", model="org/model", seed=2), options=RunOptions(priority=1))
    high = store.create(SD(prompt="high", model="org/model", seed=3), options=RunOptions(priority=9))
    other_queue = store.create(SD(prompt="elsewhere", model="org/model"), options=RunOptions(queue="cpu"))
    middle = store.create(SD(prompt="middle", model="org/model", seed=4))
    store.claim(first.id, "w1", 30)

    seen = []

    def take_two(job) -> bool:
        seen.append(job.id)
        return len(seen) <= 2

    claimed = store.claim_companions(store.get(first.id), ("gpu",), "w1", 30, "cpu", take_two)

    assert seen == [high.id, middle.id, low.id]  # priority first, then submission order; other queues never
    assert claimed == [(high.id, 1), (middle.id, 1)]
    assert [store.get(j).status for j in (high.id, middle.id, low.id, other_queue.id)] == [
        "running", "running", "queued", "queued"]
    event = store.events(high.id)[-1]
    assert (event.worker, event.device, event.reason) == ("w1", "cpu", f"claimed to run in one batch with job {first.id}")
    # A second worker finds only what is left
    assert store.claim_companions(store.get(first.id), ("gpu",), "w2", 30, "cpu", lambda job: True) == [(low.id, 1)]


def test_the_queue_of_a_job_comes_from_its_kind_unless_the_submit_names_one(database_url):
    settings = load_settings({"GENQ_QUEUE": "main", "GENQ_KIND_QUEUES": "sd=render"})
    store = JobStore(session_factory(make_engine(database_url)), settings.queue_for)
    assert store.create(SD(prompt="a", model="org/model")).queue == "render"
    assert store.create(SD(prompt="a", model="org/model"), options=RunOptions(queue="q2", priority=7)).queue == "q2"
    assert settings.queue_for("train-vae") == "main" and settings.worker_queues == ("main", "render")


def test_a_heartbeat_carries_the_gpus_figures_and_a_cpu_worker_has_none(stores):
    from genq.worker.gpu_figures import GpuFigures

    _, registry = stores
    gpu, cpu = registry.register(identity("gpu-node:gpu0", 1, "cuda:0")), registry.register(identity("cpu-node:cpu0", 2))
    registry.seen(gpu, gpu_utilization=87, gpu_memory_used=5 * 2**30)
    registry.report(cpu, None, 0, **GpuFigures("cpu").read())
    rows = {view.row.name: view.row for view in registry.list(lease_s=30)}
    assert (rows["gpu-node:gpu0"].gpu_utilization, rows["gpu-node:gpu0"].gpu_memory_used) == (87, 5 * 2**30)
    assert (rows["cpu-node:cpu0"].gpu_utilization, rows["cpu-node:cpu0"].gpu_memory_used) == (None, None)
    assert GpuFigures("cuda:0").read() == {} or shutil_which_nvidia_smi()  # no driver here: none, and no error


def shutil_which_nvidia_smi() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None
