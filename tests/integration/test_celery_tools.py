"""Celery's own tools against a real genq worker: `celery -A genq` finds genq's app (same settings as every
genq command), and a worker busy with a long job still answers the control channel."""
from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

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
