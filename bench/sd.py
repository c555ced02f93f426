"""Our SD generation against diffusers' StableDiffusionPipeline, same components, same process.

    python -m bench.sd [--device cpu|cuda] [--size full|tiny] [--steps 30] [--repeats 3]

full: SD-1.5's architecture (UNet 320/640/1280/1280, cross-attention 768, VAE 128/256/512/512,
CLIP ViT-L/14 text encoder) with random weights, fp16 + SDPA on CUDA, 512x512: the same arithmetic
as the real model. tiny: the test model from core.sd.tiny at 64x64 (for the CPU).
Both sides get the same prompt, negative prompt, scheduler and seed, and return float arrays.
Prints seconds per image and the ratio diffusers/ours (above 1: ours is faster) for 1 and 8
images per call; the last line is the smallest ratio over those cases.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

PROMPT = "a photo of an astronaut riding a horse on the moon, high quality, detailed"
NEGATIVE = "blurry, lowres, ugly"
BATCH_SIZES = (1, 8)
SIDE = {"full": 512, "tiny": 64}


def full_size_components(device: torch.device) -> Components:
    """SD-1.5-sized modules with random weights, built directly on `device` in its dtype."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from genq.core.sd.loading import Components, dtype_for, prepare
    from genq.core.sd.tiny import SD15_SCHEDULER, make_tokenizer

    dtype = dtype_for(device)
    tokenizer = make_tokenizer()  # any CLIP BPE tokenizer: its ids stay below the text encoder's vocabulary
    text_config = CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        attn_implementation="sdpa",
    )
    with device:
        text_encoder = CLIPTextModel(text_config)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=512, scaling_factor=0.18215,
        )
    for module in (text_encoder, unet, vae):
        module.to(dtype=dtype)
    scheduler_config = {"_class_name": "PNDMScheduler", **SD15_SCHEDULER}
    return prepare(Components(tokenizer, text_encoder, unet, vae, scheduler_config, dtype, device), device)


def seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def median_seconds(first, second, repeats: int) -> tuple[float, float]:
    """Medians of `repeats` timings of each, interleaved so that drift in machine load hits both."""
    times = [(seconds(first), seconds(second)) for _ in range(repeats)]
    return statistics.median(t for t, _ in times), statistics.median(t for _, t in times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sd", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"),
                        help="default: cuda when there is one, else cpu")
    parser.add_argument("--size", default=None, choices=("full", "tiny"), help="default: full on cuda, tiny on cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scheduler", default="dpm++")
    args = parser.parse_args(argv)

    import numpy as np  # after the arguments: --help needs neither torch nor diffusers
    import torch
    from diffusers import StableDiffusionPipeline

    from genq.core.sd.generate import generate
    from genq.core.sd.loading import load_components
    from genq.core.sd.schedulers import make_scheduler
    from genq.core.sd.tiny import make_tiny_model

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("full" if args.device == "cuda" else "tiny")
    device = torch.device(args.device)
    side = SIDE[size]

    with tempfile.TemporaryDirectory() as tmp:
        if size == "tiny":
            components = load_components(str(make_tiny_model(Path(tmp) / "tiny-sd")), args.device)
        else:
            components = full_size_components(device)
    pipe = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer, unet=components.unet,
        scheduler=make_scheduler(args.scheduler, components.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}  size: {size} ({side}x{side})  dtype: {components.dtype}  steps: {args.steps}  "
          f"scheduler: {args.scheduler}  repeats: {args.repeats} (median)")

    def theirs(n: int) -> np.ndarray:
        return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=args.steps, height=side, width=side,
                    num_images_per_prompt=n, output_type="np",
                    generator=[torch.Generator("cpu").manual_seed(i) for i in range(n)]).images  # image i: seed 0 + i

    def ours(n: int) -> np.ndarray:
        return generate(components, PROMPT, NEGATIVE, steps=args.steps, height=side, width=side, num_images=n,
                        seed=0, scheduler=args.scheduler).images

    ratios = []
    for n in BATCH_SIZES:
        difference = float(np.abs(theirs(n) - ours(n)).max())  # also the warm-up
        t_theirs, t_ours = median_seconds(lambda: theirs(n), lambda: ours(n), args.repeats)
        ratios.append(t_theirs / t_ours)
        print(f"{n} image(s)/call: diffusers {t_theirs / n:.4f} s/image, ours {t_ours / n:.4f} s/image, "
              f"ratio {ratios[-1]:.2f}, max |difference| {difference:.2e}")
    print(f"ratio over {', '.join(map(str, BATCH_SIZES))} image(s)/call: min {min(ratios):.2f}, 1 image {ratios[0]:.2f}")
    print(f"ratio: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
