"""Sweeps and groups through the real CLI, a real worker, Redis and the SQL store (SQLite and
PostgreSQL), and the Python API driving the same path in this process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genq.core.config import load_settings
from genq.core.images import PALETTE
from tests.conftest import ON_EVERY_ARTIFACT_STORE

pytestmark = pytest.mark.integration

TINY_TRAINING = ["--epochs", "2", "--train-limit", "256", "--capacity", "4", "--batch-size", "64"]
SD_SMALL = ["--width", "64", "--height", "64", "--steps", "2"]
WAIT_S = "600"
CURVE_COLOURS = PALETTE[:4]  # the loss-curve chart draws each job's line in its own colour


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from genq.core.sd.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("sweeps") / "tiny-sd")


def pixels_of_colour(path: Path, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int((np.abs(image - np.array(colour)).max(axis=2) <= tolerance).sum())


def stored_counts(genq) -> tuple[int, int]:
    """(jobs, groups) in the installation's store."""
    from sqlalchemy import func, select

    from genq.core.store.models import GroupRow, JobRow

    with genq.store().sessions() as session:
        return session.scalar(select(func.count()).select_from(JobRow)), session.scalar(select(func.count()).select_from(GroupRow))


def test_a_two_by_two_train_vae_sweep_gives_one_group_its_table_and_a_report(genq, tmp_path):
    # Given a worker
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    # When a 2x2 sweep of beta and the latent size is submitted as one named group
    group_id = genq.client("submit", "train-vae", "--sweep", "beta=0.5,2", "--sweep", "latent-dims=2..3",
                           *TINY_TRAINING, "--group-name", "betas").stdout.strip()
    # Then waiting on the group ends with all four succeeded
    done = genq.client("wait", "--group", "betas", "--timeout", WAIT_S)
    assert done.stdout.strip() == f"group {group_id}: 4 succeeded"

    # And its table has one column per swept parameter and each job's final losses
    summary = genq.client_json("group", "betas", "--report", str(tmp_path / "report"))
    assert (summary["id"], summary["name"], summary["size"], summary["swept"]) == (group_id, "betas", 4, ["beta", "latent_dims"])
    assert summary["counts"] == {"succeeded": 4}
    rows = summary["jobs"]
    assert [(row["beta"], row["latent_dims"]) for row in rows] == [(0.5, 2), (0.5, 3), (2.0, 2), (2.0, 3)]
    for row in rows:
        job = genq.client_json("status", row["id"])
        assert job["params"]["beta"] == row["beta"] and job["params"]["latent_dims"] == row["latent_dims"]
        assert row["test_loss_per_image"] == job["result"]["test_loss_per_image"] > 0
        assert row["seed"] == job["params"]["seed"]
    text = genq.client("group", group_id[:8]).stdout
    assert "BETA" in text and "LATENT_DIMS" in text and "TEST_LOSS_PER_IMAGE" in text and "4 succeeded" in text
    assert len(genq.client_json("list", "--group", "betas")) == 4

    # And the report draws the four loss curves on one chart, and the final loss against each parameter
    report = tmp_path / "report"
    assert sorted(path.name for path in report.iterdir()) == ["final-loss.png", "loss-curves.png", "table.csv"]
    curves = report / "loss-curves.png"
    # Each job has its colour at least in the legend (about 50 pixels): two runs whose losses differ by
    # less than a line's width draw one line over the other, so more than the legend is not promised
    assert all(pixels_of_colour(curves, colour) > 30 for colour in CURVE_COLOURS), "a curve is missing"
    assert sum(pixels_of_colour(curves, colour) for colour in CURVE_COLOURS) > 1000, "no curve is drawn"
    assert Image.open(report / "final-loss.png").size[0] > 400
    assert (report / "table.csv").read_text().splitlines()[0].startswith("id,beta,latent_dims,status,seconds")


@ON_EVERY_ARTIFACT_STORE  # the report reads each job's image from the store
def test_an_sd_prompt_file_by_seed_sweep_gives_a_labelled_grid(genq, model, tmp_path):
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red bicycle | blurry\n# not a prompt\n\na lighthouse at dusk\n")
    # When two prompts are swept against three seeds
    group = json.loads(genq.client("submit", "sd", "--model", str(model), "--prompt-file", str(prompts),
                                   "--sweep", "seed=1..3", "--negative", "ugly", *SD_SMALL, "--wait", "--json",
                                   "--timeout", WAIT_S).stdout)
    # Then six jobs succeeded, each with its prompt, its negative (the line's, else --negative) and seed
    assert group["counts"] == {"succeeded": 6} and group["swept"] == ["prompt", "negative", "seed"]
    points = [(row["prompt"], row["negative"], row["seed"]) for row in group["jobs"]]
    assert points == [(p, n, s) for p, n in [("a red bicycle", "blurry"), ("a lighthouse at dusk", "ugly")]
                      for s in (1, 2, 3)]
    # And the report is one grid: two rows of three 64x64 images, each cell the job's own image
    report = genq.client_json("group", group["id"], "--report", str(tmp_path / "report"))["report"]
    grid = Image.open(tmp_path / "report" / "grid.png").convert("RGB")
    assert str(tmp_path / "report" / "grid.png") in report
    assert grid.width >= 3 * 64 and grid.height >= 2 * 64
    first = genq.artifact_paths(group["jobs"][0]["id"])["image-0.png"]
    assert locate(np.asarray(grid), np.asarray(Image.open(first).convert("RGB"))), "job 1's image is not in the grid"


def locate(grid: np.ndarray, image: np.ndarray) -> bool:
    """Whether `image` appears unscaled somewhere in `grid` (exact pixels)."""
    h, w = image.shape[:2]
    rows, cols = np.nonzero((grid[: grid.shape[0] - h + 1, : grid.shape[1] - w + 1] == image[0, 0]).all(axis=2))
    return any(np.array_equal(grid[r:r + h, c:c + w], image) for r, c in zip(rows, cols))


def test_a_sweep_with_one_invalid_point_stores_nothing(genq):
    result = genq.client("submit", "train-vae", "--sweep", "beta=1,2,-3", "--epochs", "1", check=False)
    assert result.returncode == 2
    assert "sweep point beta=-3.0: --beta: input should be greater than or equal to 0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert stored_counts(genq) == (0, 0)
    too_big = genq.client("submit", "train-vae", "--sweep", "seed=1..5", env={"GENQ_MAX_SWEEP": "4"}, check=False)
    assert too_big.returncode == 2 and "add --yes" in too_big.stderr
    assert stored_counts(genq) == (0, 0)


def test_waiting_on_a_group_exits_1_when_one_job_fails(genq, model, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text("{}")  # a model folder by its look; its load fails on the worker
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    group_id = genq.client("submit", "sd", "--prompt", "a red bicycle", *SD_SMALL, "--seed", "1",
                           "--sweep", f"model={model},{broken}").stdout.strip()
    waited = genq.client("wait", "--group", group_id, "--timeout", WAIT_S, check=False)
    assert waited.returncode == 1
    assert waited.stdout.strip() == f"group {group_id}: 1 failed, 1 succeeded"
    # Cancelling a finished group cancels nothing
    assert genq.client("cancel", "--group", group_id).stdout.strip() == "every job of the group had already finished"


def test_cancelling_a_group_cancels_its_queued_jobs(genq):
    group_id = genq.client("submit", "train-vae", "--sweep", "seed=1..3", "--epochs", "1").stdout.strip()
    out = genq.client("cancel", "--group", group_id).stdout.strip().splitlines()
    assert len(out) == 3
    summary = genq.client_json("group", group_id)
    assert summary["counts"] == {"cancelled": 3}
    assert genq.client("wait", "--group", group_id, check=False).returncode == 1


@ON_EVERY_ARTIFACT_STORE  # Artifact.image() reads from the store
def test_the_python_api_submits_follows_and_reads_a_sweep(genq, model):
    from genq import Client, SweepPointError

    client = Client(load_settings(genq.env))
    # Bad input: the same one-line errors as the CLI, and nothing stored
    with pytest.raises(SweepPointError, match="sweep point seed=-1: seed:"):
        client.sweep("sd", model=str(model), prompt="x", seed=[1, -1])
    assert stored_counts(genq) == (0, 0)

    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    group = client.sweep("sd", model=str(model), prompt=["a red bicycle", "a lighthouse"], seed=range(2),
                         negative="blurry", width=64, height=64, steps=2, name="api")
    assert (group.size, group.swept, client.group("api").id) == (4, ["prompt", "seed"], group.id)
    group.wait(timeout=float(WAIT_S))
    table = group.table()
    rows = table if isinstance(table, list) else table.to_dict("records")  # a DataFrame where pandas is installed
    assert [(row["prompt"], row["seed"], row["status"]) for row in rows] == [
        (p, s, "succeeded") for p in ("a red bicycle", "a lighthouse") for s in (0, 1)]
    job = group.jobs[0]
    assert job.status == "succeeded" and job.result["seed"] == 0 and job.finished
    image = job.artifact("image-0.png").image()
    assert image.size == (64, 64)
    assert [a.name for a in job.artifacts()] == ["image-0.png"]
    assert any("model" in line for line in job.logs())  # "loaded model ..." or "reused cached model ..."

    # And a single job through the API, waited on
    single = client.submit("sd", model=str(model), prompt="a boat", width=64, height=64, steps=2, seed=5)
    assert single.wait(timeout=float(WAIT_S)).status == "succeeded"
    assert client.job(single.id[:8]).result["seed"] == 5
