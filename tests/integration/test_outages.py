"""Outages of any length and paused lock holders, on a real PostgreSQL (a private cluster that the tests
stop and start, tests/faults.py) with real `genq-worker` processes and the real Redis.

(a) a worker started while PostgreSQL is down waits, and its supervisor restarts a child killed
    during the outage; both run jobs once the database is back
(b) PostgreSQL down for longer than a run retries its writes: the job is not failed; it is taken
    over and succeeds once the database is back
(c) a process paused inside a write transaction holds a row lock: the reconciler skips that job,
    does the rest of its pass at once, and takes the job over once the server ends the transaction
(d) an event's time is when its transition ran, not when Python asked for it
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis
from sqlalchemy import create_engine, select, text, update

from genq.core.config import load_settings
from genq.core.lifecycle import Lifecycle
from genq.core.store.clock import as_utc, db_now_plus
from genq.core.store.db import make_engine, session_factory
from genq.core.store.jobs import JobStore
from genq.core.store.models import JobRow
from genq.core.store.states import JobStatus
from genq.core.broker import priority_lists
from genq.worker.liveness import Reconciler
from tests.conftest import BIN, REDIS_URL, Genq, migrated
from tests.faults import PrivatePostgres, wait_for
from tests.unit.test_runner import Probe, probe_kind  # noqa: F401  (the probe kind, registered per test)

pytestmark = pytest.mark.integration

FAST = ["--width", "64", "--height", "64", "--steps", "1"]
SLOW = ["--width", "256", "--height", "256", "--steps", "40"]
TIMEOUT_S = 120


@pytest.fixture
def outage_lab(tmp_path, mnist_root, tiny_model):
    with PrivatePostgres() as postgres:
        home = tmp_path / "home"
        home.mkdir()
        env = {**os.environ,
               "GENQ_HOME": str(home),
               "GENQ_DATABASE_URL": postgres.create_database("genq"),
               "GENQ_BROKER_URL": REDIS_URL,
               "GENQ_QUEUE": f"genq-test-{uuid.uuid4().hex[:12]}",
               "GENQ_DATA_ROOT": str(mnist_root),
               "GENQ_DEVICE": "cpu",
               "HF_HUB_OFFLINE": "1",
               "GENQ_TORCH_THREADS": "1",
               "GENQ_LEASE": "4",
               "GENQ_HEARTBEAT_INTERVAL": "0.5",
               "GENQ_RECONCILE_INTERVAL": "0.5",
               "GENQ_RESEND_AFTER": "1",
               "GENQ_RETRY_FOR": "2"}
        genq = Genq(env=env, home=home)
        genq.client("db", "upgrade")
        try:
            yield genq, postgres, tiny_model
        finally:
            genq.stop_workers()
            broker = redis.Redis.from_url(REDIS_URL)
            leftovers = broker.keys(f"*{env['GENQ_QUEUE']}*")
            if leftovers:
                broker.delete(*leftovers)
            broker.close()


def submit(genq: Genq, model: Path, *size: str, prompt: str = "a harbour in fog") -> str:
    return genq.client_json("submit", "sd", "--model", str(model), "--prompt", prompt, "--seed", "5", *size)["id"]


def wait_status(store: JobStore, job_id: str, *statuses: str, timeout: float = TIMEOUT_S):
    def reached():
        try:
            job = store.get(job_id)
        except Exception:  # the database is starting
            return None
        return job if job.status in statuses else None
    return wait_for(reached, timeout, f"job {job_id} to be {' or '.join(statuses)}", interval=0.2)


def log_of(process: subprocess.Popen) -> str:
    return process.log_path.read_text(errors="replace")


def start_supervisor(genq: Genq) -> subprocess.Popen:
    """`genq-worker` with one CPU child, not waited for: it may not be ready (the database is down)."""
    log_path = genq.home / f"worker-{len(genq.workers)}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(BIN / "genq-worker"), "--processes", "1"],
                                   env={**genq.env, "GENQ_WORKER_NAME": f"outage-{len(genq.workers)}"},
                                   cwd=genq.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path = log_path
    genq.workers.append(process)
    return process


def test_a_a_worker_started_during_an_outage_waits_and_a_child_killed_during_it_is_started_again(outage_lab):
    genq, postgres, model = outage_lab
    # Given PostgreSQL down, and `genq-worker` started meanwhile
    postgres.stop("fast")
    supervisor = start_supervisor(genq)
    wait_for(lambda: "did not answer" in log_of(supervisor), 60, "the child to say it waits for the database")
    [child] = psutil.Process(supervisor.pid).children()

    # When its child is killed during the outage
    child.kill()

    # Then the supervisor starts it again (an outage is not a reason to stop), and it waits too
    wait_for(lambda: "starting it again" in log_of(supervisor), 60, "the supervisor to start the child again")
    wait_for(lambda: len(psutil.Process(supervisor.pid).children()) == 1
             and psutil.Process(supervisor.pid).children()[0].pid != child.pid, 60, "a new child")
    assert supervisor.poll() is None and "stopping" not in log_of(supervisor)

    # And once PostgreSQL is back the worker is ready and runs a job
    postgres.start()
    wait_for(lambda: " ready." in log_of(supervisor), 90, "the worker to be ready")
    job_id = submit(genq, model, *FAST)
    job = wait_status(genq.store(), job_id, *{s.value for s in JobStatus if s.finished})
    assert (job.status, job.attempts) == ("succeeded", 1), job.error


def test_b_a_run_whose_writes_outlast_their_retries_is_taken_over_not_failed(outage_lab):
    genq, postgres, model = outage_lab
    # Given a worker running a long job (its writes retry for GENQ_RETRY_FOR = 2 s, its lease is 4 s)
    genq.start_worker()
    store = genq.store()
    job_id = submit(genq, model, *SLOW, prompt="through a long outage")
    wait_for(lambda: (job := store.get(job_id)).status == "running" and job.progress_done >= 1, TIMEOUT_S,
             "the job to be mid-run")

    # When PostgreSQL stays down longer than the retries and the lease together
    postgres.stop("fast")
    time.sleep(8)
    postgres.start()

    # Then the job was never failed: its run stopped, it was taken over, and attempt 2 succeeded
    job = wait_status(store, job_id, *{s.value for s in JobStatus if s.finished})
    worker_log = log_of(genq.workers[0])
    assert (job.status, job.error) == ("succeeded", None), worker_log
    assert job.attempts == 2
    assert [e.to_status for e in store.events(job_id)] == ["queued", "running", "queued", "running", "succeeded"]
    assert "the store did not answer" in worker_log and "the job is taken over once its lease passes" in worker_log


HOLDER = """
import os, signal, sys
from sqlalchemy import update
from genq.core.store.db import make_engine, session_factory
from genq.core.store.models import JobRow
sessions = session_factory(make_engine(sys.argv[1], lease_s=float(sys.argv[3])))
with sessions() as session:
    session.execute(update(JobRow).where(JobRow.id == sys.argv[2]).values(attempts=JobRow.attempts))  # a fenced write
    print("locked", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # paused inside the transaction, as a SIGSTOPped worker would be
"""


def test_c_a_paused_lock_holder_costs_the_reconciler_one_job_for_a_moment(postgres_url, tmp_path):
    # Given (on PostgreSQL, lease 4 s) a running job whose worker vanished, a queued job whose wake-up was
    # lost, and a process paused inside a write transaction holding the first job's row lock
    url = migrated(postgres_url)
    with create_engine(url).begin() as connection:
        connection.execute(text("TRUNCATE webhook_attempts, webhook_deliveries, job_logs, job_events, metrics, artifacts, jobs, workers, groups, users"))
    settings = load_settings({"GENQ_HOME": str(tmp_path), "GENQ_DATABASE_URL": url, "GENQ_BROKER_URL": REDIS_URL,
                              "GENQ_QUEUE": f"genq-test-{uuid.uuid4().hex[:12]}", "GENQ_LEASE": "4",
                              "GENQ_RESEND_AFTER": "0.5"})
    store = JobStore(session_factory(make_engine(url, settings.lease_s)), settings.queue_for)
    lifecycle = Lifecycle(store, settings)
    stranded = store.create(Probe())
    assert store.claim(stranded.id, "vanished-host:1", lease_s=0.5) is not None
    lost = store.create(Probe(tag="lost wake-up"))
    with store.sessions() as session:
        session.execute(update(JobRow).where(JobRow.id == lost.id).values(last_sent_at=db_now_plus(-60)))
        session.commit()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, stranded.id, "4"], stdout=subprocess.PIPE, text=True)
    broker = redis.Redis.from_url(REDIS_URL)
    try:
        assert holder.stdout.readline().strip() == "locked"
        wait_for(lambda: store.lease_expired(stranded.id), 20, "the stranded job's lease to pass")

        # When a reconciler makes a pass
        reconciler = Reconciler(lifecycle, "reconciler-host:2")
        started = time.monotonic()
        pass_ = threading.Thread(target=reconciler.reconcile, daemon=True)
        pass_.start()
        pass_.join(timeout=15)

        # Then the pass ended within seconds and did the rest of its work: the lost wake-up is sent again
        assert not pass_.is_alive(), "the reconciler waited on the paused holder's row lock"
        assert time.monotonic() - started < 10
        sent = [raw for key in priority_lists(settings.queue) for raw in broker.lrange(key, 0, -1)]
        assert len(sent) == 1 and lost.id.encode() in sent[0]
        # And once the server has ended the paused transaction (half a lease idle), a pass takes the job over
        def taken_over() -> bool:
            reconciler.reconcile()
            return store.get(stranded.id).status == "queued"
        wait_for(taken_over, 30, "the stranded job to be taken over", interval=0.5)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        leftovers = broker.keys(f"*{settings.queue}*")
        if leftovers:
            broker.delete(*leftovers)
        broker.close()
        store.sessions.kw["bind"].dispose()


def test_d_an_event_is_stamped_when_its_transition_ran_not_when_it_was_asked(postgres_url, tmp_path):
    # Given (on PostgreSQL) a queued job whose row another transaction holds for 2 s
    url = migrated(postgres_url)
    store = JobStore(session_factory(make_engine(url)))
    job = store.create(Probe())
    holder = create_engine(url)
    released = {}

    def hold() -> None:
        with holder.begin() as connection:
            connection.execute(select(JobRow.id).where(JobRow.id == job.id).with_for_update())
            locked.set()
            time.sleep(2)
            released["at"] = as_utc(connection.execute(text("SELECT clock_timestamp()")).scalar())

    locked = threading.Event()
    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait(10)

    # When a transition asked meanwhile waits for the row, then runs
    store.transition(job.id, JobStatus.QUEUED, JobStatus.CANCELLED, reason="cancelled by user")
    thread.join()
    holder.dispose()

    # Then its event is stamped after the row was released, not before the wait
    event = store.events(job.id)[-1]
    assert event.to_status == "cancelled"
    assert as_utc(event.at) >= released["at"]


def test_e_a_worker_stopped_cleanly_during_an_outage_reads_stopped_afterwards(tmp_path):
    from genq.core.store.db import upgrade
    from genq.core.store.workers import WorkerIdentity, WorkerState, worker_registry
    from genq.worker.presence import Presence

    with PrivatePostgres() as postgres:
        url = postgres.create_database("genq")
        upgrade(url)
        engine = make_engine(url, lease_s=4)
        registry = worker_registry(session_factory(engine))
        unrecorded = tmp_path / "run" / "unrecorded-worker-stops"
        identity = WorkerIdentity(name="host:cpu0", host="host", pid=os.getpid(), device="cpu", device_name="cpu",
                                  device_memory=None, queues=("gpu",), versions={})
        # Given a registered worker
        first = Presence(registry, interval_s=60, unrecorded_stops=unrecorded)
        first.start(identity)
        assert first.row_id is not None

        # When it stops cleanly while PostgreSQL is down
        postgres.stop("fast")
        first.stop()
        assert unrecorded.read_text().split() == [first.row_id]
        assert unrecorded.stat().st_mode & 0o777 == 0o600

        # Then, once the database is back, the next worker of this home to register records that stop
        postgres.start()
        second = Presence(registry, interval_s=60, unrecorded_stops=unrecorded)
        second.start(identity)
        try:
            states = {view.row.id: view.state for view in registry.list(lease_s=4, include_all=True)}
            assert states[first.row_id] is WorkerState.STOPPED
            assert states[second.row_id] is WorkerState.IDLE
            assert not unrecorded.exists()
        finally:
            second.stop()
            engine.dispose()


def test_f_a_client_started_during_an_outage_says_so_in_one_line(outage_lab):
    genq, postgres, model = outage_lab
    # Given PostgreSQL down
    postgres.stop("fast")
    # When a client submits (it retries opening the store for a while first)
    refused = genq.client("submit", "sd", "--model", str(model), "--prompt", "in the dark", *FAST, check=False)
    # Then it exits 1 with one line that names the database (no password) and no traceback
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the database at postgresql") and "did not answer" in lines[0]
    postgres.start()
