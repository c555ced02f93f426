"""The job lifecycle's fault cases, each made to happen on purpose with real `genq-worker` processes,
the real CLI, the real Redis and the real database (SQLite and PostgreSQL; (g) a private PostgreSQL).

(a) wake-ups wiped from Redis          (e) a worker frozen (SIGSTOP) past its lease while running
(b) a client killed between insert and send   (f) a running job cancelled while its worker is dead
(c) a worker killed between a job's final commit and releasing its dependants
(d) `client cancel` killed between cancelling and failing the dependants
(g) PostgreSQL restarted while a job runs      (h) PostgreSQL down just after a client stored its job,
                                                   (i) and for longer than the client retries

The windows of (b), (c) and (d) are opened with GENQ_TEST_PAUSE_AT (core/fault_points.py): the
process writes the job id to GENQ_TEST_PAUSE_FILE and sleeps there until it is SIGKILLed. Every test
waits on states, never on fixed sleeps, and ends with every job of its store finished.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from genq.core.store.jobs import JobStore
from genq.core.store.states import JobStatus
from genq.core.broker import priority_lists
from tests.conftest import BIN, REDIS_URL, Genq
from tests.faults import PrivatePostgres

pytestmark = pytest.mark.integration

LIFECYCLE = {  # short, so that every fault is noticed within seconds
    "GENQ_LEASE": "3",
    "GENQ_RECONCILE_INTERVAL": "0.5",
    "GENQ_RESEND_AFTER": "1",
    "GENQ_HEARTBEAT_INTERVAL": "0.5",
    "GENQ_TORCH_THREADS": "1",  # two workers share two cores
}
FAST = ["--width", "64", "--height", "64", "--steps", "1"]
SLOW = ["--width", "256", "--height", "256", "--steps", "40"]  # ~10-20 s on one thread: long enough to be mid-run
TIMEOUT_S = 90  # any single wait; generous for a loaded 2-core machine
FINISHED = {s.value for s in JobStatus if s.finished}


@dataclass
class Lab:
    """A genq installation with the lifecycle settings, and what the tests look at."""

    genq: Genq
    model: Path
    broker: redis.Redis = field(default_factory=lambda: redis.Redis.from_url(REDIS_URL))
    _store: JobStore | None = None

    @property
    def queue(self) -> str:
        return self.genq.env["GENQ_QUEUE"]

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = self.genq.store()
        return self._store

    # -- jobs --------------------------------------------------------------------------
    def submit(self, *size: str, after: str | None = None, prompt: str = "a lighthouse at dusk") -> str:
        args = ["submit", "sd", "--model", str(self.model), "--prompt", prompt, "--seed", "3", *(size or FAST)]
        if after:
            args += ["--after", after]
        return self.genq.client_json(*args)["id"]

    def job(self, job_id: str):
        return self.store.get(job_id)

    def events(self, job_id: str) -> list[tuple[str | None, str]]:
        return [(e.from_status, e.to_status) for e in self.store.events(job_id)]

    def transitions_to(self, job_id: str, status: str) -> int:
        return sum(1 for e in self.store.events(job_id) if e.to_status == status)

    def wait_status(self, job_id: str, *statuses: str, timeout: float = TIMEOUT_S):
        return self.wait(lambda: (job := self.job(job_id)).status in statuses and job, timeout,
                         f"job {job_id} to be {' or '.join(statuses)}")

    def wait_mid_run(self, job_id: str, timeout: float = TIMEOUT_S):
        """Running, with at least one denoising step reported (the model is loaded, the run is going)."""
        return self.wait(lambda: (job := self.job(job_id)).status == "running" and job.progress_done >= 1 and job,
                         timeout, f"job {job_id} to be mid-run")

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
            except DBAPIError:  # the database is restarting: ask again
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.worker_logs()}")
            time.sleep(interval)

    def assert_all_done(self) -> None:
        jobs = self.store.list(limit=1000)
        assert jobs and all(job.status in FINISHED for job in jobs), [(job.id, job.status) for job in jobs]

    # -- processes -----------------------------------------------------------------------
    def start_worker(self, **env: str) -> subprocess.Popen:
        return self.genq.start_worker(env=env)

    def worker_running(self, job_id: str) -> subprocess.Popen:
        name = self.job(job_id).worker_host
        return next(worker for worker in self.genq.workers if worker.worker_name == name)

    @staticmethod
    def worker_name(worker: subprocess.Popen) -> str:
        return worker.worker_name  # the name its supervised worker registers under (tests/conftest.py)

    def paused_client(self, point: str, *args: str, resume_after_s: float | None = None,
                      env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        """A `client` command that stops at `point` (core/fault_points.py), for good or for `resume_after_s`;
        returns it and its pause file."""
        marker = self.genq.home / f"pause-{uuid.uuid4().hex[:8]}"
        env = {**self.genq.env, **(env or {}), "GENQ_TEST_PAUSE_AT": point, "GENQ_TEST_PAUSE_FILE": str(marker)}
        if resume_after_s is not None:
            env["GENQ_TEST_PAUSE_S"] = str(resume_after_s)
        out = open(self.genq.home / f"{marker.name}.log", "wb")
        process = subprocess.Popen([str(BIN / "client"), *args], env=env, cwd=self.genq.home, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        return process, marker

    def wait_paused(self, process: subprocess.Popen, marker: Path) -> str:
        """The job id the process wrote on reaching its pause point."""
        def paused() -> str | None:
            if process.poll() is not None:
                log = (marker.parent / f"{marker.name}.log")
                raise AssertionError(f"process exited {process.returncode} before its pause point:\n"
                                     f"{log.read_text() if log.exists() else ''}")
            job_id = marker.read_text().strip() if marker.exists() else ""
            return job_id if len(job_id) == 36 else None

        return self.wait(paused, TIMEOUT_S, f"{process.args[:3]} to pause")

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def worker_logs(self) -> str:
        parts = []
        for worker in self.genq.workers:
            lines = worker.log_path.read_text(errors="replace").splitlines()
            parts.append(f"--- worker pid {worker.pid} ({worker.log_path.name}), last lines:\n" + "\n".join(lines[-25:]))
        return "\n".join(parts)

    # -- Redis ---------------------------------------------------------------------------
    def queue_keys(self) -> list[bytes]:
        return self.broker.keys(f"*{self.queue}*")

    def messages(self) -> Counter:
        """Job id -> wake-ups for it waiting in the queue."""
        raws = [raw for key in priority_lists(self.queue) for raw in self.broker.lrange(key, 0, -1)]
        return Counter(json.loads(raw)["headers"]["id"].split(".")[0] for raw in raws)

    def forget_unacked(self) -> None:
        """Drop the delivered-never-acknowledged messages of this queue that killed workers left in
        kombu's shared `unacked` hash (else Redis would hand them back to a dead queue hours later)."""
        for tag, raw in self.broker.hgetall("unacked").items():
            try:
                routing_key = json.loads(raw)[2]
            except (ValueError, IndexError):
                continue
            if routing_key == self.queue:
                self.broker.hdel("unacked", tag)
                self.broker.zrem("unacked_index", tag)

    def close(self) -> None:
        self.genq.stop_workers()
        self.forget_unacked()
        leftovers = self.queue_keys()
        if leftovers:
            self.broker.delete(*leftovers)
        self.broker.close()
        if self._store is not None:
            self._store.sessions.kw["bind"].dispose()


@pytest.fixture
def lab(genq, tiny_model):
    genq.env.update(LIFECYCLE)
    lab = Lab(genq=genq, model=tiny_model)
    yield lab
    lab.close()


# -- (a) ------------------------------------------------------------------------------------
def test_a_queued_jobs_whose_wake_ups_were_wiped_from_redis_all_run_once_a_worker_starts(lab):
    # Given three queued jobs, submitted while no worker runs
    jobs = [lab.submit(prompt=f"picture {n}") for n in range(3)]
    assert lab.messages() == Counter({job_id: 1 for job_id in jobs})
    # And Redis lost everything of the queue (its messages and bindings)
    lab.broker.delete(*lab.queue_keys())
    assert lab.queue_keys() == [] and all(lab.job(job_id).status == "queued" for job_id in jobs)

    # When a worker starts
    worker = lab.start_worker()

    # Then its reconciler sends them again and each runs, once, to success
    for job_id in jobs:
        job = lab.wait_status(job_id, *FINISHED)
        assert (job.status, job.attempts) == ("succeeded", 1), job.error
        assert lab.events(job_id) == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
    assert "re-sending" in worker.log_path.read_text()
    lab.assert_all_done()


# -- (b) ------------------------------------------------------------------------------------
def test_b_a_client_killed_between_insert_and_send_leaves_a_job_that_still_runs(lab):
    # Given a `client submit` killed right after it stored its job and before it sent the wake-up
    client, marker = lab.paused_client("after-insert", "submit", "sd", "--model", str(lab.model),
                                       "--prompt", "a lost message", "--seed", "5", *FAST)
    job_id = lab.wait_paused(client, marker)
    lab.kill(client)
    assert lab.job(job_id).status == "queued"
    assert lab.messages() == Counter()  # no wake-up was ever sent

    # When a worker runs
    lab.start_worker()

    # Then the job runs to success, once
    job = lab.wait_status(job_id, *FINISHED)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    assert lab.transitions_to(job_id, "running") == 1 and lab.transitions_to(job_id, "succeeded") == 1
    lab.assert_all_done()


# -- (c) ------------------------------------------------------------------------------------
def test_c_a_worker_killed_after_a_jobs_final_commit_and_before_releasing_its_dependant(lab):
    # Given a job and a dependant that waits for it (--after), submitted while no worker runs
    first = lab.submit(prompt="the first")
    second = lab.submit(after=first, prompt="the second")
    assert lab.job(second).status == "waiting"
    # And worker A, which stops right after committing a job's end (its own reconciler only runs at start)
    marker = lab.genq.home / "after-finish"
    worker_a = lab.start_worker(GENQ_TEST_PAUSE_AT="after-finish", GENQ_TEST_PAUSE_FILE=str(marker),
                                GENQ_RECONCILE_INTERVAL="3600")
    assert lab.wait_paused(worker_a, marker) == first
    # When A is killed in that window
    lab.kill(worker_a)
    assert lab.job(first).status == "succeeded"
    assert lab.job(second).status == "waiting"  # nobody released it

    # And another worker B runs
    worker_b = lab.start_worker()

    # Then B's reconciler releases the dependant, and it runs to success
    job = lab.wait_status(second, *FINISHED)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    release = lab.store.events(second)[1]
    assert (release.from_status, release.to_status, release.worker) == ("waiting", "queued", lab.worker_name(worker_b))
    assert release.reason == f"dependency {first} succeeded"
    assert lab.transitions_to(first, "succeeded") == 1 and lab.transitions_to(second, "running") == 1
    lab.assert_all_done()


# -- (d) ------------------------------------------------------------------------------------
def test_d_client_cancel_killed_before_failing_the_dependants_they_still_fail(lab):
    # Given a queued job and a chain waiting on it, submitted while no worker runs
    first = lab.submit(prompt="to be cancelled")
    second = lab.submit(after=first, prompt="waits for the first")
    third = lab.submit(after=second, prompt="waits for the second")
    # And `client cancel` killed after cancelling the first, before failing what waits for it
    client, marker = lab.paused_client("after-cancel", "cancel", first)
    assert lab.wait_paused(client, marker) == first
    lab.kill(client)
    assert lab.job(first).status == "cancelled"
    assert lab.job(second).status == "waiting" and lab.job(third).status == "waiting"

    # When a worker runs
    lab.start_worker()

    # Then its reconciler fails the chain, each naming its dependency
    for job_id, dependency, state in ((second, first, "cancelled"), (third, second, "failed")):
        job = lab.wait_status(job_id, *FINISHED)
        assert (job.status, job.error) == ("failed", f"dependency {dependency} {state}")
    # And the cancelled job never ran (its wake-up, still in the queue, was dropped)
    assert lab.events(first) == [(None, "queued"), ("queued", "cancelled")]
    lab.wait(lambda: lab.messages() == Counter(), TIMEOUT_S, "the cancelled job's wake-up to be consumed")
    assert lab.job(first).status == "cancelled"
    lab.assert_all_done()


# -- (e) ------------------------------------------------------------------------------------
def freeze_outside_a_write(lab: Lab, worker: subprocess.Popen, job_id: str) -> None:
    """SIGSTOP `worker` at a moment it holds no write lock on the database.

    A process frozen inside a write transaction keeps its locks (SQLite's write lock, PostgreSQL's
    row lock on the job) until it is thawed, and the takeover would wait behind it: that is a
    different fault from the one under test. So: freeze, check that the job's row can be written
    right away, else thaw and try again a moment later.
    """
    url = make_url(lab.genq.env["GENQ_DATABASE_URL"])
    for _ in range(100):
        os.killpg(worker.pid, signal.SIGSTOP)
        if _row_writable(url, job_id):
            return
        os.killpg(worker.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("could not freeze the worker outside a write transaction")


def _row_writable(url, job_id: str) -> bool:
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database, timeout=0.5)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            connection.close()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SET lock_timeout = '500ms'"))
            connection.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id})
            connection.rollback()
        return True
    except DBAPIError:
        return False
    finally:
        engine.dispose()


def test_e_a_worker_frozen_past_its_lease_is_taken_over_and_its_thawed_run_writes_nothing(lab):
    # Given two workers, and a long job running on one of them (the victim)
    lab.start_worker()
    lab.start_worker()
    job_id = lab.submit(*SLOW, prompt="a slow picture")
    lab.wait_mid_run(job_id)
    victim = lab.worker_running(job_id)
    other = next(worker for worker in lab.genq.workers if worker is not victim)

    # When the victim is frozen (SIGSTOP) past its lease
    freeze_outside_a_write(lab, victim, job_id)
    try:
        # Then the other worker's reconciler takes the job over and runs it as attempt 2
        job = lab.wait(lambda: (job := lab.job(job_id)).attempts >= 2 and job, TIMEOUT_S, "the takeover")
        assert job.worker_host == lab.worker_name(other)
    finally:
        # And the victim is thawed while attempt 2 runs
        os.killpg(victim.pid, signal.SIGCONT)

    # Then the thawed run notices it lost the job and stops
    stopped = re.compile(rf"job {job_id}: .*(no longer at attempt 1|attempt 1 stops)")
    lab.wait(lambda: stopped.search(victim.log_path.read_text(errors="replace")), TIMEOUT_S,
             "the thawed run to stop")
    # And the job succeeds once, as attempt 2 on the other worker
    job = lab.wait_status(job_id, *FINISHED)
    assert (job.status, job.attempts, job.worker_host) == ("succeeded", 2, lab.worker_name(other)), job.error
    assert lab.events(job_id) == [(None, "queued"), ("queued", "running"), ("running", "queued"),
                                  ("queued", "running"), ("running", "succeeded")]
    assert lab.transitions_to(job_id, "succeeded") == 1
    takeover = lab.store.events(job_id)[2]
    assert takeover.worker == lab.worker_name(other) and "expired (attempt 1); requeued" in takeover.reason
    # And the stopped run wrote no log line after the takeover: every attempt-1 line precedes attempt 2's
    lines = lab.store.logs(job_id)
    first_run = [line.id for line in lines if line.attempt == 1]
    second_run = [line.id for line in lines if line.attempt == 2]
    assert first_run and second_run, [(line.attempt, line.message) for line in lines]
    assert max(first_run) < min(second_run), [(line.id, line.attempt, line.message) for line in lines]
    assert not [line for line in lines if line.attempt == 1 and line.at > takeover.at]
    # And the victim is alive and well
    assert victim.poll() is None
    lab.assert_all_done()


# -- (f) ------------------------------------------------------------------------------------
def test_f_a_running_job_cancelled_while_its_worker_is_dead_ends_cancelled(lab):
    # Given a long job running on worker A
    worker_a = lab.start_worker()
    job_id = lab.submit(*SLOW, prompt="never finished")
    lab.wait_mid_run(job_id)
    # And A dies (SIGKILL)
    lab.kill(worker_a)

    # When the user cancels the job (it still reads `running`: only the lease can tell A is gone)
    out = lab.genq.client("cancel", job_id).stdout
    assert "cancellation requested" in out
    assert lab.job(job_id).cancel_requested
    # And another worker B starts
    worker_b = lab.start_worker()

    # Then B's reconciler sees the expired lease and ends the job cancelled, not requeued, not run again
    job = lab.wait_status(job_id, *FINISHED)
    assert (job.status, job.attempts, job.error) == ("cancelled", 1, "cancelled by request")
    assert lab.events(job_id) == [(None, "queued"), ("queued", "running"), ("running", "cancelled")]
    last = lab.store.events(job_id)[-1]
    assert last.worker == lab.worker_name(worker_b) and last.reason.endswith("; cancelled as asked")
    lab.assert_all_done()


# -- (g) ------------------------------------------------------------------------------------
BLIP_LEASE_S = "10"  # longer than the restart: the blip must cost nothing, not even a takeover


@pytest.fixture
def blip_lab(tmp_path, mnist_root, tiny_model):
    """A genq installation on a private PostgreSQL cluster of its own (tests/faults.py), to restart."""
    with PrivatePostgres() as postgres:
        home = tmp_path / "home"
        home.mkdir()
        env = {**os.environ, **LIFECYCLE,
               "GENQ_HOME": str(home),
               "GENQ_DATABASE_URL": postgres.create_database("genq"),
               "GENQ_BROKER_URL": REDIS_URL,
               "GENQ_QUEUE": f"genq-test-{uuid.uuid4().hex[:12]}",
               "GENQ_DATA_ROOT": str(mnist_root),
               "GENQ_DEVICE": "cpu",
               "HF_HUB_OFFLINE": "1",
               "GENQ_LEASE": BLIP_LEASE_S}
        genq = Genq(env=env, home=home)
        genq.client("db", "upgrade")
        lab = Lab(genq=genq, model=tiny_model)
        try:
            yield lab, postgres
        finally:
            lab.close()


def test_g_a_postgresql_restart_while_a_job_runs_the_job_still_succeeds_exactly_once(blip_lab):
    lab, postgres = blip_lab
    # Given a worker on a private PostgreSQL, running a long job
    worker = lab.start_worker()
    job_id = lab.submit(*SLOW, prompt="through a blip")
    lab.wait_mid_run(job_id)
    assert lab.job(job_id).progress_done < 40

    # When PostgreSQL restarts (fast shutdown: every connection is cut) and stays down a moment, while the job runs
    started = time.monotonic()
    postgres.restart("fast", down_s=1.5)
    blip_s = time.monotonic() - started
    assert blip_s < float(BLIP_LEASE_S), f"the restart took {blip_s:.1f}s, longer than the lease"

    # Then the same run (attempt 1) finishes and the job succeeds exactly once
    job = lab.wait_status(job_id, *FINISHED)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    assert lab.events(job_id) == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
    assert [a.name for a in lab.store.artifacts(job_id)] == ["image-0.png"]
    assert job.progress_done == job.progress_total == 40
    # And the run did meet the blip (a write or a heartbeat failed and was retried), and lived through it
    felt = re.compile(rf"(of job {job_id} failed \(OperationalError\); retrying|heartbeat for job {job_id} failed)")
    assert felt.search(worker.log_path.read_text(errors="replace")), lab.worker_logs()
    assert worker.poll() is None
    lab.assert_all_done()


# -- (h) ------------------------------------------------------------------------------------
def test_h_a_client_that_meets_a_postgresql_restart_after_storing_its_job_still_sends_it(blip_lab):
    lab, postgres = blip_lab
    # Given a `client submit` that stops for 3 s right after it stored its job (no worker runs yet)
    client, marker = lab.paused_client("after-insert", "submit", "sd", "--model", str(lab.model),
                                       "--prompt", "through a restart", "--seed", "7", *FAST, resume_after_s=3)
    job_id = lab.wait_paused(client, marker)
    paused = time.monotonic()
    # When PostgreSQL goes down (every connection cut) before it goes on, and comes back 4 s later
    postgres.stop("fast")
    assert time.monotonic() - paused < 3, "the stop took longer than the pause: the client did not meet the outage"
    time.sleep(4)
    postgres.start()
    # Then the client rode out the outage: it printed its job id and exited 0
    client.wait(timeout=TIMEOUT_S)
    output = (marker.parent / f"{marker.name}.log").read_text()
    assert client.returncode == 0, output
    assert output.strip().splitlines()[-1] == job_id, output
    # And it did send the wake-up: one message, and the job marked sent
    assert lab.messages() == Counter({job_id: 1})
    assert lab.job(job_id).last_sent_at is not None
    # And a worker runs it once
    lab.start_worker()
    job = lab.wait_status(job_id, *FINISHED)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    lab.assert_all_done()


def test_i_a_client_whose_database_stays_down_after_storing_its_job_says_so_in_one_line(blip_lab):
    lab, postgres = blip_lab
    # Given a client that retries for 1 s, paused right after it stored its job
    client, marker = lab.paused_client("after-insert", "submit", "sd", "--model", str(lab.model),
                                       "--prompt", "through an outage", "--seed", "8", *FAST, resume_after_s=3,
                                       env={"GENQ_RETRY_FOR": "1"})
    job_id = lab.wait_paused(client, marker)
    paused = time.monotonic()
    # When PostgreSQL goes down under it and stays down until it has exited
    postgres.stop("fast")
    assert time.monotonic() - paused < 3, "the stop took longer than the pause: the client did not meet the outage"
    client.wait(timeout=TIMEOUT_S)
    postgres.start()
    # Then it exits 1 with one error line, no traceback
    output = (marker.parent / f"{marker.name}.log").read_text()
    lines = output.strip().splitlines()
    assert client.returncode == 1 and "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("Error: the database did not answer: "), output
    # And its wake-up went out all the same (a new job's send time is stored with its row: the send
    # needs no database), and nothing is lost: a worker runs the stored job once
    lab.start_worker()
    job = lab.wait_status(job_id, *FINISHED)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    lab.assert_all_done()
