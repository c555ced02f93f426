"""Artifacts in an object store: real workers writing to moto's S3 server on 127.0.0.1 (its HTTP API,
reached only through the standard AWS_* variables), nothing of them on local disk, every download
verified, a changed object refused, and the S3 server stopped in the middle of a run."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, S3Server, free_port

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

FAST = ["--width", "64", "--height", "64", "--steps", "2"]
ON_S3 = pytest.mark.parametrize("artifact_env", ["s3"], indirect=True)


def bucket_and_prefix(root: str) -> tuple[str, str]:
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    return bucket, prefix


def files_with_digests(folder: Path, digests: set[str]) -> list[Path]:
    """Every file under `folder` whose sha256 is one of `digests`."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and hashlib.sha256(path.read_bytes()).hexdigest() in digests:
            found.append(path)
    return found


def sd_job(genq, tiny_model, *extra: str) -> dict:
    return genq.client_json("submit", "sd", "--model", str(tiny_model), "--prompt", "a red bicycle",
                            "--num-images", "2", "--seed", "3", *FAST, *extra, "--wait")


@ON_S3
def test_a_jobs_artifacts_land_in_the_s3_server_and_nowhere_on_local_disk(genq, tiny_model, s3_server, tmp_path):
    # Given a worker whose temp folder is its own, and an S3 root
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    genq.start_worker({"TMPDIR": str(worker_tmp)})
    # When an sd job runs
    job = sd_job(genq, tiny_model)
    assert job["status"] == "succeeded", job
    # Then each artifact is one object in the bucket, under a key of the job's attempt, and listed as its URL
    root = genq.env["GENQ_ARTIFACT_ROOT"]
    bucket, prefix = bucket_and_prefix(root)
    listed = genq.client_json("artifacts", job["id"])
    assert sorted(a["name"] for a in listed) == ["grid.png", "image-0.png", "image-1.png"]
    keys = s3_server.keys(bucket)
    assert sorted(a["path"] for a in listed) == sorted(f"s3://{bucket}/{key}" for key in keys)
    assert all(key.startswith(f"{prefix}/{job['id']}/1/") for key in keys)
    text = genq.client("artifacts", job["id"]).stdout
    assert f"s3://{bucket}/{prefix}/{job['id']}/1/" in text
    # And no file with an artifact's bytes is anywhere on this disk's genq places: home, worker temp, cwd
    digests = {a["sha256"] for a in listed}
    for folder in (genq.home, worker_tmp):
        assert files_with_digests(folder, digests) == []
    assert not (genq.home / "s3:").exists() and not (genq.home / "artifacts").exists()

    # And `client artifacts --download` copies them, verified against the recorded sha256
    out = tmp_path / "out"
    downloaded = genq.client_json("artifacts", job["id"], "--download", str(out))
    for item in downloaded:
        assert Path(item["path"]) == out / item["name"]
        assert hashlib.sha256((out / item["name"]).read_bytes()).hexdigest() == item["sha256"]

    # And the Python API reads them from the bucket, checked
    from genq import Client
    from genq.core.config import load_settings

    client = Client(load_settings(genq.env))
    artifact = client.job(job["id"]).artifact("image-0.png")
    assert artifact.path is None and artifact.url.startswith(f"s3://{bucket}/")
    assert artifact.image().size == (64, 64)
    assert hashlib.sha256(artifact.read()).hexdigest() == artifact.sha256


@ON_S3
def test_a_changed_object_is_refused_on_download_in_one_line(genq, tiny_model, s3_server, tmp_path):
    genq.start_worker()
    job = sd_job(genq, tiny_model)
    assert job["status"] == "succeeded", job
    bucket, _ = bucket_and_prefix(genq.env["GENQ_ARTIFACT_ROOT"])
    image = next(a for a in genq.client_json("artifacts", job["id"]) if a["name"] == "image-1.png")
    key = image["path"].removeprefix(f"s3://{bucket}/")
    # When someone overwrites the object in the bucket (same size, one byte changed)
    s3 = s3_server.client()
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=original[:-1] + bytes([original[-1] ^ 0xFF]))
    # Then the download is refused in one line, and nothing lands in DIR
    out = tmp_path / "out"
    result = genq.client("artifacts", job["id"], "--download", str(out), check=False)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "Error: artifact image-1.png does not match its recorded sha256: the file was changed after the job wrote it"]
    assert [p for p in out.rglob("*") if p.is_file()] == []
    # And a row forged to point at another key is refused before anything is read
    from sqlalchemy import create_engine, text

    engine = create_engine(genq.env["GENQ_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE artifacts SET relative_path = :path WHERE job_id = :job AND name = 'image-1.png'"),
                     {"path": f"{job['id']}/image-1.png", "job": job["id"]})
    engine.dispose()
    line = genq.client("artifacts", job["id"], "--download", str(tmp_path / "forged"), check=False).stderr.strip()
    assert line == (f"Error: artifact image-1.png is refused: its recorded key '{job['id']}/image-1.png' is not "
                    f"{job['id']}/<attempt>/<token>/image-1.png")


def start_failure(genq, env: dict[str, str]) -> str:
    """genq-worker started with `env`: it must stop by itself, and say why in one line of its own (no traceback)."""
    worker = subprocess.run([str(BIN / "genq-worker")], env={**genq.env, **env}, cwd=genq.home, capture_output=True,
                            text=True, timeout=120)
    assert worker.returncode != 0 and "Traceback" not in worker.stderr, worker.stderr
    said = [line for line in worker.stderr.splitlines() if line.startswith("genq-worker: ")]
    assert len(said) == 1, worker.stderr
    return said[0]


def test_a_bad_object_store_root_is_one_line_at_startup(genq, s3_root, s3_server):
    # An unknown scheme: every command says so in one line
    result = genq.client("list", check=False, env={"GENQ_ARTIFACT_ROOT": "nosuch://bucket/x"})
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "GENQ_ARTIFACT_ROOT: the scheme 'nosuch' is not an object store genq knows" in result.stderr
    # No credentials at all (the worker's environment has no AWS_* variable)
    without = {name: "" for name in s3_server.env if name != "AWS_ENDPOINT_URL"}
    line = start_failure(genq, {"GENQ_ARTIFACT_ROOT": s3_root, "AWS_ENDPOINT_URL": s3_server.env["AWS_ENDPOINT_URL"],
                                **without})
    assert line == (f"genq-worker: GENQ_ARTIFACT_ROOT {s3_root}: no credentials for {s3_root}; "
                    "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL")
    # A bucket that does not exist
    missing = s3_root.replace("genq-test-", "no-such-bucket-")
    line = start_failure(genq, {"GENQ_ARTIFACT_ROOT": missing, **s3_server.env})
    assert line == f"genq-worker: GENQ_ARTIFACT_ROOT {missing}: no such bucket (create it, or correct the URL)"


@pytest.fixture
def own_s3(genq, monkeypatch):
    """An S3 server of this test alone (it is stopped and started again), the genq installation pointed at it."""
    server = S3Server(free_port()).start()
    bucket = server.new_bucket()
    genq.env.update(server.env, GENQ_ARTIFACT_ROOT=f"s3://{bucket}/artifacts")
    for name, value in server.env.items():  # this process's reads (boto3, the Python API) go there too
        monkeypatch.setenv(name, value)
    yield server, bucket
    server.stop()


def wait_for_denoising(genq, job_id: str, steps: int) -> None:
    store = genq.store()
    genq.wait_until(lambda: store.get(job_id).progress_done >= steps, timeout=180, what="denoising to start")


def test_s3_stopped_mid_run_fails_the_job_in_one_line_with_nothing_indexed(genq, tiny_model, own_s3):
    server, bucket = own_s3
    # Given a worker that retries an upload for 2 s, running a job that uploads only at its end
    genq.start_worker({"GENQ_RETRY_FOR": "2"})
    job_id = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "x", "--width", "64", "--height",
                         "64", "--steps", "60", "--seed", "1").stdout.strip()
    wait_for_denoising(genq, job_id, 2)
    # When the S3 server stops before it uploads
    server.stop()
    # Then the job fails with one line naming the upload, and no artifact is indexed
    job = json.loads(genq.client("wait", job_id, "--timeout", "180", "--json", check=False).stdout)
    assert job["status"] == "failed", job
    assert "\n" not in job["error"] and job["error"].startswith("ArtifactWriteFailed: upload of artifact image-0.png")
    assert "did not answer" in job["error"]
    assert genq.client_json("artifacts", job_id) == []
    server.start()
    assert server.keys(bucket) == []  # nothing half-written left either


def test_s3_stopped_for_a_while_is_retried_and_the_job_succeeds(genq, tiny_model, own_s3, tmp_path):
    server, bucket = own_s3
    genq.start_worker({"GENQ_RETRY_FOR": "120"})
    job_id = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "x", "--width", "64", "--height",
                         "64", "--steps", "60", "--seed", "1").stdout.strip()
    wait_for_denoising(genq, job_id, 2)
    server.stop()
    # When its upload has failed at least once (the worker says it retries) and the server comes back
    log = genq.workers[0].log_path
    genq.wait_until(lambda: b"upload of artifact image-0.png" in log.read_bytes(), timeout=180,
                    what="the upload to be retried")
    time.sleep(1)
    server.start()
    # Then the job succeeds with every artifact whole and verified
    job = json.loads(genq.client("wait", job_id, "--timeout", "180", "--json", check=False).stdout)
    assert job["status"] == "succeeded", job
    downloaded = genq.client_json("artifacts", job_id, "--download", str(tmp_path / "out"))
    assert {a["name"] for a in downloaded} == {"image-0.png"}
    assert sorted(server.keys(bucket)) == sorted(a["path"].removeprefix(f"s3://{bucket}/")
                                                 for a in genq.client_json("artifacts", job_id))
