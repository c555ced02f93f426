"""Time limits, retries and idempotency keys that a user sets on any submit, with a real worker."""
from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.integration

QUICK = {"GENQ_RETRY_BACKOFF": "0.5", "GENQ_RECONCILE_INTERVAL": "0.5", "GENQ_HEARTBEAT_INTERVAL": "0.5"}


def test_a_run_past_its_time_limit_ends_failed(genq, tiny_model):
    genq.client("db", "upgrade")
    genq.start_worker(env=QUICK)
    job = genq.client_json("submit", "sd", "--model", str(tiny_model), "--prompt", "a cat", "--steps", "150",
                           "--width", "512", "--height", "512", "--time-limit", "1s", "--wait", check=False)
    assert job["status"] == "failed" and job["error"] == "time limit exceeded"
    assert job["progress"]["done"] < 150


def test_a_failing_job_runs_again_as_often_as_asked_then_fails(genq, tiny_model, tmp_path):
    genq.client("db", "upgrade")
    model = tmp_path / "gone"
    shutil.copytree(tiny_model, model)
    job_id = genq.client("submit", "sd", "--model", str(model), "--prompt", "a cat", "--steps", "1", "--width", "64",
                         "--height", "64", "--retries", "2").stdout.strip()
    shutil.rmtree(model)  # every run of it fails: its model is gone
    genq.start_worker(env=QUICK)
    final = genq.client_json("wait", job_id, "--timeout", "120", check=False)
    assert final["status"] == "failed" and "gone" in final["error"]
    events = genq.client_json("show", job_id)["events"]
    assert [e["to"] for e in events].count("running") == 3
    assert sum("retry" in (e["reason"] or "") for e in events) == 2


def test_the_same_idempotency_key_returns_the_same_job(genq):
    genq.client("db", "upgrade")
    first = genq.client("submit", "train-vae", "--epochs", "1", "--idempotency-key", "nightly-42").stdout.strip()
    # The same job asked again (its seed, chosen the first time, is not given either): that job
    again = genq.client("submit", "train-vae", "--epochs", "1", "--idempotency-key", "nightly-42").stdout.strip()
    assert again == first and len(genq.store().list()) == 1
    other = genq.client("submit", "train-vae", "--epochs", "1", "--idempotency-key", "nightly-43").stdout.strip()
    assert other != first


def test_an_idempotency_key_reused_for_another_job_is_refused_in_one_line_naming_the_first(genq):
    genq.client("db", "upgrade")
    first = genq.client("submit", "train-vae", "--epochs", "1", "--idempotency-key", "nightly-44").stdout.strip()
    for other in (["train-vae", "--epochs", "3"], ["sample-vae", "--model", first]):
        refused = genq.client("submit", *other, "--idempotency-key", "nightly-44", check=False)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f"Error: --idempotency-key: was used for job {first}, with ")
        assert len(refused.stderr.strip().splitlines()) == 1
    assert [job.id for job in genq.store().list()] == [first]
