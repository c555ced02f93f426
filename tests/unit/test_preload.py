"""GENQ_PRELOAD through the kind that declares a preload function (sd: a model), on the tiny model."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from genq.core.cache import ModelCache
from genq.core.config import load_settings
from genq.worker.child import preload
from genq.worker.supervisor import EXIT_CONFIG


def worker_with_cache(cache: ModelCache) -> SimpleNamespace:
    """What preload reads of a worker's Celery app: its runner's model cache."""
    return SimpleNamespace(genq_runner=SimpleNamespace(cache=cache))


def test_preload_loads_the_model_into_the_workers_cache(tiny_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = load_settings({"GENQ_HOME": str(tmp_path), "GENQ_PRELOAD": str(tiny_model), "GENQ_DEVICE": "cpu",
                              "GENQ_TORCH_THREADS": "1"})
    cache = ModelCache(1)
    with caplog.at_level("INFO", logger="genq.worker"):
        preload(worker_with_cache(cache), settings)
    assert len(cache) == 1
    assert f"preloaded {tiny_model.resolve()} in " in caplog.text


def test_preload_of_a_model_outside_the_allowed_roots_stops_the_worker_with_one_line(tiny_model, tmp_path, capsys):
    settings = load_settings({"GENQ_HOME": str(tmp_path), "GENQ_PRELOAD": str(tiny_model), "GENQ_DEVICE": "cpu",
                              "GENQ_MODEL_ROOTS": str(tmp_path / "elsewhere")})
    cache = ModelCache(1)
    with pytest.raises(SystemExit) as stopped:
        preload(worker_with_cache(cache), settings)
    assert stopped.value.code == EXIT_CONFIG and len(cache) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("genq-worker: GENQ_PRELOAD: ") and "GENQ_MODEL_ROOTS" in err and "\n" not in err
