"""Interpolation and sampling jobs through real workers: waiting for their model, failing with it,
and a training job that survives the SIGKILL of its worker."""
from __future__ import annotations

import json
import os
import signal

import pytest
from PIL import Image

from tests.conftest import ON_EVERY_ARTIFACT_STORE

pytestmark = pytest.mark.integration

SMALL_TRAINING = ["--epochs", "2", "--train-limit", "1024", "--capacity", "16", "--seed", "5"]


@ON_EVERY_ARTIFACT_STORE  # the dependants read the model's files from the store
def test_interpolate_and_sample_wait_for_their_model_then_run(genq):
    # Given a training job still queued (no worker yet) and two jobs that use its model
    model = genq.client("submit", "train-vae", *SMALL_TRAINING).stdout.strip()
    interpolation = genq.client_json("submit", "interpolate", "--model", model[:8], "--from-digit", "7",
                                     "--to-digit", "1", "--steps", "6")
    sampling = genq.client_json("submit", "sample-vae", "--model", model, "--count", "16", "--seed", "1")
    assert interpolation["status"] == "waiting" and interpolation["depends_on"] == model
    assert f"waits for {model}" in genq.client("status", interpolation["id"]).stdout
    # When a worker comes
    genq.start_worker()
    # Then the model trains first, and both jobs run after it
    for job_id in (interpolation["id"], sampling["id"]):
        assert genq.client("wait", job_id, "--timeout", "300", check=False).returncode == 0
    trained = genq.client_json("status", model)
    for job_id in (interpolation["id"], sampling["id"]):
        assert genq.client_json("status", job_id)["started_at"] >= trained["finished_at"]

    files = genq.artifact_paths(interpolation["id"])
    latents = json.loads(files["latents.json"].read_text())
    assert [f["lambda"] for f in latents["frames"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert latents["frames"][-1]["latent"] == pytest.approx(latents["mu1"])
    assert latents["frames"][0]["latent"] == pytest.approx(latents["mu2"])
    with Image.open(files["interpolation.png"]) as strip:
        assert strip.width > strip.height  # one strip: 6 frames plus the two originals

    files = genq.artifact_paths(sampling["id"])
    for name in ("samples.png", "manifold.png", "reconstructions.png"):
        with Image.open(files[name]) as image:
            image.verify()
    with Image.open(files["manifold.png"]) as manifold:
        assert manifold.size[0] >= 20 * 28 and manifold.size[1] >= 20 * 28
    assert {"loss.png", "reconstructions.png"} <= set(genq.artifact_paths(model))


def test_jobs_on_a_failed_model_fail_and_name_it(genq, tmp_path):
    # Given a training job that fails (no MNIST where its worker looks) and a job waiting for it
    model = genq.client("submit", "train-vae", "--epochs", "1").stdout.strip()
    waiting = genq.client("submit", "interpolate", "--model", model).stdout.strip()
    genq.start_worker(env={"GENQ_DATA_ROOT": str(tmp_path / "no-data")})
    assert genq.client("wait", model, "--timeout", "120", check=False).returncode == 1
    # Then the waiting job failed, naming the model job
    job = genq.client_json("status", waiting)
    assert job["status"] == "failed" and model in job["error"]
    assert job["started_at"] is None
    # And a job submitted on the failed model fails at once, exit 1
    late = genq.client("submit", "sample-vae", "--model", model, check=False)
    assert late.returncode == 1 and model in late.stderr


def test_cancelling_a_queued_model_fails_the_jobs_that_wait_for_it(genq):
    model = genq.client("submit", "train-vae", "--epochs", "1").stdout.strip()
    waiting = genq.client("submit", "interpolate", "--model", model).stdout.strip()
    after_that = genq.client("submit", "train-vae", "--epochs", "1", "--after", waiting).stdout.strip()
    out = genq.client("cancel", model).stdout
    assert f"{waiting}: failed" in out
    for job_id in (waiting, after_that):
        job = genq.client_json("status", job_id)
        assert job["status"] == "failed" and "dependency" in job["error"]


def test_model_must_be_a_train_vae_job_and_inputs_in_range(genq):
    model = genq.client("submit", "train-vae", "--epochs", "1").stdout.strip()
    other = genq.client("submit", "interpolate", "--model", model).stdout.strip()
    cases = [
        ["interpolate", "--model", other],
        ["interpolate", "--model", "ffffffff-0000-0000-0000-000000000000"],
        ["interpolate", "--model", model, "--from-index", "10000", "--to-index", "1"],
        ["interpolate", "--model", model, "--from-digit", "11", "--to-digit", "1"],
        ["interpolate", "--model", model, "--steps", "1"],
        ["sample-vae", "--model", model, "--count", "0"],
    ]
    for args in cases:
        result = genq.client("submit", *args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert len(genq.store().list()) == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("artifact_env", ["folder", "s3"], indirect=True)  # with s3: the checkpoint is an object
def test_training_resumes_after_its_worker_is_killed(genq):
    # Given a multi-epoch training job running on worker A
    fast_takeover = {"GENQ_LEASE": "3", "GENQ_RECONCILE_INTERVAL": "1"}
    worker_a = genq.start_worker(env=fast_takeover)
    job_id = genq.client("submit", "train-vae", "--epochs", "4", "--train-limit", "3072", "--capacity", "16",
                         "--seed", "9").stdout.strip()
    store = genq.store()
    checkpointed = lambda: "checkpoint.safetensors" in {a["name"] for a in genq.client_json("artifacts", job_id)}  # noqa: E731
    genq.wait_until(checkpointed, timeout=180, what="the first epoch's checkpoint")
    # When worker A is killed outright in the middle of the job
    os.killpg(worker_a.pid, signal.SIGKILL)
    worker_a.wait()
    epochs_done = len(genq.client_json("show", job_id)["metrics"]["train_loss_per_image"])
    assert epochs_done < 4 and store.get(job_id).status == "running"
    # And worker B starts (its temp folder its own)
    worker_b_tmp = genq.home.parent / "worker-b-tmp"
    worker_b_tmp.mkdir()
    genq.start_worker(env={**fast_takeover, "TMPDIR": str(worker_b_tmp)})
    # Then B takes the job over and resumes it from the last completed epoch
    assert genq.client("wait", job_id, "--timeout", "300", check=False).returncode == 0
    details = genq.client_json("show", job_id)
    assert details["attempts"] == 2
    assert [p["step"] for p in details["metrics"]["train_loss_per_image"]] == [1, 2, 3, 4]
    assert any("lease" in (e["reason"] or "") and "expired" in e["reason"] for e in details["events"])
    logs = genq.client("logs", job_id).stdout
    assert "resuming from the checkpoint of epoch" in logs
    resumed_from = int(logs.split("resuming from the checkpoint of epoch ")[1].split()[0])
    assert resumed_from >= 1
    # And every file is whole in the store (from an object store: the attempt-2 run's own keys, verified)
    files = genq.artifact_paths(job_id)
    assert {"checkpoint.safetensors", "model.safetensors"} <= set(files)
    if genq.object_store:
        paths = {a["name"]: a["path"] for a in genq.client_json("artifacts", job_id)}
        assert f"/{job_id}/2/" in paths["checkpoint.safetensors"] and f"/{job_id}/2/" in paths["model.safetensors"]
    # And the local copy B resumed from is gone with its run (in a folder store it read the file in place)
    assert [p.name for p in worker_b_tmp.iterdir() if p.name.startswith("genq-run-")] == []
