"""A tiny, randomly initialised Stable Diffusion model in diffusers format, for tests and benchmarks.

It has SD-1.5's architecture and file layout at toy sizes: 64x64 images <-> 8x8x4 latents (the VAE
downsamples 8x like the real one), a 2-block UNet, a 2-layer CLIP text encoder and a CLIP BPE
tokenizer over a generated vocabulary. Weights come from a fixed torch seed, so two calls write the
same model. Its images are noise.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_SEED = 0
MAX_TOKENS = 77
TEXT_DIM = 32
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words whose spellings become BPE merges, so that the tokenizer really merges ("photo" is one token).
MERGE_WORDS = (
    "a", "an", "the", "of", "in", "on", "with", "and", "photo", "painting", "portrait", "cat", "dog",
    "astronaut", "horse", "riding", "city", "night", "forest", "blurry", "lowres", "ugly", "high",
    "quality", "detailed", "red", "blue", "green", "sunset", "mountain", "lake", "oil", "style",
)

# SD-1.5's scheduler configuration (PNDM, scaled-linear betas).
SD15_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False,
)


def byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable unicode character per byte value, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) laid out like CLIP's: bytes, bytes + </w>, merged tokens, then the two specials."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    known = set(tokens)
    for word in MERGE_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        merged = parts[0]
        for part in parts[1:]:
            pair, merged = (merged, part), merged + part
            if merged not in known:
                merges.append(pair)
                tokens.append(merged)
                known.add(merged)
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def make_tokenizer() -> CLIPTokenizer:
    vocab, merges = tiny_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def make_text_encoder(vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_DIM,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )
    return CLIPTextModel(config)


def make_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
    )


def make_vae() -> AutoencoderKL:
    # Four blocks: three 2x downsamples, the same 8x scale factor as SD's VAE.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8, sample_size=64,
    )


@contextmanager
def quiet_libraries():
    """No progress bars ("Writing model shards") and no info or warning lines from transformers, diffusers
    and huggingface_hub inside the block; their settings are as before afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    libraries = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled())
                 for lib in (transformers_logging, diffusers_logging)]
    hub_bars = not are_progress_bars_disabled()
    for lib, _, _ in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()  # transformers' also turns huggingface_hub's off
    try:
        yield
    finally:
        for lib, verbosity, bars in libraries:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
        if hub_bars != (not are_progress_bars_disabled()):
            (enable_progress_bars if hub_bars else disable_progress_bars)()


def make_tiny_model(path: Path) -> Path:
    """Write a tiny random SD model (diffusers folder layout, safetensors weights) to `path`; return it."""
    path = Path(path)
    torch.manual_seed(TINY_SEED)
    tokenizer = make_tokenizer()
    text_encoder = make_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    unet, vae = make_unet(), make_vae()

    with quiet_libraries():
        tokenizer.save_pretrained(path / "tokenizer")
        text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
        unet.save_pretrained(path / "unet", safe_serialization=True)
        vae.save_pretrained(path / "vae", safe_serialization=True)
    # Written by hand: SD-1.5's file also carries keys PNDM ignores but DDIM reads (clip_sample).
    scheduler_config = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.42.1", **SD15_SCHEDULER}
    (path / "scheduler").mkdir(parents=True, exist_ok=True)
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2) + "\n")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    return path
