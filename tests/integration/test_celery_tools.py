"""Celery's own tools against a real genq worker: `celery -A genq` finds genq's app (same settings as every
genq command), and a worker busy with a long job still answers the control channel."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from genq.core.config import load_settings
from tests.conftest import BIN

CONTROL_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from genq.core.sd.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("celery-tools") / "tiny-sd")


def celery(genq, *args: str) -> str:
    """`celery -A genq <args> --json` as a user runs it: the genq environment, in the worker's home."""
    result = subprocess.run([str(BIN / "celery"), "-A", "genq", *args, "--timeout", str(CONTROL_TIMEOUT_S), "--json"],
                            env=genq.env, cwd=genq.home, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"celery -A genq {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def inspect(genq, *args: str) -> dict:
    return json.loads(celery(genq, "inspect", *args))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_celery_inspect_answers_for_a_worker_busy_with_a_long_job(genq, model):
    # Given a worker busy with a long job (150 steps at 64x64 take about 2 s on a CPU, less than one
    # question's timeout; 512x512 takes 64 times as long, and it is cancelled once asked about)
    worker = genq.start_worker({"GENQ_SD_MAX_BATCH": "1", "GENQ_TORCH_THREADS": "1"})
    job_id = genq.client("submit", "sd", "--model", str(model), "--prompt", "long", "--steps", "150",
                         "--width", "512", "--height", "512").stdout.strip()
    store = genq.store()
    genq.wait_until(lambda: store.get(job_id).status == "running", 60, what="the long job to start")
    [registered] = [w for w in genq.client_json("workers") if w["name"] == worker.worker_name]
    # Its Celery node name (genq.worker.child.celery_hostname): the Redis may hold other fleets' workers too,
    # named alike but for the process id
    node = f"genq-{re.sub(r'[^A-Za-z0-9._-]', '-', worker.worker_name)}-{registered['pid']}@{socket.gethostname()}"

    # When Celery's own tools ask the fleet
    pongs = inspect(genq, "ping")
    assert pongs.get(node) == {"ok": "pong"}, f"no answer from {node} while it runs a job: {sorted(pongs)}"
    active = inspect(genq, "active", "--destination", node)
    stats = inspect(genq, "stats", "--destination", node)
    online = celery(genq, "status", "--destination", node)

    # Then the busy worker answered, and lists the running job's task
    assert store.get(job_id).status == "running", "the job ended before the worker was asked"
    tasks = active[node]
    assert [task["name"] for task in tasks] == ["genq.run_job"], tasks
    assert tasks[0]["args"] == [job_id]
    assert tasks[0]["id"].startswith(job_id)
    assert stats[node]["pool"]["max-concurrency"] == 1  # one job at a time per worker process
    assert node in online, online

    genq.client("cancel", job_id)
    genq.wait_until(lambda: store.get(job_id).status == "cancelled", 60, what="the long job to be cancelled")


@pytest.fixture
def flower(genq):
    """Flower (`celery -A genq flower`) on a free loopback port, its API open to the test."""
    import httpx

    from tests.faults import free_port

    port = free_port()
    log = open(genq.home / "flower.log", "wb")
    process = subprocess.Popen([str(BIN / "celery"), "-A", "genq", "flower", "--address=127.0.0.1", f"--port={port}"],
                               env={**genq.env, "FLOWER_UNAUTHENTICATED_API": "true"}, cwd=genq.home,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None
    genq.wait_until(answers, 60, what="Flower to answer")
    assert process.poll() is None, (genq.home / "flower.log").read_text()
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)


class TaskEvents:
    """Celery's task events from the broker, folded into task states as Flower folds them (events.State)."""

    def __init__(self, env: dict[str, str]) -> None:
        from genq.core.broker import make_app

        self.app = make_app(load_settings(env))
        self.state = self.app.events.State()
        self.ready = threading.Event()
        self.receiver = None
        self.thread = threading.Thread(target=self._capture, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the event receiver did not connect"

    def _capture(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.state.event})
            self.receiver.consume()  # declares its queue now: no event sent after this is missed
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def state_of(self, job_id: str) -> list[tuple[str, str | None]]:
        """(state, exception) of each task delivered for this job, oldest first."""
        tasks = sorted((task for task in list(self.state.tasks.values()) if task.uuid.startswith(job_id)),
                       key=lambda task: task.timestamp or 0)
        return [(task.state, task.exception) for task in tasks]

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(timeout=10)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_celery_events_and_flower_show_each_job_outcome(genq, model, tmp_path, flower):
    import httpx

    events = TaskEvents(genq.env)
    try:
        # Given a job that succeeds, one whose every run fails (its model is gone) with one retry,
        # and one cancelled while queued
        quick = ["--prompt", "a cat", "--steps", "1", "--width", "64", "--height", "64"]
        gone = tmp_path / "gone"
        shutil.copytree(model, gone)
        succeeds = genq.client("submit", "sd", "--model", str(model), *quick).stdout.strip()
        fails = genq.client("submit", "sd", "--model", str(gone), *quick, "--retries", "1").stdout.strip()
        cancelled = genq.client("submit", "sd", "--model", str(model), *quick).stdout.strip()
        shutil.rmtree(gone)
        genq.client("cancel", cancelled)

        # When a worker takes their messages
        genq.start_worker({"GENQ_RETRY_BACKOFF": "0.5", "GENQ_RECONCILE_INTERVAL": "0.5"})
        for job_id in (succeeds, fails, cancelled):
            genq.client("wait", job_id, "--timeout", "120", check=False)

        # Then Celery's events carry each job's outcome as its task's state: SUCCESS, RETRY then
        # FAILURE with the job's error, FAILURE with the cancel's reason
        def settled():
            return all(events.state_of(j) and events.state_of(j)[-1][0] in ("SUCCESS", "FAILURE")
                       for j in (succeeds, fails, cancelled)) and len(events.state_of(fails)) == 2
        genq.wait_until(settled, 30, what="the task events of all three jobs")
        assert [state for state, _ in events.state_of(succeeds)] == ["SUCCESS"]
        [(first, retried), (last, failure)] = events.state_of(fails)
        assert (first, last) == ("RETRY", "FAILURE")
        assert "gone" in failure and "JobFailed" in failure, failure
        [(state, reason)] = events.state_of(cancelled)
        assert state == "FAILURE" and "JobCancelled" in reason and "cancel" in reason, reason

        # And Flower, from the same events, shows the failed job's task as failed
        def flower_states():
            tasks = httpx.get(f"{flower}/api/tasks", timeout=5).json()
            return {uuid: task["state"] for uuid, task in tasks.items() if uuid.startswith((succeeds, fails))}
        shown = genq.wait_until(lambda: (s := flower_states()) and sorted(s.values()) == ["FAILURE", "RETRY", "SUCCESS"]
                                and s, 30, what="Flower to show the three tasks")
        assert [state for uuid, state in shown.items() if uuid.startswith(fails)] in (["RETRY", "FAILURE"], ["FAILURE", "RETRY"])
    finally:
        events.close()
