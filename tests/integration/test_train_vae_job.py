"""The whole path through real parts: CLI -> SQL -> Redis -> genq-worker -> SQL + artifact store."""
from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import func, select

from genq.core.store.models import JobRow
from tests.conftest import ON_EVERY_ARTIFACT_STORE

pytestmark = pytest.mark.integration


def count_jobs(genq) -> int:
    with genq.store().sessions() as session:
        return session.scalar(select(func.count()).select_from(JobRow))


@ON_EVERY_ARTIFACT_STORE
def test_train_vae_runs_end_to_end(genq):
    # Given a worker
    genq.start_worker()
    # When a short training job is submitted and waited for
    job = genq.client_json("submit", "train-vae", "--epochs", "1", "--train-limit", "1024", "--capacity", "16",
                           "--seed", "3", "--wait")
    # Then it succeeded, with the epoch's train metrics, the test metrics and a model
    assert job["status"] == "succeeded", job
    details = genq.client_json("show", job["id"])
    metrics = details["metrics"]
    assert [p["step"] for p in metrics["train_loss_per_image"]] == [1]
    assert [p["step"] for p in metrics["train_loss_per_batch"]] == [1]
    per_image = metrics["test_loss_per_image"][0]["value"]
    per_batch = metrics["test_loss_per_batch"][0]["value"]
    assert 50 < per_image < 550  # nats per MNIST image: between a good model and an untrained one
    assert per_batch == pytest.approx(per_image * 10_000 / 79, rel=0.02)  # 78 full batches and one of 16
    assert details["result"]["test_loss_per_image"] == pytest.approx(per_image)
    assert [e["to"] for e in details["events"]] == ["queued", "running", "succeeded"]

    artifacts = {a["name"]: a for a in details["artifacts"]}
    model = artifacts["model.safetensors"]
    files = genq.artifact_paths(job["id"])  # in the folder store, or verified copies from the object store
    assert hashlib.sha256(files["model.safetensors"].read_bytes()).hexdigest() == model["sha256"]
    assert files["model.safetensors"].stat().st_size == model["bytes"]
    from genq.core.vae.model import load_trained

    vae = load_trained(files["model.safetensors"], files["config.json"], "cpu")
    assert vae.encoder.fc_mu.out_features == 2

    # And the human-readable views say the same
    text = genq.client("show", job["id"]).stdout
    assert "test_loss_per_image" in text and "model.safetensors" in text
    assert job["id"] in genq.client("list", "--status", "succeeded").stdout
    assert "epoch 1" in genq.client("logs", job["id"]).stdout.lower()
    out = genq.home / "out"
    genq.client("artifacts", job["id"], "--download", str(out))
    assert (out / "model.safetensors").read_bytes() == files["model.safetensors"].read_bytes()


def test_a_job_whose_run_raises_ends_failed_with_the_message(genq, tmp_path):
    # Given a worker whose data root holds no MNIST (and this machine cannot download it)
    genq.start_worker(env={"GENQ_DATA_ROOT": str(tmp_path / "no-data")})
    # When a training job runs there
    result = genq.client("submit", "train-vae", "--epochs", "1", "--wait", "--json", check=False)
    # Then it ends failed, exit 1, with the reason on the job
    assert result.returncode == 1
    job = json.loads(result.stdout)
    assert job["status"] == "failed"
    assert "MNIST is not under" in job["error"] and "GENQ_DATA_ROOT" in job["error"]
    assert "\n" not in job["error"]
    assert genq.client("wait", job["id"], check=False).returncode == 1


@pytest.mark.parametrize("args", [
    ["--epochs", "0"], ["--latent-dims", "0"], ["--batch-size", "0"], ["--epochs", "two"], ["--no-such-option"],
    ["--train-limit", "-5"],
])
def test_bad_input_exits_2_and_stores_nothing(genq, args):
    result = genq.client("submit", "train-vae", *args, check=False)
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert count_jobs(genq) == 0


def test_a_job_submitted_while_the_broker_is_down_runs_once_it_is_back(genq):
    # Given a broker that cannot be reached at submit
    result = genq.client("submit", "train-vae", "--epochs", "1", "--train-limit", "256", "--capacity", "4",
                         check=False, env={"GENQ_BROKER_URL": "redis://127.0.0.1:1/0", "GENQ_RETRY_FOR": "1"})
    # Then the job is stored queued, the user is told in one line, and nothing is lost
    assert result.returncode == 0
    assert "broker" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    [job] = genq.store().list()
    assert job.status == "queued" and result.stdout.strip() == job.id
    # When a worker runs against the real broker, its reconciler sends the wake-up that never went out
    genq.start_worker(env={"GENQ_RESEND_AFTER": "1", "GENQ_RECONCILE_INTERVAL": "0.5"})
    assert genq.client_json("wait", job.id, "--timeout", "120")["status"] == "succeeded"


def test_cancelled_queued_job_never_runs(genq):
    # Given a job queued while no worker runs
    job_id = genq.client("submit", "train-vae", "--epochs", "1", "--train-limit", "256").stdout.strip()
    # When it is cancelled, and a worker starts afterwards
    assert "cancelled" in genq.client("cancel", job_id).stdout
    genq.start_worker()
    follower = genq.client("submit", "train-vae", "--epochs", "1", "--train-limit", "256", "--capacity", "8", "--wait")
    # Then the worker consumed the old message without running it
    assert "succeeded" in follower.stdout
    job = genq.client_json("status", job_id)
    assert job["status"] == "cancelled" and job["started_at"] is None


def test_a_running_job_reports_each_batch_and_stops_within_its_epoch_when_cancelled(genq):
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    # 60,000 images in batches of 128: 469 steps an epoch, several seconds each on a CPU
    job_id = genq.client("submit", "train-vae", "--epochs", "3", "--capacity", "8").stdout.strip()
    store = genq.store()
    row = genq.wait_until(lambda: (r := store.get(job_id)).progress_done and r, timeout=180, what="the first batches")
    assert row.progress_total == 3 * 469 and "epoch 1/3: batch" in row.progress_message, (row.progress_done, row.progress_message)
    genq.client("cancel", job_id)
    result = genq.client("wait", job_id, "--timeout", "60", "--json", check=False)
    assert result.returncode == 1
    job = json.loads(result.stdout)
    assert job["status"] == "cancelled"
    # Within the first epoch: no epoch ended, so no loss was recorded
    assert job["progress"]["done"] < 469 and genq.client_json("show", job_id)["metrics"] == {}


def test_commands_refuse_an_unmigrated_database(genq, tmp_path):
    (tmp_path / "fresh.sqlite3").touch()  # a database file without genq's schema (where there is none: test_home.py)
    result = genq.client("list", check=False, env={"GENQ_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}"})
    assert result.returncode == 1
    assert "not initialised: run `client db upgrade`" in result.stderr
