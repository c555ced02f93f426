"""Cross-job batching of sd jobs on the tiny random model (CPU, float32): a job's images never depend
on what it was batched with, and each job of a batch ends on its own."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from genq.core.cache import ModelCache
from genq.core.context import JobCancelled, LocalContext
from genq.core.kinds.sd import SD
from genq.core.sd import job
from genq.core.sd.generate import GenerationInputError, GenerationRequest, generate, generate_batch
from genq.core.sd.loading import ModelLoadError, load_components
from tests.unit.test_sd_job import CancelAfter

SIDE = 64
STEPS = 3
TOLERANCE = 1e-4  # float images, batch against alone
# Six compatible jobs: their own prompts, negatives, guidance scales, seeds and image counts.
SIX = [
    dict(prompt="a photo of a cat", negative=None, guidance=7.5, seed=1, num_images=1),
    dict(prompt="an astronaut riding a horse", negative="blurry, lowres", guidance=5.0, seed=2, num_images=2),
    dict(prompt="oil painting of a forest at night", negative="ugly", guidance=3.0, seed=3, num_images=1),
    dict(prompt="a dog", negative="", guidance=12.0, seed=2, num_images=2),
    dict(prompt="a red horse", negative="blurry", guidance=1.5, seed=40, num_images=1),
    dict(prompt="a city at sunset", negative=None, guidance=9.25, seed=7, num_images=2),
]


@pytest.fixture(scope="module")
def components(tiny_model):
    return load_components(str(tiny_model), "cpu")


@pytest.fixture(scope="module")
def cache():
    return ModelCache(capacity=2)


def sd(model, scheduler="dpm++", steps=STEPS, **settings) -> SD:
    return SD(model=str(model), scheduler=scheduler, steps=steps, width=SIDE, height=SIDE, **settings)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def run_alone(spec: SD, root, job_id: str, cache: ModelCache) -> dict:
    return job.run(spec, LocalContext(root, job_id=job_id, cache=cache))


def assert_same_pngs_as_alone(spec: SD, batched_root, alone_root, job_id: str, cache: ModelCache) -> None:
    run_alone(spec, alone_root, job_id, cache)
    names = sorted(p.name for p in (alone_root / job_id).iterdir())
    assert sorted(p.name for p in (batched_root / job_id).iterdir()) == names
    for name in names:  # at most one level of 255 from rounding floats that differ by ~1e-6
        assert np.abs(pixels(batched_root / job_id / name) - pixels(alone_root / job_id / name)).max() <= 1, name


class LostDatabase(LocalContext):
    """A context whose every log write fails, as a worker's does when its database is gone."""

    def log(self, message, level="info"):
        raise ConnectionError("the job database cannot be reached")


class FullDisk(LocalContext):
    def artifact(self, name, source, media_type=None):
        raise OSError(28, "No space left on device")


def test_six_compatible_jobs_each_equal_their_run_alone(tmp_path, tiny_model, cache):
    # Given six compatible jobs with their own prompts, negatives, guidance scales, seeds and image counts
    specs = [sd(tiny_model, **settings) for settings in SIX]
    assert len({spec.batch_key() for spec in specs}) == 1
    contexts = [LocalContext(tmp_path / "batch", job_id=f"job-{i}", cache=cache) for i in range(len(specs))]

    # When they run as one batch
    ends = dict(job.run_batch(list(zip(specs, contexts))))

    # Then each succeeds, says it was batched, and its PNGs are those it makes alone
    total = sum(spec.num_images for spec in specs)
    assert sorted(ends) == list(range(6))
    for i, spec in enumerate(specs):
        result = ends[i]
        assert isinstance(result, dict), result
        assert result["batch"] == {"jobs": 6, "images": total}
        assert [f["seed"] for f in result["images"]] == [spec.seed + k for k in range(spec.num_images)]
        assert ("info", f"batched with 5 other sd job(s): {total} images in one UNet batch") in contexts[i].logs
        assert contexts[i].progress_state == (STEPS, STEPS, f"denoising step {STEPS}/{STEPS}")
        assert_same_pngs_as_alone(spec, tmp_path / "batch", tmp_path / "alone", f"job-{i}", cache)


@pytest.mark.parametrize("scheduler", ["dpm++", "euler-a"])
def test_generate_batch_equals_each_request_alone(components, scheduler):
    # Given six requests, when they are generated as one batch and each alone
    requests = [GenerationRequest(s["prompt"], s["negative"], s["guidance"], s["seed"], s["num_images"]) for s in SIX]
    batched = generate_batch(components, requests, steps=STEPS, width=SIDE, height=SIDE, scheduler=scheduler)
    # Then each request's float images agree within float rounding
    assert len(batched) == len(requests)
    for request, generation in zip(requests, batched):
        alone = generate(components, request.prompt, request.negative, steps=STEPS, guidance=request.guidance,
                         seed=request.seed, width=SIDE, height=SIDE, num_images=request.num_images, scheduler=scheduler)
        assert generation.images.shape == (request.num_images, SIDE, SIDE, 3)
        assert np.abs(generation.images - alone.images).max() < TOLERANCE


def test_generate_batch_keeps_each_requests_warnings(components):
    requests = [GenerationRequest("a red cat " * 40, seed=1), GenerationRequest("a cat", "blurry", seed=2)]
    first, second = generate_batch(components, requests, steps=1, width=SIDE, height=SIDE, scheduler="euler")
    assert len(first.warnings) == 1 and "longer than the 77" in first.warnings[0]
    assert second.warnings == []


@pytest.mark.parametrize("scheduler", ["dpm++", "euler-a"])
def test_image_i_is_the_same_job_with_one_image_and_seed_plus_i(components, scheduler):
    settings = dict(steps=STEPS, guidance=6.0, width=SIDE, height=SIDE, scheduler=scheduler)
    three = generate(components, "a lake at sunset", "blurry", seed=20, num_images=3, **settings).images
    for i in range(3):
        one = generate(components, "a lake at sunset", "blurry", seed=20 + i, num_images=1, **settings).images
        assert np.abs(three[i] - one[0]).max() < TOLERANCE


def test_guidance_on_and_off_cannot_share_a_batch(components, tiny_model):
    requests = [GenerationRequest("a cat", guidance=7.5), GenerationRequest("a dog", guidance=1.0)]
    with pytest.raises(GenerationInputError, match="guidance above 1 and requests without cannot share a batch"):
        generate_batch(components, requests, steps=1, width=SIDE, height=SIDE, scheduler="euler")
    assert sd(tiny_model, prompt="a cat", guidance=7.5).batch_key() != sd(tiny_model, prompt="a dog", guidance=1.0).batch_key()
    assert sd(tiny_model, prompt="a cat", guidance=7.5).batch_key() == sd(tiny_model, prompt="a dog", guidance=2.0).batch_key()


def test_cancelling_one_job_mid_batch_ends_it_at_once_and_the_others_go_on(tmp_path, tiny_model, cache):
    # Given three compatible jobs, the middle one cancelled by its user after its second step of four
    specs = [sd(tiny_model, steps=4, prompt=f"a cat {i}", seed=i, num_images=1 + i % 2) for i in range(3)]
    contexts = [LocalContext(tmp_path / "batch", job_id="job-0", cache=cache),
                CancelAfter(tmp_path / "batch", job_id="job-1", cache=cache, steps=2),
                LocalContext(tmp_path / "batch", job_id="job-2", cache=cache)]

    # When they run as one batch
    ends, others_done_when_cancelled = [], None
    for index, end in job.run_batch(list(zip(specs, contexts))):
        ends.append((index, end))
        if index == 1:
            others_done_when_cancelled = [contexts[i].progress_state[0] for i in (0, 2)]

    # Then the cancel is yielded first, at step 2, while the others are still denoising
    assert [index for index, _ in ends] == [1, 0, 2]
    assert isinstance(ends[0][1], JobCancelled)
    assert max(others_done_when_cancelled) < 4
    assert contexts[1].steps_reported == 2  # its context was never called again
    assert not (tmp_path / "batch" / "job-1").exists()
    # And the others succeed with the images they make alone
    for i in (0, 2):
        assert isinstance(dict(ends)[i], dict) and dict(ends)[i]["batch"]["jobs"] == 3
        assert_same_pngs_as_alone(specs[i], tmp_path / "batch", tmp_path / "alone", f"job-{i}", cache)


def test_a_job_whose_preparation_fails_fails_alone(tmp_path, tiny_model, cache):
    # Given a batch where one job's context cannot write its log, and one job needs other steps
    specs = [sd(tiny_model, prompt="a cat", seed=1), sd(tiny_model, prompt="a dog", seed=2),
             sd(tiny_model, prompt="a horse", seed=3, steps=STEPS + 1), sd(tiny_model, prompt="a lake", seed=4)]
    contexts = [LocalContext(tmp_path / "batch", job_id="job-0", cache=cache),
                LostDatabase(tmp_path / "batch", job_id="job-1", cache=cache),
                LocalContext(tmp_path / "batch", job_id="job-2", cache=cache),
                LocalContext(tmp_path / "batch", job_id="job-3", cache=cache)]

    ends = list(job.run_batch(list(zip(specs, contexts))))

    # Then those two fail at once with their own errors, and the other two run as a batch of two
    assert [index for index, _ in ends[:2]] == [1, 2]
    assert isinstance(ends[0][1], ConnectionError)
    assert isinstance(ends[1][1], ValueError) and "cannot share the batch" in str(ends[1][1])
    results = dict(ends[2:])
    assert sorted(results) == [0, 3] and all(r["batch"] == {"jobs": 2, "images": 2} for r in results.values())
    assert ("info", "batched with 1 other sd job(s): 2 images in one UNet batch") in contexts[0].logs
    for i in (0, 3):
        assert_same_pngs_as_alone(specs[i], tmp_path / "batch", tmp_path / "alone", f"job-{i}", cache)


def test_a_job_whose_artifacts_fail_fails_alone(tmp_path, tiny_model, cache):
    specs = [sd(tiny_model, prompt="a cat", seed=1), sd(tiny_model, prompt="a dog", seed=2)]
    contexts = [FullDisk(tmp_path, job_id="job-0", cache=cache), LocalContext(tmp_path, job_id="job-1", cache=cache)]
    ends = dict(job.run_batch(list(zip(specs, contexts))))
    assert isinstance(ends[0], OSError) and isinstance(ends[1], dict)
    assert (tmp_path / "job-1" / "image-0.png").exists()


def test_a_model_that_fails_to_load_ends_every_job(tmp_path, tiny_model):
    # Given a model folder that breaks after the jobs were validated
    model = shutil.copytree(tiny_model, tmp_path / "model")
    specs = [sd(model, prompt="a cat"), sd(model, prompt="a dog")]
    os.remove(model / "model_index.json")
    contexts = [LocalContext(tmp_path, job_id=f"job-{i}") for i in range(2)]
    ends = list(job.run_batch(list(zip(specs, contexts))))
    assert [index for index, _ in ends] == [0, 1]
    assert all(isinstance(end, ModelLoadError) for _, end in ends)


def test_warm_then_run_reuses_the_model(tmp_path, tiny_model):
    cache = ModelCache(capacity=1)
    seconds, cached = job.warm(cache, str(tiny_model), "cpu")
    assert seconds > 0 and not cached
    assert job.warm(cache, str(tiny_model), "cpu") == (0.0, True)
    ctx = LocalContext(tmp_path, job_id="after-warm", cache=cache)
    result = job.run(sd(tiny_model, prompt="a cat", seed=1), ctx)
    assert (result["model_cache"], result["load_seconds"]) == ("hit", 0.0)
    assert ("info", f"reused cached model {tiny_model}") in ctx.logs
    assert cache.loads == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiling the UNet takes minutes on this CPU")
def test_compiled_unet_is_made_once_and_logs_each_new_shape(tmp_path, tiny_model):
    cache = ModelCache(capacity=1)
    device = "cuda"
    spec = sd(tiny_model, prompt="a cat", seed=1, num_images=2)
    first = LocalContext(tmp_path, job_id="first", device=device, cache=cache, compile_models=True)
    job.run(spec, first)
    compiled = [m for _, m in first.logs if m.startswith("compiled the UNet for 4x4x8x8 in ")]
    assert len(compiled) == 1, first.logs
    components, _ = cache.get_or_load(job.cache_key(str(tiny_model), device), lambda: None)
    module = components.compiled_unet
    assert module is not None
    again = LocalContext(tmp_path, job_id="again", device=device, cache=cache, compile_models=True)
    job.run(spec.replace(prompt="a dog"), again)
    assert not [m for _, m in again.logs if m.startswith("compiled the UNet")]  # same shape: already compiled
    assert components.compiled_unet is module
