"""Loading SD models: the tiny model round trip, refused pickles, and fast, clear failures offline."""
from __future__ import annotations

import time

import pytest
import torch

from genq.core.sd.loading import ModelLoadError, load_components
from genq.core.sd.tiny import make_tiny_model

MISSING_ID = "genq-test/no-such-sd-model"


def test_tiny_model_loads_back(tiny_model):
    components = load_components(str(tiny_model), "cpu")
    assert components.dtype == torch.float32 and components.device == torch.device("cpu")
    assert components.vae_scale_factor == 8
    assert components.tokenizer.model_max_length == 77
    assert components.scheduler_config["_class_name"] == "PNDMScheduler"
    assert components.unet.config.cross_attention_dim == components.text_encoder.config.hidden_size
    assert not any(p.requires_grad for p in components.unet.parameters())


def test_tiny_model_is_deterministic_and_safetensors_only(tmp_path, tiny_model):
    again = make_tiny_model(tmp_path / "again")
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):
        assert (again / part).read_bytes() == (tiny_model / part).read_bytes()
    assert not [p for p in again.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pkl")]


def test_tokenizer_merges_words(tiny_model):
    tokenizer = load_components(str(tiny_model), "cpu").tokenizer
    assert tokenizer.tokenize("a photo of an astronaut") == ["a</w>", "photo</w>", "of</w>", "an</w>", "astronaut</w>"]
    assert len(tokenizer.tokenize("zebra")) == 5  # no merges: one token per byte


def test_missing_model_id_fails_fast_with_one_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that does not answer, on this machine
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as error:
        load_components(MISSING_ID, "cpu")
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert "\n" not in message and MISSING_ID in message and "local path" in message
    assert "Traceback" not in message


def test_missing_model_id_fails_fast_when_hub_offline_is_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="pass a local path"):
        load_components(MISSING_ID, "cpu")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_checkpoints_are_refused(tmp_path, suffix):
    checkpoint = tmp_path / f"model{suffix}"
    checkpoint.write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match="refusing to load .*pickles"):
        load_components(str(checkpoint), "cpu")


def test_missing_safetensors_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="no such checkpoint file"):
        load_components(str(tmp_path / "model.safetensors"), "cpu")


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not a diffusers-format model folder"):
        load_components(str(tmp_path), "cpu")
