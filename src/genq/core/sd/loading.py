"""Load the parts of a Stable Diffusion model: a diffusers folder, a hub model id, or one .safetensors file.

Weights are read from safetensors only: pickle-based checkpoints (.ckpt, .pt, .bin) can run code
when loaded and are refused. SDPA attention everywhere; on CUDA float16 weights and a channels-last
UNet, float32 on the CPU. `compiled_unet` gives the UNet's torch.compile'd form, made once per loaded
model and kept with it.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import huggingface_hub
import huggingface_hub.constants
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from transformers import CLIPTextModel, CLIPTokenizer

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
HUB_CONNECT_TIMEOUT_S = 3.0
# The files a diffusers-format SD repository needs (not its 4 GB single-file copies, fp16 or EMA variants).
SD_REPO_FILES = [
    "model_index.json", "scheduler/scheduler_config.json", "tokenizer/*",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded; the message is one line meant for the user."""


@dataclass
class Components:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict[str, Any]
    dtype: torch.dtype
    device: torch.device
    compiled_unet: torch.nn.Module | None = None  # made by compiled_unet() on first use, then kept
    compiled_shapes: set[tuple[int, ...]] = field(default_factory=set)  # UNet input shapes it was called with

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def dtype_for(device: str | torch.device) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def load_components(model: str, device: str) -> Components:
    """Load `model` (folder, hub id or .safetensors file) onto `device` ("cpu" or "cuda")."""
    if not model:
        raise ModelLoadError("no Stable Diffusion model given; set GENQ_SD_MODEL or pass --model")
    device_ = torch.device(device)
    dtype = dtype_for(device_)
    path = Path(model).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"refusing to load {model}: {path.suffix} checkpoints are pickles, which can run code when loaded; "
            "convert it to .safetensors or use a diffusers-format folder"
        )
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise ModelLoadError(f"no such checkpoint file: {model}")
        components = _from_single_file(path, dtype)
    elif path.is_dir():
        components = _from_folder(path, dtype)
    elif path.exists():
        raise ModelLoadError(f"{model} is neither a diffusers-format folder nor a .safetensors checkpoint")
    else:
        components = _from_folder(_hub_snapshot(model), dtype)
    return prepare(components, device_)


def _from_folder(folder: Path, dtype: torch.dtype) -> Components:
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(f"{folder} is not a diffusers-format model folder (no model_index.json)")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", use_safetensors=True, dtype=dtype, attn_implementation="sdpa"
        )
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True, torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True, torch_dtype=dtype)
        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the model in {folder}: {_first_line(error)}") from None
    return Components(tokenizer, text_encoder, unet, vae, scheduler_config, dtype, torch.device("cpu"))


def _from_single_file(path: Path, dtype: torch.dtype) -> Components:
    # The checkpoint holds weights only; diffusers takes the matching configs from the hub (or its cache).
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), torch_dtype=dtype, local_files_only=not _hub_reachable(),
            safety_checker=None, requires_safety_checker=False,
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the checkpoint {path}: {_first_line(error)}") from None
    return Components(
        pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae, dict(pipe.scheduler.config), dtype, torch.device("cpu")
    )


def _hub_snapshot(model_id: str) -> Path:
    """The local folder of a hub model: the cached copy, else a download when the hub can be reached."""
    try:
        return Path(huggingface_hub.snapshot_download(model_id, allow_patterns=SD_REPO_FILES, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or not even a valid repo id (HFValidationError)
        pass
    if not _hub_reachable():
        raise ModelLoadError(
            f"model {model_id!r} is not a local folder or file and is not in the Hugging Face cache, "
            "and the hub cannot be reached; pass a local path (a diffusers-format folder or a .safetensors file)"
        )
    try:
        return Path(huggingface_hub.snapshot_download(model_id, allow_patterns=SD_REPO_FILES))
    except Exception as error:  # hub errors come in many classes; the user needs one line either way
        raise ModelLoadError(
            f"could not download model {model_id!r} from the hub ({type(error).__name__}: {_first_line(error)}); "
            "check the id or pass a local path"
        ) from None


def _hub_reachable() -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host does not answer quickly (no retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE") or huggingface_hub.is_offline_mode():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or huggingface_hub.constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=HUB_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def prepare(components: Components, device: torch.device) -> Components:
    """Move the modules to `device` for inference (eval, no grad, SDPA) and cap the tokenizer length."""
    tokenizer = components.tokenizer
    max_positions = components.text_encoder.config.max_position_embeddings
    if tokenizer.model_max_length > max_positions:  # a tokenizer saved without its length (transformers 5 needs it)
        tokenizer.model_max_length = max_positions
    for module in (components.text_encoder, components.unet, components.vae):
        module.to(device).eval().requires_grad_(False)
    components.unet.set_attn_processor(AttnProcessor2_0())
    components.vae.set_attn_processor(AttnProcessor2_0())
    if device.type == "cuda":
        components.unet.to(memory_format=torch.channels_last)  # faster convolutions with fp16 on tensor cores
    components.device = device
    return components


def compiled_unet(components: Components) -> torch.nn.Module:
    """The UNet's `torch.compile`d form, made once per loaded model and kept in `components` (so in the
    worker's model cache): later batches reuse it, and torch recompiles by itself for a new input shape."""
    if components.compiled_unet is None:
        components.compiled_unet = torch.compile(components.unet)
    return components.compiled_unet


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
