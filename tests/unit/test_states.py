"""The state machine: illegal transitions refused, and of two racing workers exactly one wins."""
from __future__ import annotations

import threading

import pytest

from genq.core.kinds.train_vae import TrainVAE
from genq.core.store.db import make_engine, session_factory
from genq.core.store.jobs import JobStore
from genq.core.store.states import ALLOWED, JobStatus, TransitionError, transition


@pytest.fixture
def store(database_url):
    return JobStore(session_factory(make_engine(database_url)))


def put_in(store: JobStore, status: JobStatus) -> str:
    if status is JobStatus.WAITING:
        return store.create(TrainVAE(epochs=1), depends_on=store.create(TrainVAE(epochs=1)).id).id
    job = store.create(TrainVAE(epochs=1))
    path = {JobStatus.QUEUED: [], JobStatus.RUNNING: [JobStatus.RUNNING],
            JobStatus.SUCCEEDED: [JobStatus.RUNNING, JobStatus.SUCCEEDED],
            JobStatus.FAILED: [JobStatus.FAILED], JobStatus.CANCELLED: [JobStatus.CANCELLED]}[status]
    current = JobStatus.QUEUED
    for step in path:
        store.transition(job.id, current, step)
        current = step
    return job.id


ILLEGAL = [(a, b) for a in JobStatus for b in JobStatus if b not in ALLOWED[a]]


@pytest.mark.parametrize("source,target", ILLEGAL, ids=[f"{a.value}->{b.value}" for a, b in ILLEGAL])
def test_every_illegal_transition_is_refused_and_changes_nothing(store, source, target):
    job_id = put_in(store, source)
    events_before = len(store.events(job_id))
    with pytest.raises(TransitionError, match="illegal"):
        store.transition(job_id, source, target)
    assert store.get(job_id).status == source.value
    assert len(store.events(job_id)) == events_before


def test_a_transition_from_the_wrong_state_is_refused(store):
    job_id = put_in(store, JobStatus.SUCCEEDED)
    with pytest.raises(TransitionError, match="no longer queued"):
        store.transition(job_id, JobStatus.QUEUED, JobStatus.RUNNING)


def test_each_transition_is_recorded_with_its_worker_and_reason(store):
    job_id = put_in(store, JobStatus.QUEUED)
    store.transition(job_id, JobStatus.QUEUED, JobStatus.RUNNING, worker="w1", reason="attempt 1")
    store.transition(job_id, JobStatus.RUNNING, JobStatus.FAILED, worker="w1", reason="boom", values={"error": "boom"})
    events = [(e.from_status, e.to_status, e.worker, e.reason) for e in store.events(job_id)]
    assert events == [(None, "queued", None, "submitted"), ("queued", "running", "w1", "attempt 1"),
                      ("running", "failed", "w1", "boom")]
    job = store.get(job_id)
    assert job.attempts == 1 and job.error == "boom" and job.finished_at is not None


def test_two_concurrent_starts_exactly_one_wins(database_url):
    # Given one queued job and many threads, each with its own connection
    if not database_url.startswith("postgresql"):
        pytest.skip("real concurrency is checked on PostgreSQL")
    engine = make_engine(database_url)
    store = JobStore(session_factory(engine))
    for _ in range(5):
        job_id = put_in(store, JobStatus.QUEUED)
        barrier = threading.Barrier(8)
        winners, losers = [], []

        def start(worker: str) -> None:
            with store.sessions() as session:
                barrier.wait()
                try:
                    transition(session, job_id, JobStatus.QUEUED, JobStatus.RUNNING, worker=worker)
                    winners.append(worker)
                except TransitionError:
                    losers.append(worker)

        threads = [threading.Thread(target=start, args=(f"w{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then exactly one started it, and the audit holds one start
        assert len(winners) == 1 and len(losers) == 7
        job = store.get(job_id)
        assert job.worker_host == winners[0] and job.attempts == 1
        assert [e.to_status for e in store.events(job_id)].count("running") == 1
    engine.dispose()


def test_a_takeover_is_refused_once_another_worker_restarted_the_job(store):
    job_id = put_in(store, JobStatus.RUNNING)
    # worker B takes the abandoned job over and starts attempt 2
    store.transition(job_id, JobStatus.RUNNING, JobStatus.QUEUED, expected_attempts=1)
    store.transition(job_id, JobStatus.QUEUED, JobStatus.RUNNING, worker="B")
    # worker C, which saw attempt 1 as abandoned, must not take attempt 2 away
    with pytest.raises(TransitionError):
        store.transition(job_id, JobStatus.RUNNING, JobStatus.QUEUED, expected_attempts=1)
    assert store.get(job_id).worker_host == "B"
