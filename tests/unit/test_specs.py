from __future__ import annotations

import pytest

from genq.core.config import load_settings
from genq.core.specs import InterpolateSpec, SampleVAESpec, SDSpec, SpecError, TrainVAESpec, spec_from_params, to_params


def test_train_defaults_are_the_seed_configuration():
    spec = TrainVAESpec()
    assert (spec.latent_dims, spec.capacity, spec.beta, spec.lr, spec.batch_size, spec.epochs) == (2, 64, 1.0, 1e-3, 128, 30)


@pytest.mark.parametrize("params,message", [
    ({"epochs": 0}, "epochs"), ({"epochs": -1}, "epochs"), ({"latent_dims": 0}, "latent-dims"),
    ({"batch_size": 0}, "batch-size"), ({"epochs": "3"}, "integer"), ({"lr": 0}, "lr"),
    ({"train_limit": 0}, "train-limit"), ({"seed": -1}, "seed"), ({"beta": -0.5}, "beta"),
])
def test_train_spec_refuses_bad_values(params, message):
    with pytest.raises(SpecError, match=message):
        TrainVAESpec(**params)


@pytest.mark.parametrize("params,message", [
    ({"steps": 1}, "steps"), ({"from_index": 10_000, "to_index": 1}, "test set"),
    ({"from_digit": 10, "to_digit": 1}, "digit"), ({"from_digit": 7}, "go together"),
    ({"from_digit": 7, "to_digit": 1, "from_index": 0, "to_index": 1}, "not both"), ({"model_job": ""}, "--model"),
])
def test_interpolate_spec_refuses_bad_values(params, message):
    with pytest.raises(SpecError, match=message):
        InterpolateSpec(**{"model_job": "abc", **params})


@pytest.mark.parametrize("params,message", [
    ({"prompt": " "}, "prompt"), ({"steps": 0}, "steps"), ({"steps": 151}, "steps"), ({"width": 500}, "multiple of 8"),
    ({"height": 2056}, "height"), ({"guidance": -1}, "guidance"), ({"num_images": 17}, "num-images"),
    ({"scheduler": "lms"}, "scheduler"),
])
def test_sd_spec_refuses_bad_values(params, message):
    with pytest.raises(SpecError, match=message):
        SDSpec(**{"prompt": "a red bicycle", **params})


def test_specs_round_trip_through_json_params():
    for spec in (TrainVAESpec(seed=1), InterpolateSpec(model_job="j", from_digit=7, to_digit=1),
                 SampleVAESpec(model_job="j", seed=2), SDSpec(prompt="p", negative="n", seed=3)):
        assert spec_from_params(spec.kind, to_params(spec)) == spec


def test_unknown_parameters_and_kinds_are_refused():
    with pytest.raises(SpecError, match="unknown parameter"):
        spec_from_params("train-vae", {"epochz": 3})
    with pytest.raises(SpecError, match="unknown job kind"):
        spec_from_params("nope", {})


def test_settings_defaults_live_under_genq_home(tmp_path):
    settings = load_settings({"GENQ_HOME": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'genq.sqlite3'}"
    assert settings.artifact_root == tmp_path / "artifacts" and settings.data_root == tmp_path / "data"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"


def test_settings_refuse_a_non_number():
    with pytest.raises(ValueError, match="GENQ_HEARTBEAT_INTERVAL"):
        load_settings({"GENQ_HEARTBEAT_INTERVAL": "soon"})
