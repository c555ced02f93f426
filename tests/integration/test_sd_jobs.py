"""Stable Diffusion jobs through a real worker, on a tiny random model written by `client models make-tiny`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

FAST = ["--width", "64", "--height", "64", "--steps", "4"]


@pytest.fixture(scope="module")
def make_tiny(tmp_path_factory):
    """`client models make-tiny PATH` run once: its path and what it printed."""
    import subprocess

    from tests.conftest import BIN

    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    result = subprocess.run([str(BIN / "client"), "models", "make-tiny", str(path)], capture_output=True, text=True,
                            check=True)
    return path, result


@pytest.fixture(scope="module")
def cli_tiny_model(make_tiny) -> Path:
    """Written by `client models make-tiny`, so the command itself is exercised."""
    return make_tiny[0]


def test_make_tiny_prints_only_its_own_two_lines(make_tiny):
    path, result = make_tiny
    assert result.stdout.splitlines() == [
        f"wrote a tiny random Stable Diffusion model to {path}",
        "its weights are random: its images are noise; use it to exercise the pipeline, not to look at",
    ]
    # no progress bar from transformers ("Writing model shards: 100%|...| 1/1"), nor any other line
    assert "Writing model shards" not in result.stderr and "\r" not in result.stderr and "it/s" not in result.stderr
    assert result.stderr == ""
    assert (path / "model_index.json").is_file() and (path / "text_encoder" / "model.safetensors").is_file()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("artifact_env", ["folder", "s3"], indirect=True)
def test_sd_job_writes_images_that_carry_their_settings_and_reuses_the_model(genq, cli_tiny_model):
    genq.start_worker()
    # When an sd job with a negative prompt and two images runs
    first = genq.client_json("submit", "sd", "--model", str(cli_tiny_model), "--prompt", "a red bicycle",
                             "--negative", "blurry", "--num-images", "2", "--seed", "7", *FAST, "--wait")
    # Then it wrote two PNGs whose text chunks carry the negative prompt and the settings, and a grid
    assert first["status"] == "succeeded", first
    files = genq.artifact_paths(first["id"])
    assert {"image-0.png", "image-1.png", "grid.png"} <= set(files)
    for index in (0, 1):
        with Image.open(files[f"image-{index}.png"]) as image:
            assert image.size == (64, 64)
            assert "Negative prompt: blurry" in image.text["parameters"]
            settings = json.loads(image.text["genq"])
            # image i is drawn from seed + i: it alone, with --num-images 1 --seed 7+i, remakes it
            assert settings["negative_prompt"] == "blurry" and settings["seed"] == 7 + index and settings["image_index"] == index
    assert first["result"]["seed"] == 7 and first["result"]["model_cache"] == "miss"
    assert [i["file"] for i in first["result"]["images"]] == ["image-0.png", "image-1.png"]

    # And the same job again on the same worker reuses the loaded model and gives the same pictures
    second = genq.client_json("submit", "sd", "--model", str(cli_tiny_model), "--prompt", "a red bicycle",
                              "--negative", "blurry", "--num-images", "2", "--seed", "7", *FAST, "--wait")
    assert second["result"]["model_cache"] == "hit"
    assert "reused cached model" in genq.client("logs", second["id"]).stdout
    again = genq.artifact_paths(second["id"])
    for name in ("image-0.png", "image-1.png"):
        assert np.array_equal(np.asarray(Image.open(files[name])), np.asarray(Image.open(again[name])))

    # And without a seed, a random one is chosen and recorded on the job
    third = genq.client_json("submit", "sd", "--model", str(cli_tiny_model), "--prompt", "a red bicycle", *FAST, "--wait")
    assert third["params"]["seed"] == third["result"]["seed"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("artifact_env", ["folder", "s3"], indirect=True)
def test_sd_job_is_cancelled_between_steps(genq, cli_tiny_model):
    genq.start_worker()
    job_id = genq.client("submit", "sd", "--model", str(cli_tiny_model), "--prompt", "slow", "--steps", "150",
                         "--width", "512", "--height", "512").stdout.strip()
    store = genq.store()
    genq.wait_until(lambda: store.get(job_id).progress_done >= 2, timeout=180, what="denoising to start")
    genq.client("cancel", job_id)
    result = genq.client("wait", job_id, "--timeout", "60", "--json", check=False)
    job = json.loads(result.stdout)
    assert result.returncode == 1 and job["status"] == "cancelled"
    assert job["progress"]["done"] < 150
    assert genq.artifact_paths(job_id) == {}  # no partial images passed off as results


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sd_model_id_that_is_not_available_fails_the_job_in_one_line(genq):
    genq.start_worker()
    result = genq.client("submit", "sd", "--model", "nobody/no-such-model", "--prompt", "x", *FAST, "--wait",
                         "--json", check=False)
    job = json.loads(result.stdout)
    assert result.returncode == 1 and job["status"] == "failed"
    assert "nobody/no-such-model" in job["error"] and "local path" in job["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("args", [
    ["--prompt", ""], ["--prompt", "x", "--steps", "0"], ["--prompt", "x", "--steps", "151"],
    ["--prompt", "x", "--width", "100"], ["--prompt", "x", "--height", "4096"], ["--prompt", "x", "--guidance", "-1"],
    ["--prompt", "x", "--num-images", "17"], ["--prompt", "x", "--scheduler", "lms"],
    ["--prompt", "x", "--model", "./does/not/exist"], ["--negative", "no prompt"],
])
def test_sd_bad_input_exits_2_and_stores_nothing(genq, args):
    result = genq.client("submit", "sd", *args, check=False)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert genq.store().list() == []
