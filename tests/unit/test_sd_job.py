"""The `sd` job run in-process with a LocalContext on the tiny random model."""
from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from genq.core.context import JobCancelled, LocalContext
from genq.core.sd import job
from genq.core.kinds.sd import SD


def spec(model, **changes) -> SD:
    settings = dict(prompt="a photo of a cat", negative="blurry, ugly", steps=2, width=64, height=64,
                    seed=7, scheduler="euler-a", model=model and str(model))
    settings.update(changes)
    return SD(**settings)


def test_writes_pngs_with_settings_and_a_grid(tmp_path, tiny_model):
    ctx = LocalContext(tmp_path, job_id="j1")
    result = job.run(spec(tiny_model, num_images=3), ctx)

    assert result["seed"] == 7
    assert result["images"] == [{"file": f"image-{i}.png", "seed": 7 + i, "batch_index": i} for i in range(3)]
    assert result["model"] == str(tiny_model) and result["model_cache"] == "miss" and result["warnings"] == []
    assert result["seconds"] > 0 and result["load_seconds"] > 0
    assert result["batch"] == {"jobs": 1, "images": 3}
    assert not [m for _, m in ctx.logs if "batched" in m]
    folder = tmp_path / "j1"
    assert sorted(p.name for p in folder.iterdir()) == ["grid.png", "image-0.png", "image-1.png", "image-2.png"]

    image = Image.open(folder / "image-1.png")
    assert image.size == (64, 64)
    parameters = image.text["parameters"]
    assert parameters.splitlines()[:2] == ["a photo of a cat", "Negative prompt: blurry, ugly"]
    assert "Steps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 8, Size: 64x64" in parameters  # image 1: seed + 1
    settings = json.loads(image.text["genq"])
    assert settings["negative_prompt"] == "blurry, ugly" and settings["image_index"] == 1 and settings["seed"] == 8
    assert {"prompt", "seed", "steps", "guidance", "scheduler", "width", "height", "model"} <= settings.keys()
    assert Image.open(folder / "grid.png").size == (128, 128)  # 3 images in a 2x2 grid
    assert ctx.progress_state[:2] == (2, 2)


def test_the_cheap_latent_preview_maps_sd_latents_linearly_to_rgb():
    import torch

    from genq.core.sd.preview import LATENT_RGB_FACTORS, latents_rgb

    latents = torch.zeros(4, 2, 3)
    latents[0] = 1.0  # the first channel alone: its row of factors
    rgb = latents_rgb(latents)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0].tolist() == [round((f + 1) * 127.5) for f in LATENT_RGB_FACTORS[0]]
    assert latents_rgb(torch.ones(1, 2, 2)).shape == (2, 2, 3)  # a latent space of one channel: gray


def test_one_image_has_no_grid_and_no_negative_line(tmp_path, tiny_model):
    ctx = LocalContext(tmp_path, job_id="j2")
    job.run(spec(tiny_model, negative=None), ctx)
    assert sorted(p.name for p in (tmp_path / "j2").iterdir()) == ["image-0.png"]
    assert "Negative prompt" not in Image.open(tmp_path / "j2" / "image-0.png").text["parameters"]


def test_same_seed_same_png_pixels(tmp_path, tiny_model):
    first_ctx = LocalContext(tmp_path, job_id="a")
    job.run(spec(tiny_model), first_ctx)
    job.run(spec(tiny_model), LocalContext(tmp_path, job_id="b", cache=first_ctx.cache))
    first, second = (Image.open(tmp_path / j / "image-0.png") for j in ("a", "b"))
    assert first.tobytes() == second.tobytes()


def test_second_run_reuses_the_cached_model(tmp_path, tiny_model):
    first_ctx = LocalContext(tmp_path, job_id="first")
    cache = first_ctx.cache
    first = job.run(spec(tiny_model), first_ctx)
    second_ctx = LocalContext(tmp_path, job_id="second", cache=cache)
    second = job.run(spec(tiny_model), second_ctx)
    assert (first["model_cache"], second["model_cache"]) == ("miss", "hit")
    assert first["load_seconds"] > 0 and second["load_seconds"] == 0.0
    assert cache.loads == 1
    assert re.fullmatch(rf"loaded model {re.escape(str(tiny_model))} in \d+\.\d\d s", first_ctx.logs[0][1])
    assert ("info", f"reused cached model {tiny_model}") in second_ctx.logs


def test_missing_seed_is_chosen_and_recorded(tmp_path, tiny_model):
    ctx = LocalContext(tmp_path, job_id="j3")
    result = job.run(spec(tiny_model, seed=None), ctx)
    assert isinstance(result["seed"], int) and result["images"][0]["seed"] == result["seed"]
    assert json.loads(Image.open(tmp_path / "j3" / "image-0.png").text["genq"])["seed"] == result["seed"]


def test_long_prompt_warning_is_logged_and_returned(tmp_path, tiny_model):
    ctx = LocalContext(tmp_path, job_id="j4")
    result = job.run(spec(tiny_model, prompt="a red cat " * 40), ctx)
    assert len(result["warnings"]) == 1
    assert [m for level, m in ctx.logs if level == "warning"] == result["warnings"]
    assert "longer than the 77" in result["warnings"][0]


class CancelAfter(LocalContext):
    """Asks to cancel once `steps` denoising steps were reported."""

    def __init__(self, *args, steps: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.cancel_at = steps
        self.steps_reported = 0

    def progress(self, done, total, message=""):
        super().progress(done, total, message)
        self.steps_reported += 1
        if self.steps_reported >= self.cancel_at:
            self.cancel_requested = True


def test_cancellation_ends_the_job_within_one_step(tmp_path, tiny_model):
    ctx = CancelAfter(tmp_path, job_id="j5", steps=2)
    with pytest.raises(JobCancelled):
        job.run(spec(tiny_model, steps=20), ctx)
    assert ctx.steps_reported == 2
    assert not (tmp_path / "j5").exists()
