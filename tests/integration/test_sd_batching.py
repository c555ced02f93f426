"""Cross-job batching of sd jobs through a real worker, Redis and the SQL store (SQLite and PostgreSQL).

The jobs are queued before the worker starts, so the first job it claims finds the others waiting.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genq.core.context import LocalContext
from genq.core.kinds.sd import SD
from genq.core.sd.job import run
from tests.conftest import ON_EVERY_ARTIFACT_STORE

pytestmark = pytest.mark.integration
SIZE = ["--width", "64", "--height", "64"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from genq.core.sd.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("batching") / "tiny-sd")


def submit(genq, model: Path, prompt: str, *args: str) -> str:
    return genq.client("submit", "sd", "--model", str(model), "--prompt", prompt, *SIZE, *args).stdout.strip()


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"), dtype=np.int16)


@ON_EVERY_ARTIFACT_STORE  # six runs of one batch, each writing its own artifacts
def test_six_compatible_jobs_run_as_one_batch_and_each_equals_its_run_alone(genq, model, tmp_path):
    # Given six compatible jobs (own prompts, negatives, guidance scales, seeds) and one with other steps
    jobs = {}
    for i in range(6):
        negative = ["--negative", f"blurry {i}"] if i % 2 else []
        jobs[submit(genq, model, f"a red bicycle {i}", "--steps", "3", "--seed", str(100 + i),
                    "--guidance", str(5.0 + i), *negative)] = i
    odd_one = submit(genq, model, "other steps", "--steps", "2", "--seed", "7")

    # When one worker starts
    genq.start_worker({"GENQ_TORCH_THREADS": "1", "GENQ_SD_MAX_BATCH": "8"})
    store = genq.store()
    for job_id in [*jobs, odd_one]:
        genq.wait_until(lambda: store.get(job_id).status in ("succeeded", "failed"), 120, what=f"job {job_id}")

    # Then the six ran as one batch (one claimed by its message, five with it), the odd one alone
    results = {job_id: store.get(job_id) for job_id in jobs}
    assert all(job.status == "succeeded" for job in results.values()), [job.error for job in results.values()]
    assert sorted(job.result["batch"]["jobs"] for job in results.values()) == [6] * 6
    batch_claims = [e for job_id in jobs for e in store.events(job_id) if e.to_status == "running"
                    and (e.reason or "").startswith("claimed to run in one batch")]
    assert len(batch_claims) == 5
    assert all(any("batched with 5 other" in line.message for line in store.logs(job_id)) for job_id in jobs)
    odd = store.get(odd_one)
    assert (odd.status, odd.result["batch"]["jobs"]) == ("succeeded", 1)

    # And each job's image equals the same job run alone
    for job_id, i in jobs.items():
        spec = SD.model_validate(results[job_id].params)
        alone = LocalContext(tmp_path / "alone", job_id=f"alone-{i}")
        run(spec, alone)
        batched = pixels(genq.artifact_paths(job_id)["image-0.png"])
        solo = pixels(tmp_path / "alone" / f"alone-{i}" / "image-0.png")
        assert np.abs(batched - solo).max() <= 1, f"job {i} differs from its solo run"


@ON_EVERY_ARTIFACT_STORE
def test_cancelling_one_job_mid_batch_cancels_that_one_only(genq, model):
    # Given three compatible long jobs running as one batch
    ids = [submit(genq, model, f"slow {i}", "--steps", "150", "--seed", str(i)) for i in range(3)]
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    store = genq.store()
    genq.wait_until(lambda: all(store.get(i).status == "running" for i in ids), 60, what="the batch to start")
    genq.wait_until(lambda: store.get(ids[1]).progress_done >= 2, 60, what="a few steps")

    # When the middle one is cancelled
    genq.client("cancel", ids[1])

    # Then it ends cancelled part-way while the others go on to their last step and succeed, after it
    genq.wait_until(lambda: store.get(ids[1]).status == "cancelled", 60, what="the cancel")
    for job_id in (ids[0], ids[2]):
        genq.wait_until(lambda: store.get(job_id).status == "succeeded", 300, what=f"job {job_id}")
    cancelled, others = store.get(ids[1]), [store.get(ids[0]), store.get(ids[2])]
    assert cancelled.progress_done < 150 and all(job.progress_done == 150 for job in others)
    assert all(cancelled.finished_at < job.finished_at for job in others)
    assert store.artifacts(ids[1]) == []
    assert [a.name for a in store.artifacts(ids[0])] == ["image-0.png"]
