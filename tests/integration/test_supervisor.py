"""`genq-worker --processes 2` with real parts: two supervised workers share the jobs; a worker
SIGKILLed mid-job is started again under the same name, its job is taken over and succeeds; SIGTERM
stops everything and the registry says so. (The supervisor's own logic: tests/unit/test_supervisor.py.)"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import psutil
import pytest
import redis

from genq.core.store.workers import WorkerRegistry
from tests.conftest import BIN, REDIS_URL
from tests.faults import kill_group, wait_for

pytestmark = pytest.mark.integration

SUPERVISED = {  # short, so that a killed worker's job is taken over within seconds
    "GENQ_LEASE": "4",
    "GENQ_HEARTBEAT_INTERVAL": "0.5",
    "GENQ_RECONCILE_INTERVAL": "1",
    "GENQ_TORCH_THREADS": "1",  # two workers share two cores
    "GENQ_SD_MAX_BATCH": "1",  # each job runs alone: one worker does not take its neighbour's jobs
}
FAST = ["--width", "64", "--height", "64", "--steps", "2"]
SLOW = ["--width", "256", "--height", "256", "--steps", "30"]  # long enough to be killed mid-run
TIMEOUT_S = 60


def live(process: psutil.Process | int) -> bool:
    try:
        process = process if isinstance(process, psutil.Process) else psutil.Process(process)
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def forget_unacked(queue: str) -> None:
    """Drop the message the killed worker had taken and never acknowledged (kombu's shared `unacked`
    hash), else Redis would hand it back to this test's dead queue hours later."""
    broker = redis.Redis.from_url(REDIS_URL)
    for tag, raw in broker.hgetall("unacked").items():
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError):
            continue
        if routing_key == queue:
            broker.hdel("unacked", tag)
            broker.zrem("unacked_index", tag)
    broker.close()


# The registry's SQL runs on both stores in tests/unit/test_registry.py; supervising is the same on either.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_supervised_workers_share_jobs_survive_a_kill_and_stop_on_sigterm(genq, tiny_model):
    genq.env.update(SUPERVISED)
    genq.env.pop("GENQ_WORKER_NAME", None)
    host = socket.gethostname()
    first, second = f"{host}:cpu0", f"{host}:cpu1"
    store = genq.store()
    registry = WorkerRegistry(store.sessions)

    def workers() -> list[dict]:
        return genq.client_json("workers")

    def live_rows() -> dict[str, object]:
        return {view.row.name: view.row for view in registry.list(4.0) if view.state.value in ("idle", "busy")}

    def submit(*size: str, prompt: str) -> str:
        return genq.client_json("submit", "sd", "--model", str(tiny_model), "--prompt", prompt, "--seed", "1", *size)["id"]

    def ran_on(job_id: str) -> list[str]:
        return [event.worker for event in store.events(job_id) if event.to_status == "running"]

    log_path = genq.home / "supervisor.log"
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen([str(BIN / "genq-worker"), "--processes", "2"], env=genq.env, cwd=genq.home,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    supervisor.log_path = log_path
    genq.workers.append(supervisor)  # the fixture stops it whatever happens here
    try:
        # Given `genq-worker --processes 2`: two CPU workers, children of the supervisor, in its process group
        rows = wait_for(lambda: len(rows := live_rows()) == 2 and rows, TIMEOUT_S, "two workers to register")
        assert set(rows) == {first, second}
        for row in rows.values():
            child = psutil.Process(row.pid)
            assert child.ppid() == supervisor.pid and os.getpgid(row.pid) == supervisor.pid
            assert row.device == "cpu"

        # When a long job runs on one of them
        slow = submit(*SLOW, prompt="a long picture")
        wait_for(lambda: (job := store.get(slow)).status == "running" and job.progress_done >= 1, TIMEOUT_S,
                 "the long job to be mid-run")
        victim_name = store.get(slow).worker_host
        other_name = ({first, second} - {victim_name}).pop()
        # And its worker is SIGKILLed mid-run (its pid from `client workers`)
        busy = next(w for w in workers() if w["name"] == victim_name and w["state"] == "busy")
        assert busy["current_job"] == slow and psutil.Process(busy["pid"]).ppid() == supervisor.pid
        os.kill(busy["pid"], signal.SIGKILL)
        assert store.get(slow).status == "running"

        # Then a short job submitted meanwhile runs on the other worker: both ran a job
        fast = submit(*FAST, prompt="a short picture")
        wait_for(lambda: store.get(fast).status == "succeeded", TIMEOUT_S, "the short job to succeed")
        assert ran_on(slow)[0] == victim_name and ran_on(fast) == [other_name]

        # And the supervisor starts the killed one again: a new registry row under the same name, a new pid
        wait_for(lambda: (row := live_rows().get(victim_name)) is not None and row.pid != busy["pid"], TIMEOUT_S,
                 "the killed worker to be started again")
        assert "was killed by SIGKILL" in log_path.read_text(errors="replace")
        # And its job is taken over once the lease expired, and succeeds as attempt 2
        job = wait_for(lambda: (job := store.get(slow)).status in ("succeeded", "failed", "cancelled") and job,
                       TIMEOUT_S * 2, "the killed worker's job to finish")
        assert (job.status, job.attempts) == ("succeeded", 2), job.error
        assert ran_on(slow)[0] == victim_name and len(ran_on(slow)) == 2

        # And `client workers` shows both workers live, and the killed run lost
        def killed_reads_lost() -> list[dict] | None:
            seen = workers()
            return seen if any(w["pid"] == busy["pid"] and w["state"] == "lost" for w in seen) else None

        listed = wait_for(killed_reads_lost, TIMEOUT_S, "the killed worker to read lost", interval=0.5)
        alive = {w["name"]: w for w in listed if w["state"] in ("idle", "busy")}
        assert set(alive) == {first, second}, listed
        assert all(live(w["pid"]) for w in alive.values())
        assert alive[victim_name]["pid"] != busy["pid"]

        # When the supervisor (only it) gets SIGTERM
        started = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)

        # Then it stops its workers and exits 0, and they are gone
        assert supervisor.wait(timeout=TIMEOUT_S) == 0, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() - started < 30
        assert not any(live(w["pid"]) for w in alive.values())
        # And `client workers` shows them stopped (the killed run stays lost)
        final = {(w["name"], w["pid"]): w["state"] for w in workers()}
        assert {final[(name, w["pid"])] for name, w in alive.items()} == {"stopped"}, final
        assert final[(victim_name, busy["pid"])] == "lost"
    finally:
        kill_group(supervisor)
        forget_unacked(genq.env["GENQ_QUEUE"])
        store.sessions.kw["bind"].dispose()
