"""Our SD generation against diffusers' StableDiffusionPipeline on the tiny random model (CPU, float32)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from genq.core.sd.generate import GenerationInputError, generate
from genq.core.sd.loading import load_components
from genq.core.sd.prompt import encode_prompt
from genq.core.sd.schedulers import SCHEDULERS, make_scheduler

STEPS = 4
SIDE = 64
TOLERANCE = 1e-4
LONG_PROMPT = " ".join(["a red cat on a blue lake"] * 20)  # 120 words: far over 77 tokens


@pytest.fixture(scope="session")
def components(tiny_model):
    return load_components(str(tiny_model), "cpu")


def diffusers_images(components, prompt, negative, num_images, scheduler, seed, guidance=7.5):
    pipe = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=make_scheduler(scheduler, components.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt, negative_prompt=negative, num_inference_steps=STEPS, guidance_scale=guidance, height=SIDE, width=SIDE,
        num_images_per_prompt=num_images, output_type="np",
        generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)],  # image i: seed + i
    ).images


def our_images(components, prompt, negative, num_images, scheduler, seed, guidance=7.5):
    return generate(
        components, prompt, negative, steps=STEPS, guidance=guidance, seed=seed, width=SIDE, height=SIDE,
        num_images=num_images, scheduler=scheduler,
    ).images


CASES = [
    ("a photo of a cat", None, 1),
    ("an astronaut riding a horse", "blurry, lowres", 3),
]
MORE_PROMPTS = [
    ("oil painting of a forest at night", "ugly", 1),
    ("a dog", "", 3),
    ("portrait of a red horse, high quality", None, 3),
]


def assert_matches_diffusers(components, prompt, negative, num_images, scheduler):
    # Given the same components, settings and seed, when both generate
    theirs = diffusers_images(components, prompt, negative, num_images, scheduler, seed=11)
    ours = our_images(components, prompt, negative, num_images, scheduler, seed=11)
    # Then the images agree
    assert ours.shape == theirs.shape == (num_images, SIDE, SIDE, 3)
    assert np.abs(ours - theirs).max() < TOLERANCE


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("prompt, negative, num_images", CASES)
def test_matches_diffusers_for_each_scheduler(components, scheduler, prompt, negative, num_images):
    assert_matches_diffusers(components, prompt, negative, num_images, scheduler)


@pytest.mark.parametrize("prompt, negative, num_images", MORE_PROMPTS)
def test_matches_diffusers_for_more_prompts(components, prompt, negative, num_images):
    assert_matches_diffusers(components, prompt, negative, num_images, "dpm++")


@pytest.mark.parametrize("guidance", [0.0, 1.0])
def test_matches_diffusers_without_guidance(components, guidance):
    theirs = diffusers_images(components, "a cat", "blurry", 2, "euler-a", seed=5, guidance=guidance)
    ours = our_images(components, "a cat", "blurry", 2, "euler-a", seed=5, guidance=guidance)
    assert np.abs(ours - theirs).max() < TOLERANCE


def test_images_are_not_trivial(components):
    # Guards the equivalence tests against a model whose images are constant or saturated.
    first = our_images(components, "a cat", None, 1, "dpm++", seed=1)
    assert 0.05 < first.std() and ((first > 0) & (first < 1)).mean() > 0.5
    assert np.abs(first - our_images(components, "a cat", None, 1, "dpm++", seed=2)).max() > 0.1
    assert np.abs(first - our_images(components, "a cat", "blurry", 1, "dpm++", seed=1)).max() > 1e-3


def test_same_seed_gives_identical_images(components):
    first = our_images(components, "a lake at sunset", "blurry", 2, "euler-a", seed=42)
    second = our_images(components, "a lake at sunset", "blurry", 2, "euler-a", seed=42)
    assert np.array_equal(first, second)


def test_encode_prompt_shapes_and_empty_negative(components):
    tokenizer, text_encoder = components.tokenizer, components.text_encoder
    positive, negative = encode_prompt(tokenizer, text_encoder, "a cat", None, 3, "cpu", 7.5)
    assert positive.shape == negative.shape == (3, 77, text_encoder.config.hidden_size)
    empty, _ = encode_prompt(tokenizer, text_encoder, "", None, 1, "cpu", 1.0)
    assert torch.allclose(negative[0], empty[0], atol=1e-6)
    assert torch.equal(positive[0], positive[2])
    _, none = encode_prompt(tokenizer, text_encoder, "a cat", "blurry", 2, "cpu", 1.0)
    assert none is None


def test_long_prompt_is_truncated_with_a_warning(components):
    result = generate(components, LONG_PROMPT, None, steps=2, width=SIDE, height=SIDE, seed=0)
    assert len(result.warnings) == 1
    assert "longer than the 77" in result.warnings[0] and "dropped" in result.warnings[0]
    # the images are those of the first 77 tokens
    ids = components.tokenizer(LONG_PROMPT, truncation=True, max_length=77).input_ids
    kept = components.tokenizer.decode(ids[1:-1])
    same = generate(components, kept, None, steps=2, width=SIDE, height=SIDE, seed=0)
    assert same.warnings == []
    assert np.abs(result.images - same.images).max() < TOLERANCE


def test_short_prompt_has_no_warning(components):
    assert generate(components, "a cat", "blurry", steps=1, width=SIDE, height=SIDE).warnings == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 60}, "width must be a multiple of 8 for this model"),
        ({"height": 36}, "height must be a multiple of 8 for this model"),
    ],
)
def test_check_inputs_errors(components, change, message):
    settings = dict(prompt="a cat", negative_prompt=None, steps=2, width=SIDE, height=SIDE)
    settings.update(change)
    with pytest.raises(GenerationInputError, match=message):
        generate(components, **settings)


def test_on_step_reports_every_step(components):
    seen = []
    generate(components, "a cat", steps=3, width=SIDE, height=SIDE, scheduler="euler", on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
