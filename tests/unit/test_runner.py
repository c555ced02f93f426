"""JobRunner in process, on the real store (SQLite and PostgreSQL) and a real Celery app on the real Redis.

Each test has its own Redis queue (its keys are deleted afterwards). Most runs use `probe`, a test
job kind registered here whose run function does what the test asks (by default: one progress
report, metric, log line and artifact). The takeover test runs a real `sd` job on the tiny model.
A "lost" worker is simulated by claiming a job in the store with a short lease and never renewing it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import redis
from celery import Celery
from sqlalchemy import insert, select

from genq.core.cache import ModelCache
from genq.core.config import Settings, load_settings
from genq.core.kinds import KINDS
from genq.core.kinds.sd import SD
from genq.core.params import JobParams, RunOptions, parse
from genq.core.store.artifacts import FolderStore
from genq.core.store.clock import as_utc, db_now_plus
from genq.core.store.db import make_engine, session_factory
from genq.core.store.jobs import JobStore, RunSuperseded
from genq.core.store.models import JobRow, utcnow
from genq.core.store.states import JobStatus
from genq.core.broker import job_ids_in_broker, make_app, priority_lists
from genq.core.lifecycle import Lifecycle
from genq.worker.liveness import Reconciler
from genq.worker.runner import JobRunner
from tests.unit.test_pod_deletion_cost import api  # noqa: F401 (a fixture: the stand-in API server)
from tests.faults import wait_for as wait_until
from tests.conftest import REDIS_URL, migrated
from tests.faults import PrivatePostgres

LEASE_S = 30.0  # the runner's own lease: never passes during a test
LOST_LEASE_S = 0.5  # the lease of a worker that vanished right after its claim
MAX_ATTEMPTS = 2
RESEND_AFTER_S = 0.5
LOST_WORKER = "lost-host:1"


# -- the probe kind ----------------------------------------------------------------------
HOOKS: dict[str, Callable] = {}  # tag -> what a probe run does instead of the default
RUNS: list[tuple[str, int]] = []  # (job id, attempt) of every probe run, in order


class Probe(JobParams):
    """A test kind: runs the hook its tag names, or reports once and succeeds."""

    kind = "probe"
    run_function = f"{__name__}:run_probe"

    tag: str = "ok"


def run_probe(spec: Probe, ctx) -> dict:
    RUNS.append((ctx.job_id, ctx.attempt))
    hook = HOOKS.get(spec.tag)
    if hook is not None:
        return hook(ctx)
    ctx.progress(1, 1, "probe done")
    ctx.metric(0, "value", float(ctx.attempt))
    ctx.log(f"probe ran as attempt {ctx.attempt}")
    ctx.artifact("out.txt", f"attempt {ctx.attempt}".encode(), "text/plain")
    return {"attempt": ctx.attempt}


@pytest.fixture(autouse=True)
def probe_kind(monkeypatch):
    monkeypatch.setitem(KINDS, Probe.kind, Probe)
    HOOKS.clear()
    RUNS.clear()
    yield
    HOOKS.clear()
    RUNS.clear()


# -- the rig: store, app, runner on one private queue ------------------------------------
@dataclass
class Rig:
    settings: Settings
    store: JobStore
    app: Celery
    runner: JobRunner
    broker: redis.Redis

    @property
    def lifecycle(self) -> Lifecycle:
        return self.runner.lifecycle

    def reconciler(self, me: str = "reconciler-host:7") -> Reconciler:
        return Reconciler(self.lifecycle, me)

    def messages(self) -> Counter:
        """Job id -> how many wake-up messages for it wait in this rig's queue."""
        raws = [raw for key in priority_lists(self.settings.queue) for raw in self.broker.lrange(key, 0, -1)]
        return Counter(json.loads(raw)["headers"]["id"].split(".")[0] for raw in raws)

    def delete_message(self, job_id: str) -> None:
        """Remove the wake-up for `job_id` from the queue, as a broker that lost it would."""
        for key in priority_lists(self.settings.queue):
            for raw in self.broker.lrange(key, 0, -1):
                if json.loads(raw)["headers"]["id"].startswith(job_id):
                    assert self.broker.lrem(key, 0, raw) == 1
                    return
        raise AssertionError(f"no message for {job_id} in the queue")

    def events(self, job_id: str) -> list[tuple[str | None, str, str | None]]:
        return [(e.from_status, e.to_status, e.worker) for e in self.store.events(job_id)]

    def lose(self, job_id: str, worker: str = LOST_WORKER) -> int:
        """Claim `job_id` for a worker that then vanished: its short lease is left to pass."""
        attempt = self.store.claim(job_id, worker, LOST_LEASE_S).attempts
        wait_until(lambda: self.store.lease_expired(job_id), 20, f"the lease of {worker} on {job_id} to pass")
        return attempt

    def db_now(self):
        with self.store.sessions() as session:
            return as_utc(session.scalar(select(db_now_plus(0))))


def make_rig(database_url: str, home: Path, monkeypatch) -> Rig:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = load_settings({
        "GENQ_HOME": str(home),
        "GENQ_DATABASE_URL": database_url,
        "GENQ_BROKER_URL": REDIS_URL,
        "GENQ_QUEUE": f"genq-test-runner-{uuid.uuid4().hex[:12]}",
        "GENQ_DEVICE": "cpu",
        "GENQ_TORCH_THREADS": "1",
        "GENQ_LEASE": str(LEASE_S),
        "GENQ_HEARTBEAT_INTERVAL": "0.2",
        "GENQ_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "GENQ_RESEND_AFTER": str(RESEND_AFTER_S),
        "GENQ_RECONCILE_INTERVAL": "3600",  # reconcile() is called by the tests, never by a thread
        "GENQ_RETRY_FOR": "5",
    })
    store = JobStore(session_factory(make_engine(database_url)), settings.queue_for)
    app = make_app(settings)
    runner = JobRunner(settings=settings, lifecycle=Lifecycle(store, settings, app),
                       artifacts=FolderStore(settings.artifact_root), cache=ModelCache(1))
    return Rig(settings, store, app, runner, redis.Redis.from_url(REDIS_URL))


@pytest.fixture
def rig(database_url, tmp_path, monkeypatch):
    rig = make_rig(database_url, tmp_path / "home", monkeypatch)
    yield rig
    rig.app.close()
    leftovers = rig.broker.keys(f"*{rig.settings.queue}*")
    if leftovers:
        rig.broker.delete(*leftovers)
    rig.broker.close()


# -- claim and deliveries ------------------------------------------------------------------
def test_a_delivery_claims_a_queued_job_for_attempt_1_under_a_lease_set_on_the_database_clock(rig):
    # Given a queued job whose run looks at its own row and at the database's clock
    seen = {}

    def look(ctx) -> dict:
        seen["job"], seen["db_now"] = rig.store.get(ctx.job_id), rig.db_now()
        return {"looked": True}

    HOOKS["look"] = look
    job = rig.store.create(Probe(tag="look"))
    assert job.status == "queued" and job.attempts == 0 and job.lease_until is None

    # When a delivery of its wake-up reaches the runner
    rig.runner.execute(job.id)

    # Then the run held it as attempt 1, running on this worker, with a lease of GENQ_LEASE from the DB's now
    running = seen["job"]
    assert (running.status, running.attempts, running.worker_host) == ("running", 1, rig.settings.worker_name)
    ahead = (as_utc(running.lease_until) - seen["db_now"]).total_seconds()
    assert LEASE_S - 10 <= ahead <= LEASE_S + 0.5, ahead
    # And the job ended succeeded with its result, the lease released, each step recorded once
    done = rig.store.get(job.id)
    assert (done.status, done.attempts, done.result, done.lease_until) == ("succeeded", 1, {"looked": True}, None)
    assert rig.events(job.id) == [(None, "queued", None), ("queued", "running", rig.settings.worker_name),
                                  ("running", "succeeded", rig.settings.worker_name)]
    assert [e.reason for e in rig.store.events(job.id)][1] == "claimed"
    assert RUNS == [(job.id, 1)]


def test_a_probe_run_records_its_writes_under_its_attempt(rig):
    # Given a queued probe job
    job = rig.store.create(Probe())
    # When it runs
    rig.runner.execute(job.id)
    # Then its progress, metric, log line and artifact are stored, the log line under attempt 1
    done = rig.store.get(job.id)
    assert (done.status, done.progress_done, done.progress_total) == ("succeeded", 1, 1)
    assert [(m.name, m.value) for m in rig.store.metrics(job.id)] == [("value", 1.0)]
    assert [(line.message, line.attempt) for line in rig.store.logs(job.id)] == [("probe ran as attempt 1", 1)]
    assert [a.name for a in rig.store.artifacts(job.id)] == ["out.txt"]
    assert rig.runner.artifacts.path(job.id, "out.txt").read_bytes() == b"attempt 1"


class NotInstalled(JobParams):
    """A kind some other worker has: declared here, never registered in KINDS."""

    kind = "not-installed-here"
    run_function = f"{__name__}:run_probe"


def test_a_job_whose_kind_is_not_installed_on_the_worker_fails_with_one_line_naming_the_kind(rig):
    # Given a queued job of a kind this worker does not have (installed where it was submitted)
    job = rig.store.create(NotInstalled())

    # When a delivery of its wake-up reaches the runner
    rig.runner.execute(job.id)

    # Then the job failed (the runner did not crash, the message is not left for another try),
    # with one line naming the missing kind and what this worker has
    done = rig.store.get(job.id)
    assert done.status == "failed" and "\n" not in done.error
    assert done.error.startswith("job kind 'not-installed-here' is not installed on this worker (installed: ")
    assert "probe" in done.error and RUNS == []


def test_a_message_for_a_job_of_another_queue_is_not_run_by_a_worker_that_does_not_consume_it(rig):
    # Given a queued job of a queue this worker does not consume, whose wake-up reached it anyway
    job = rig.store.create(Probe(), options=RunOptions(queue="elsewhere"))

    # When the delivery reaches the runner
    rig.runner.execute(job.id)

    # Then the job is not run here: it stays queued for a worker of its own queue
    assert rig.store.get(job.id).status == "queued" and RUNS == []


def test_a_cancel_asked_while_a_run_fails_wins_over_the_failures_retry(rig):
    # Given a job with retries left whose run fails after a cancel was asked for it
    def cancelled_then_failed(ctx) -> dict:
        rig.store.request_cancel(ctx.job_id)
        raise RuntimeError("out of memory")

    HOOKS["cancel-then-fail"] = cancelled_then_failed
    job = rig.store.create(Probe(tag="cancel-then-fail"), options=RunOptions(retries=2))

    # When it runs
    rig.runner.execute(job.id)

    # Then it ends cancelled (not queued for a retry), its failure kept in the reason
    done = rig.store.get(job.id)
    assert (done.status, done.failed_runs, done.error) == ("cancelled", 0, "cancelled by request")
    assert "out of memory" in rig.store.events(job.id)[-1].reason


def test_text_a_run_reports_that_the_store_cannot_keep_is_kept_with_a_replacement_character(rig):
    # Given a run whose log line and progress message carry a NUL and a lone surrogate (bytes it decoded badly)
    def unstorable(ctx) -> dict:
        ctx.log("read \x00 from \udcff")
        ctx.progress(1, 1, "step\x00done")
        return {}

    HOOKS["unstorable"] = unstorable
    job = rig.store.create(Probe(tag="unstorable"))

    # When it runs (on PostgreSQL such text would make every write of the run fail)
    rig.runner.execute(job.id)

    # Then the job succeeded and the text is kept, each bad character shown as U+FFFD
    assert rig.store.get(job.id).status == "succeeded"
    assert [line.message for line in rig.store.logs(job.id)] == ["read \ufffd from \ufffd"]


def test_a_duplicate_delivery_of_a_job_running_under_a_live_lease_is_dropped(rig):
    # Given a job running on another worker whose lease is live
    job = rig.store.create(Probe())
    assert rig.store.claim(job.id, "other-host:42", LEASE_S).attempts == 1
    before = rig.store.get(job.id)
    events = rig.events(job.id)

    # When a second delivery of its wake-up reaches this runner
    rig.runner.execute(job.id)

    # Then nothing ran and nothing changed: the other worker still holds attempt 1 under the same lease
    assert RUNS == []
    after = rig.store.get(job.id)
    assert (after.status, after.attempts, after.worker_host) == ("running", 1, "other-host:42")
    assert after.lease_until == before.lease_until
    assert rig.events(job.id) == events


def finished_job(rig: Rig, status: str) -> str:
    if status == "cancelled":
        job = rig.store.create(Probe())
        assert rig.store.request_cancel(job.id).never_ran
        return job.id

    def boom(ctx):
        raise ValueError("boom")

    HOOKS["boom"] = boom
    job = rig.store.create(Probe(tag="boom" if status == "failed" else "ok"))
    rig.runner.execute(job.id)
    return job.id


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_delivery_for_a_finished_job_is_dropped(rig, status):
    # Given a job that already ended
    job_id = finished_job(rig, status)
    before = rig.store.get(job_id)
    assert before.status == status
    runs, events = list(RUNS), rig.events(job_id)

    # When another delivery of its wake-up arrives
    rig.runner.execute(job_id)

    # Then it is not run again and its row and history are untouched
    assert RUNS == runs
    after = rig.store.get(job_id)
    assert (after.status, after.attempts, after.result, after.error) == (before.status, before.attempts,
                                                                          before.result, before.error)
    assert rig.events(job_id) == events


def test_a_delivery_for_an_unknown_job_is_dropped(rig):
    rig.runner.execute(str(uuid.uuid4()))
    assert RUNS == []


# -- takeover --------------------------------------------------------------------------------
def test_a_job_whose_lease_expired_is_taken_over_and_attempt_2_runs_it_to_success(rig, tiny_model):
    # Given a real sd job claimed by a worker that vanished, its lease passed by the database's clock
    spec = parse(SD, {"prompt": "a lighthouse", "steps": 1, "width": 64, "height": 64, "seed": 7,
                      "model": str(tiny_model)}, rig.settings)
    job = rig.store.create(spec)
    assert rig.lose(job.id) == 1

    # When a delivery of its wake-up (Redis redelivering it) reaches this runner
    rig.runner.execute(job.id)

    # Then the job was requeued by the takeover, claimed as attempt 2 here, and ran to success
    done = rig.store.get(job.id)
    assert (done.status, done.attempts, done.worker_host) == ("succeeded", 2, rig.settings.worker_name), done.error
    assert done.result["seed"] == 7 and [i["file"] for i in done.result["images"]] == ["image-0.png"]
    assert rig.runner.artifacts.path(job.id, "image-0.png").stat().st_size > 0
    events = rig.store.events(job.id)
    assert [(e.from_status, e.to_status, e.worker) for e in events] == [
        (None, "queued", None), ("queued", "running", LOST_WORKER), ("running", "queued", rig.settings.worker_name),
        ("queued", "running", rig.settings.worker_name), ("running", "succeeded", rig.settings.worker_name)]
    assert events[2].reason == f"lease of {LOST_WORKER} expired (attempt 1); requeued"
    # And every log line is attempt 2's (the lost attempt wrote none)
    lines = rig.store.logs(job.id)
    assert lines and {line.attempt for line in lines} == {2}
    assert lines[0].message.startswith("attempt 2: resuming")


def test_a_job_is_given_up_after_max_attempts_lost_runs_and_its_dependant_fails(rig):
    # Given a job whose first run was lost (the reconciler requeued it) and whose second run was lost too
    job = rig.store.create(Probe())
    dependant = rig.store.create(Probe(), depends_on=job.id)
    rig.lose(job.id, "lost-host:1")
    rig.reconciler().reconcile()
    assert rig.store.get(job.id).status == "queued"
    assert rig.lose(job.id, "lost-host:2") == MAX_ATTEMPTS

    # When a delivery of its wake-up reaches this runner once the second lease has passed
    rig.runner.execute(job.id)

    # Then the job is not run a third time: it failed, "gave up", and what waited for it failed too
    assert RUNS == []
    done = rig.store.get(job.id)
    assert (done.status, done.attempts) == ("failed", MAX_ATTEMPTS)
    assert done.error == f"lease of lost-host:2 expired (attempt {MAX_ATTEMPTS}); gave up after {MAX_ATTEMPTS} attempts"
    assert "gave up" in rig.store.events(job.id)[-1].reason
    after = rig.store.get(dependant.id)
    assert (after.status, after.error) == ("failed", f"dependency {job.id} failed")


def test_a_superseded_run_cannot_write_once_the_job_moved_to_attempt_2(rig):
    # Given a job whose attempt 1 was lost and taken over, now running as attempt 2 elsewhere,
    # which has already reported progress, a metric and a log line
    job = rig.store.create(Probe())
    rig.lose(job.id)
    rig.reconciler().reconcile()
    assert rig.store.claim(job.id, "new-host:2", LEASE_S).attempts == 2
    rig.store.set_progress(job.id, 2, 1, 4, "attempt 2 at step 1")
    rig.store.record_metric(job.id, 2, 1, "loss", 2.0)
    rig.store.append_log(job.id, "info", "attempt 2 started", 2)
    before = snapshot(rig, job.id)
    stored, staged = rig.runner.artifacts.stage(job.id, 1, "model.bin", b"stale weights of attempt 1")
    target = rig.runner.artifacts.path(job.id, "model.bin")

    # When the old attempt 1 (back from a pause) tries each of its writes
    # Then each is refused with RunSuperseded
    with pytest.raises(RunSuperseded):
        rig.store.set_progress(job.id, 1, 3, 4, "attempt 1 at step 3")
    with pytest.raises(RunSuperseded):
        rig.store.record_metric(job.id, 1, 1, "loss", 99.0)
    with pytest.raises(RunSuperseded):
        rig.store.record_metric(job.id, 1, 2, "loss", 99.0)
    with pytest.raises(RunSuperseded):
        rig.store.append_log(job.id, "info", "attempt 1 still here", 1)
    with pytest.raises(RunSuperseded):
        rig.store.record_artifact(job.id, 1, stored, staged.publish)
    # And changed nothing: no progress, metric, log line or artifact of attempt 1, no file published
    assert snapshot(rig, job.id) == before
    assert not target.exists()
    staged.discard()
    # And its heartbeat learns that it lost the job and leaves attempt 2's lease alone
    lease = rig.store.get(job.id).lease_until
    assert not rig.store.heartbeat(job.id, 1, LEASE_S).holds_lease
    assert rig.store.get(job.id).lease_until == lease
    # And once attempt 2 has ended, even attempt 2 can write no more
    rig.store.transition(job.id, JobStatus.RUNNING, JobStatus.SUCCEEDED, expected_attempts=2)
    with pytest.raises(RunSuperseded):
        rig.store.append_log(job.id, "info", "after the end", 2)
    with pytest.raises(RunSuperseded):
        rig.store.set_progress(job.id, 2, 4, 4, "after the end")


def snapshot(rig: Rig, job_id: str) -> tuple:
    job = rig.store.get(job_id)
    return ((job.status, job.attempts, job.worker_host, job.progress_done, job.progress_total, job.progress_message),
            [(m.step, m.name, m.value) for m in rig.store.metrics(job_id)],
            [(line.message, line.attempt) for line in rig.store.logs(job_id)],
            [(a.name, a.sha256) for a in rig.store.artifacts(job_id)])


def test_a_run_taken_over_while_it_runs_stops_and_records_nothing(rig):
    # Given a job whose run, half-way, is taken over (its lease passed while it was paused) by attempt 2
    def taken_over_half_way(ctx) -> dict:
        ctx.log("attempt 1 before the pause")
        ctx.artifact("before.txt", b"written by attempt 1")  # written with the log line before it
        rig.store.transition(ctx.job_id, JobStatus.RUNNING, JobStatus.QUEUED, worker="reconciler-host:7",
                             reason="lease expired; requeued", expected_attempts=ctx.attempt)
        assert rig.store.claim(ctx.job_id, "new-host:2", LEASE_S).attempts == 2
        ctx.progress(2, 4, "attempt 1 after the pause")
        ctx.artifact("after.txt", b"attempt 1 after the pause")  # raises: this run lost its job
        raise AssertionError("a superseded run went on")

    HOOKS["taken-over"] = taken_over_half_way
    job = rig.store.create(Probe(tag="taken-over"))

    # When this runner runs it
    rig.runner.execute(job.id)

    # Then the run stopped at its first write after the takeover and its outcome was not recorded:
    # the job still runs as attempt 2 on the other worker
    assert RUNS == [(job.id, 1)]
    job = rig.store.get(job.id)
    assert (job.status, job.attempts, job.worker_host, job.progress_done) == ("running", 2, "new-host:2", 0)
    assert [(line.message, line.attempt) for line in rig.store.logs(job.id)] == [("attempt 1 before the pause", 1)]
    assert [artifact.name for artifact in rig.store.artifacts(job.id)] == ["before.txt"]
    assert [e.to_status for e in rig.store.events(job.id)] == ["queued", "running", "queued", "running"]


@pytest.mark.parametrize("via", ["reconciler", "delivery"])
def test_cancel_of_a_running_job_whose_lease_then_expires_ends_it_cancelled(rig, via):
    # Given a running job (and one waiting for it) whose worker vanished, and a cancel asked meanwhile
    job = rig.store.create(Probe())
    dependant = rig.store.create(Probe(), depends_on=job.id)
    rig.store.claim(job.id, LOST_WORKER, LOST_LEASE_S)
    outcome = rig.store.request_cancel(job.id)
    assert outcome.status is JobStatus.RUNNING and not outcome.never_ran
    wait_until(lambda: rig.store.lease_expired(job.id), 20, "the lease to pass")

    # When the takeover happens (a reconciler's pass, or a redelivered wake-up)
    if via == "reconciler":
        rig.reconciler().reconcile()
    else:
        rig.runner.execute(job.id)

    # Then the cancel survived the takeover: the job is cancelled (not requeued, not run again)
    assert RUNS == []
    done = rig.store.get(job.id)
    assert (done.status, done.attempts, done.error) == ("cancelled", 1, "cancelled by request")
    last = rig.store.events(job.id)[-1]
    assert (last.from_status, last.to_status) == ("running", "cancelled")
    assert last.reason == f"lease of {LOST_WORKER} expired (attempt 1); cancelled as asked"
    assert rig.messages()[job.id] == 0  # no wake-up was sent for it
    # And the job that waited for it failed
    assert rig.store.get(dependant.id).status == "failed"
    # And a late delivery of its wake-up does nothing
    rig.runner.execute(job.id)
    assert RUNS == [] and rig.store.get(job.id).status == "cancelled"


# -- the reconciler's other duties ---------------------------------------------------------
def test_the_reconciler_releases_a_job_whose_dependency_succeeded_and_fails_the_chain_of_a_failed_one(rig):
    # Given jobs whose dependency ended while nobody released what waited on them (their worker died)
    done_ok = rig.store.create(Probe())
    released = rig.store.create(Probe(), depends_on=done_ok.id)
    done_bad = rig.store.create(Probe())
    failing = rig.store.create(Probe(), depends_on=done_bad.id)
    failing_next = rig.store.create(Probe(), depends_on=failing.id)
    unrelated = rig.store.create(Probe(), depends_on=rig.store.create(Probe()).id)  # its dependency is queued
    for dependency, end in ((done_ok, JobStatus.SUCCEEDED), (done_bad, JobStatus.FAILED)):
        rig.store.claim(dependency.id, "gone-host:3", LEASE_S)
        rig.store.transition(dependency.id, JobStatus.RUNNING, end, expected_attempts=1)
    assert rig.messages() == Counter()

    # When a reconciler makes its pass
    rig.reconciler("reconciler-host:7").reconcile()

    # Then the job whose dependency succeeded is queued, by the reconciler, and its wake-up sent
    job = rig.store.get(released.id)
    assert job.status == "queued" and job.last_sent_at is not None
    event = rig.store.events(released.id)[-1]
    assert (event.from_status, event.to_status, event.worker) == ("waiting", "queued", "reconciler-host:7")
    assert event.reason == f"dependency {done_ok.id} succeeded"
    assert rig.messages() == Counter({released.id: 1})
    # And the chain behind the failed dependency failed, each naming what it waited for
    assert (rig.store.get(failing.id).status, rig.store.get(failing.id).error) == (
        "failed", f"dependency {done_bad.id} failed")
    assert (rig.store.get(failing_next.id).status, rig.store.get(failing_next.id).error) == (
        "failed", f"dependency {failing.id} failed")
    # And a job whose dependency has not ended still waits
    assert rig.store.get(unrelated.id).status == "waiting"

    # And the released job then runs
    rig.runner.execute(released.id)
    assert rig.store.get(released.id).status == "succeeded"


CHAIN_LENGTH = 3 * sys.getrecursionlimit()  # deep enough that a recursive walk would fail


def test_fail_chain_fails_a_chain_deeper_than_the_recursion_limit(tmp_path):
    # Given (on SQLite, to keep it quick) a failed job and a chain of thousands of jobs each waiting for the one before
    store = JobStore(session_factory(make_engine(migrated(f"sqlite:///{tmp_path / 'chain.sqlite3'}"))))
    ids = [str(uuid.uuid4()) for _ in range(CHAIN_LENGTH + 1)]
    now = utcnow()
    base = {"kind": "probe", "params": {"tag": "ok"}, "cancel_requested": False, "submitted_at": now,
            "progress_done": 0, "progress_total": 0}
    rows = [{**base, "id": ids[0], "status": "failed", "attempts": 1, "depends_on": None, "error": "boom"}]
    rows += [{**base, "id": ids[i], "status": "waiting", "attempts": 0, "depends_on": ids[i - 1], "error": None}
             for i in range(1, CHAIN_LENGTH + 1)]
    with store.sessions() as session:
        session.execute(insert(JobRow), rows)
        session.commit()
    assert store.count(JobStatus.WAITING) == CHAIN_LENGTH

    # When the first waiting job's chain is failed
    Lifecycle(store, load_settings({"GENQ_HOME": str(tmp_path / "home")})).fail_chain(
        ids[1], f"dependency {ids[0]} failed", worker="reconciler-host:7")

    # Then every job of the chain failed (no RecursionError), each naming its dependency
    assert store.count(JobStatus.WAITING) == 0
    assert store.count(JobStatus.FAILED) == CHAIN_LENGTH + 1
    last = store.get(ids[-1])
    assert (last.status, last.error) == ("failed", f"dependency {ids[-2]} failed")
    assert [(e.from_status, e.to_status) for e in store.events(ids[-1])] == [("waiting", "failed")]


def test_resend_lost_resends_a_queued_job_whose_message_was_lost_and_only_that_one(rig):
    # Given two queued jobs whose wake-ups were sent; the one for `lost` vanished from Redis
    lost, kept = rig.store.create(Probe()), rig.store.create(Probe())
    rig.lifecycle.wake([lost.id, kept.id])
    assert rig.messages() == Counter({lost.id: 1, kept.id: 1})
    rig.delete_message(lost.id)
    assert rig.messages() == Counter({kept.id: 1})
    # And both wake-ups are older than GENQ_RESEND_AFTER
    wait_until(lambda: {job_id for job_id, _ in rig.store.queued_unsent_since(RESEND_AFTER_S)} == {lost.id, kept.id}, 20,
               "both sends to be older than GENQ_RESEND_AFTER")
    kept_sent = rig.store.get(kept.id).last_sent_at
    lost_sent = rig.store.get(lost.id).last_sent_at

    # When the reconciler looks for lost wake-ups
    rig.reconciler().resend_lost()

    # Then `lost` is sent again, and `kept` (whose message is still in the queue) is not
    assert rig.messages() == Counter({lost.id: 1, kept.id: 1})
    assert as_utc(rig.store.get(lost.id).last_sent_at) > as_utc(lost_sent)
    assert rig.store.get(kept.id).last_sent_at == kept_sent
    # And a second pass right after sends nothing (the new send is recent, the old one is present)
    rig.reconciler().resend_lost()
    assert rig.messages() == Counter({lost.id: 1, kept.id: 1})

    # And each job then runs once from its message
    for job_id in rig.messages():
        rig.runner.execute(job_id)
    assert sorted(RUNS) == sorted([(lost.id, 1), (kept.id, 1)])


def test_resend_lost_resends_nothing_while_every_queued_job_has_its_message(rig):
    # Given queued jobs whose wake-ups are old but all still in the queue
    jobs = [rig.store.create(Probe()) for _ in range(3)]
    rig.lifecycle.wake([job.id for job in jobs])
    wait_until(lambda: len(rig.store.queued_unsent_since(RESEND_AFTER_S)) == 3, 20, "the sends to age")

    # When the reconciler looks for lost wake-ups
    rig.reconciler().resend_lost()

    # Then no message was added
    assert rig.messages() == Counter({job.id: 1 for job in jobs})


def test_a_lease_renewed_after_the_reconciler_read_it_is_not_taken_over(rig):
    # Given a running job whose lease passed (its worker was slow, not dead), as a reconciler has just read it
    job = rig.store.create(Probe())
    rig.lose(job.id, "slow-host:5")
    [stale] = rig.store.expired_leases()
    # And the slow worker's heartbeat renews the lease before the reconciler acts
    assert rig.store.heartbeat(job.id, 1, LEASE_S).holds_lease
    assert not rig.store.lease_expired(job.id)

    # When the reconciler acts on what it read
    rig.lifecycle.take_over(stale, "reconciler-host:7")

    # Then the job is left to its live run: only a lease that has passed by the database's clock is taken over
    job = rig.store.get(job.id)
    assert (job.status, job.attempts, job.worker_host) == ("running", 1, "slow-host:5")


DEAD_CONSUMER = """
import sys, time
from genq.core.config import load_settings
from genq.core.broker import make_app
app = make_app(load_settings({"GENQ_BROKER_URL": sys.argv[1], "GENQ_QUEUE": sys.argv[2]}))
with app.connection_for_read() as connection:
    message = connection.default_channel.basic_get(sys.argv[2], no_ack=False)  # delivered, not acknowledged
    print(message.headers["id"], flush=True)
    time.sleep(3600)
"""


def test_resend_lost_resends_a_queued_job_whose_message_was_taken_by_a_consumer_that_died(rig):
    # Given a queued job whose wake-up a consumer process took (delivered, not acknowledged) and which was
    # then killed before it claimed the job
    job = rig.store.create(Probe())
    rig.lifecycle.wake([job.id])
    consumer = subprocess.Popen([sys.executable, "-c", DEAD_CONSUMER, REDIS_URL, rig.settings.queue],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout.readline().startswith(job.id)
    finally:
        consumer.kill()
        consumer.wait()
        consumer.stdout.close()
    assert rig.messages() == Counter()  # not in the queue any more
    assert job.id in job_ids_in_broker(rig.app, rig.settings.queue)  # only in the dead consumer's unacked hash
    assert rig.store.get(job.id).status == "queued"
    # And both its send and that delivery are older than GENQ_RESEND_AFTER
    wait_until(lambda: [job_id for job_id, _ in rig.store.queued_unsent_since(RESEND_AFTER_S)] == [job.id], 20, "the send to age")
    [delivered] = [rig.broker.zscore("unacked_index", tag) for tag, raw in rig.broker.hgetall("unacked").items()
                   if json.loads(raw)[2] == rig.settings.queue]
    wait_until(lambda: time.time() - delivered > RESEND_AFTER_S + 0.2, 20, "the delivery to age")

    try:
        # When the reconciler looks for lost wake-ups
        rig.reconciler().resend_lost()

        # Then the job is sent again, so that a live worker runs it now rather than in hours
        assert rig.messages() == Counter({job.id: 1})
    finally:
        forget_unacked(rig)


def forget_unacked(rig: Rig) -> None:
    """Remove this rig's queue's entries from kombu's shared `unacked` hash and its index."""
    for tag, raw in rig.broker.hgetall("unacked").items():
        if json.loads(raw)[2] == rig.settings.queue:
            rig.broker.hdel("unacked", tag)
            rig.broker.zrem("unacked_index", tag)


@pytest.fixture
def blip_rig(tmp_path, monkeypatch):
    """A rig on a private PostgreSQL cluster (tests/faults.py) that a test may stop and start."""
    with PrivatePostgres() as postgres:
        rig = make_rig(migrated(postgres.create_database("genq")), tmp_path / "home", monkeypatch)
        try:
            yield rig, postgres
        finally:
            rig.app.close()
            leftovers = rig.broker.keys(f"*{rig.settings.queue}*")
            if leftovers:
                rig.broker.delete(*leftovers)
            rig.broker.close()
            rig.store.sessions.kw["bind"].dispose()


def test_a_database_blip_during_a_runs_cancel_check_does_not_fail_the_job(blip_rig):
    rig, postgres = blip_rig

    # Given a run that, half-way, checks for cancellation while PostgreSQL restarts (down for about a second,
    # well within GENQ_RETRY_FOR)
    def blip_at_the_check(ctx) -> dict:
        ctx.progress(1, 2, "before the blip")
        postgres.stop("fast")
        back = threading.Timer(1.0, postgres.start)
        back.start()
        try:
            ctx.check_cancelled()
        finally:
            back.join()
        ctx.progress(2, 2, "after the blip")
        return {"through": "the blip"}

    HOOKS["blip"] = blip_at_the_check
    job = rig.store.create(Probe(tag="blip"))

    # When it runs
    rig.runner.execute(job.id)

    # Then the blip is waited out like any write's, and the job succeeds
    done = rig.store.get(job.id)
    assert (done.status, done.error, done.result) == ("succeeded", None, {"through": "the blip"})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_superseded_runs_late_upload_to_an_object_store_never_becomes_an_artifact(rig, s3_root, s3_server, tmp_path):
    from genq.core.store.artifacts import open_artifact_store
    from genq.worker.liveness import Heartbeat
    from genq.worker.run_context import JobSuperseded, RunContext

    # Given a job whose attempt 1 wrote a checkpoint to S3, was lost, and now runs as attempt 2 elsewhere
    objects = open_artifact_store(s3_root)
    bucket = s3_root.removeprefix("s3://").split("/")[0]
    job = rig.store.create(Probe())
    assert rig.lose(job.id) == 1  # claimed by a worker whose lease then passed, still running as attempt 1

    def context(attempt: int) -> RunContext:
        return RunContext(job.id, attempt, rig.runner.lifecycle, objects, Heartbeat(rig.runner.lifecycle, job.id, attempt,
                          rig.settings), device="cpu", data_root=tmp_path, cache=ModelCache(1), retry_for_s=5)

    old = context(1)
    old.artifact("checkpoint.bin", b"epoch 1 of attempt 1")
    kept = rig.store.artifact(job.id, "checkpoint.bin")
    rig.reconciler().reconcile()
    assert rig.store.claim(job.id, "new-host:2", LEASE_S).attempts == 2
    # When attempt 1, back from a pause, uploads its next checkpoint
    with pytest.raises(JobSuperseded):
        old.artifact("checkpoint.bin", b"epoch 2 of attempt 1")
    # Then its upload is not the artifact, and was removed: the row and its object are attempt 1's last good ones
    assert rig.store.artifact(job.id, "checkpoint.bin").relative_path == kept.relative_path
    assert s3_server.keys(bucket) == [f"artifacts/{kept.relative_path}"]
    # And attempt 2 resumes from a verified local copy, which goes when its run ends
    new = context(2)
    copy = new.existing_artifact("checkpoint.bin")
    assert copy.read_bytes() == b"epoch 1 of attempt 1"
    new.artifact("checkpoint.bin", b"epoch 2 of attempt 2")
    new.close()
    assert not copy.exists()
    # And attempt 2's write replaced the object: only its own key is left
    row = rig.store.artifact(job.id, "checkpoint.bin")
    assert row.relative_path.startswith(f"{job.id}/2/") and s3_server.keys(bucket) == [f"artifacts/{row.relative_path}"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worker_in_a_pod_marks_it_busy_for_the_run_and_idle_after(rig, api, tmp_path):
    from genq.worker.pod_deletion_cost import ANNOTATION, PodDeletionCost

    url, server = api
    (tmp_path / "token").write_text("t")
    rig.runner.pod_cost = PodDeletionCost(url, "genq", "genq-worker-1", tmp_path / "token")
    HOOKS["mark"] = lambda ctx: {"annotations_while_running": [r["body"]["metadata"]["annotations"][ANNOTATION]
                                                               for r in wait_for_requests(server, 1)]}
    job = rig.store.create(Probe(tag="mark"))
    rig.runner.execute(job.id)
    rig.runner.pod_cost.stop()
    assert rig.store.get(job.id).result == {"annotations_while_running": ["1000"]}
    assert [r["body"]["metadata"]["annotations"][ANNOTATION] for r in server.requests] == ["1000", "0"]


def wait_for_requests(server, count: int, timeout_s: float = 10) -> list:
    deadline = time.monotonic() + timeout_s
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(server.requests)
