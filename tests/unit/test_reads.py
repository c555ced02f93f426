"""The read model on SQLite and PostgreSQL: filters and pages, prefixes, a group in sweep order, a job's
history and log, and the figures /metrics exports."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from genq.core.kinds.sd import SD
from genq.core.kinds.train_vae import TrainVAE
from genq.core.params import RunOptions
from genq.core.reads import GroupNotFound, JobFilter, JobNotFound, Reads
from genq.core.store.db import make_engine, session_factory
from genq.core.store.groups import GroupStore, PlannedJob
from genq.core.store.jobs import JobStore
from genq.core.store.models import JobRow, Metric
from genq.core.store.states import JobStatus

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def store(database_url):
    return JobStore(session_factory(make_engine(database_url)))


def set_values(store: JobStore, job_id: str, **values) -> None:
    with store.sessions() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))
        session.commit()


def test_jobs_are_filtered_newest_first_and_paged_by_reading_one_more(store):
    reads = Reads(store.sessions)
    boat = store.create(SD(prompt="A boat at 100%_dawn", model="org/model"))
    bicycle = store.create(SD(prompt="a red bicycle", model="org/model"), options=RunOptions(queue="cpu"))
    trained = store.create(TrainVAE(epochs=1))
    set_values(store, trained.id, status=JobStatus.SUCCEEDED.value)

    assert [j.id for j in reads.jobs()] == [trained.id, bicycle.id, boat.id]
    assert [j.id for j in reads.jobs(JobFilter(status="succeeded"))] == [trained.id]
    assert [j.id for j in reads.jobs(JobFilter(kind="sd", queue="cpu"))] == [bicycle.id]
    assert [j.id for j in reads.jobs(JobFilter(prompt="100%_DAWN"))] == [boat.id]  # literal, any case
    assert reads.jobs(JobFilter(prompt="100%dawn")) == []
    first, last = reads.page(JobFilter(), 2, 0), reads.page(JobFilter(), 2, 2)
    assert ([j.id for j in first.jobs], first.has_next) == ([trained.id, bicycle.id], True)
    assert ([j.id for j in last.jobs], last.has_next) == ([boat.id], False)


def test_a_job_is_found_by_a_unique_prefix_of_its_id_only(store):
    reads = Reads(store.sessions)
    job = store.create(TrainVAE(epochs=1))
    assert reads.resolve(job.id[:6].upper()).id == job.id
    with pytest.raises(JobNotFound, match="at least 4 characters"):
        reads.resolve(job.id[:3])
    with pytest.raises(JobNotFound, match="no job"):
        reads.resolve("%%%%")


def test_a_group_reads_in_sweep_order_with_its_counts_and_table(store):
    reads = Reads(store.sessions)
    planned = [PlannedJob(TrainVAE(epochs=1, beta=beta, seed=7), None, {"beta": beta}) for beta in (0.5, 1.0, 4.0)]
    group, _ = GroupStore(store).create("train-vae", "betas", {"fixed": {}, "swept": {"beta": [0.5, 1.0, 4.0]}},
                                        planned, RunOptions())
    rows = reads.group_jobs(group.id)
    set_values(store, rows[1].id, status=JobStatus.SUCCEEDED.value, started_at=START,
               finished_at=START + timedelta(seconds=3), result={"test_loss_per_image": 150.0})

    assert reads.resolve_group("betas").id == group.id and reads.resolve_group(group.id[:5]).id == group.id
    with pytest.raises(GroupNotFound):
        reads.resolve_group("alphas")
    assert [j.group_point["beta"] for j in reads.jobs(JobFilter(group_id=group.id))] == [0.5, 1.0, 4.0]
    assert dict(reads.group_counts(group.id)) == {"queued": 2, "succeeded": 1}
    table = reads.group_table(group.id)
    assert [(line["beta"], line["status"], line["seconds"], line["test_loss_per_image"], line["seed"]) for line in table] == [
        (0.5, "queued", None, None, 7), (1.0, "succeeded", 3.0, 150.0, 7), (4.0, "queued", None, None, 7)]


def test_a_jobs_history_runs_metrics_and_log(store):
    reads = Reads(store.sessions)
    job = store.create(TrainVAE(epochs=1))
    store.transition(job.id, JobStatus.QUEUED, JobStatus.RUNNING, worker="w1", device="cpu")
    store.transition(job.id, JobStatus.RUNNING, JobStatus.QUEUED, worker="w2", reason="lease expired")
    store.transition(job.id, JobStatus.QUEUED, JobStatus.RUNNING, worker="w2", device="cuda:0")
    with store.sessions() as session:
        session.add_all([Metric(job_id=job.id, step=step, name=name, value=float(step))
                         for name in ("b_loss", "a_loss") for step in (2, 1)])
        session.commit()
    for n in range(5):
        store.append_log(job.id, "info", f"line {n}")

    history = reads.history(job.id)
    assert [e.to_status for e in history.events] == ["queued", "running", "queued", "running"]
    assert [(r.attempt, r.worker, r.device, r.ended) for r in history.runs] == [(1, "w1", "cpu", "queued"),
                                                                                (2, "w2", "cuda:0", None)]
    assert reads.metric_names(job.id) == [("a_loss", 2), ("b_loss", 2)]
    assert reads.metric_points(job.id, "b_loss") == [(1, 1.0), (2, 2.0)]
    assert reads.metric_series(job.id) == {"a_loss": [(1, 1.0), (2, 2.0)], "b_loss": [(1, 1.0), (2, 2.0)]}
    assert [line.message for line in reads.log_tail(job.id, 2)] == ["line 3", "line 4"]
    after = reads.logs(job.id)[1].id
    assert [line.message for line in reads.logs(job.id, after, limit=2)] == ["line 2", "line 3"]


def test_the_figures_count_jobs_queues_and_finished_run_time(store):
    reads = Reads(store.sessions)
    for seconds in (10, 20):
        done = store.create(TrainVAE(epochs=1))
        set_values(store, done.id, status=JobStatus.SUCCEEDED.value, started_at=START,
                   finished_at=START + timedelta(seconds=seconds))
    store.create(SD(prompt="a", model="org/model"), options=RunOptions(queue="render"))
    store.create(SD(prompt="b", model="org/model"))

    figures = reads.figures(lease_s=30)
    assert figures.jobs == {("succeeded", "train-vae"): 2, ("queued", "sd"): 2}
    assert figures.queued == reads.queue_lengths() == {"gpu": 1, "render": 1}
    [runs] = figures.run_times
    assert (runs.kind, runs.state, runs.count, round(runs.seconds, 3)) == ("train-vae", "succeeded", 2, 30.0)
    assert figures.workers == {}
