"""The job kinds' declarations: defaults, bounds, one-line errors, JSON round trips, the model check."""
from __future__ import annotations

import json

import pytest

from genq.core.config import load_settings
from genq.core.kinds import BUILT_IN, KINDS, missing_kind_message, params_from_json
from genq.core.kinds.interpolate import Interpolate
from genq.core.kinds.sample_vae import SampleVAE
from genq.core.kinds.sd import SD
from genq.core.kinds.train_vae import TrainVAE
from genq.core.params import MAX_SEED, JobParams, SpecError, parse


def test_train_defaults_are_the_seed_configuration():
    spec = TrainVAE()
    assert (spec.latent_dims, spec.capacity, spec.beta, spec.lr, spec.batch_size, spec.epochs) == (2, 64, 1.0, 1e-3, 128, 30)


@pytest.mark.parametrize("params,message", [
    ({"epochs": 0}, "epochs"), ({"epochs": -1}, "epochs"), ({"latent_dims": 0}, "latent-dims"),
    ({"batch_size": 0}, "batch-size"), ({"epochs": "3"}, "integer"), ({"lr": 0}, "lr"),
    ({"train_limit": 0}, "train-limit"), ({"seed": -1}, "seed"), ({"beta": -0.5}, "beta"),
    ({"beta": float("inf")}, "finite"), ({"lr": float("nan")}, "finite"), ({"epochs": 1001}, "epochs"),
    ({"capacity": 10_000}, "capacity"), ({"train_limit": 60_001}, "train-limit"), ({"seed": MAX_SEED + 1}, "seed"),
    ({"epochs": True}, "integer"),
])
def test_train_refuses_bad_values(params, message):
    with pytest.raises(SpecError, match=message):
        parse(TrainVAE, params)


@pytest.mark.parametrize("params,message", [
    ({"steps": 1}, "steps"), ({"steps": 257}, "steps"), ({"from_index": 10_000, "to_index": 1}, "less than 10000"),
    ({"from_digit": 10, "to_digit": 1}, "from-digit"), ({"from_digit": 7}, "go together"),
    ({"from_digit": 7, "to_digit": 1, "from_index": 0, "to_index": 1}, "not both"), ({"model": ""}, "model"),
])
def test_interpolate_refuses_bad_values(params, message):
    with pytest.raises(SpecError, match=message):
        parse(Interpolate, {"model": "abc", **params})


@pytest.mark.parametrize("params,message", [
    ({"prompt": " "}, "blank"), ({"steps": 0}, "steps"), ({"steps": 151}, "steps"), ({"width": 500}, "multiple of 8"),
    ({"height": 2056}, "height"), ({"guidance": -1}, "guidance"), ({"num_images": 17}, "num-images"),
    ({"scheduler": "lms"}, "scheduler"), ({"guidance": float("inf")}, "finite"), ({"prompt": "x" * 2001}, "prompt"),
    ({"negative": "x" * 2001}, "negative"), ({"num_images": 16, "width": 1024, "height": 1024}, "GENQ_SD_MAX_PIXELS"),
    ({"num_images": 8, "width": 1024, "height": 1024, "steps": 60}, "GENQ_SD_MAX_PIXEL_STEPS"),
    # paths the file system refuses to look at are no model, not a crash (schemathesis found the first: a 500)
    ({"model": "0" * 1000}, "neither a hub model id"), ({"model": "~nosuchuser-genq/model"}, "no such model"),
    ({"model": "./" + "0" * 1000}, "no such model"),
])
def test_sd_refuses_bad_values(params, message):
    with pytest.raises(SpecError, match=message):
        parse(SD, {"prompt": "a red bicycle", **params})


def test_errors_are_one_line_and_name_the_parameter():
    with pytest.raises(SpecError) as caught:
        parse(SD, {"prompt": "p" * 5000})
    assert caught.value.field == "prompt" and "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_every_kind_round_trips_through_its_stored_json():
    for spec in (TrainVAE(seed=1), Interpolate(model="j", from_digit=7, to_digit=1), SampleVAE(model="j", seed=2),
                 SD(prompt="p", negative="n", seed=3, model="org/name")):
        stored = json.loads(json.dumps(spec.to_json()))
        assert params_from_json(spec.kind, stored) == spec


def test_with_seed_chooses_and_records_a_seed_once():
    spec = TrainVAE().with_seed()
    assert 0 <= spec.seed <= MAX_SEED and spec.with_seed() == spec
    assert Interpolate(model="j").with_seed() == Interpolate(model="j")  # no seed parameter: unchanged


def test_a_run_without_a_seed_picks_one_and_logs_it():
    logged = []
    seed = SampleVAE(model="j").seed_or_random(logged.append)
    assert 0 <= seed <= MAX_SEED and logged == [f"no seed given; using seed {seed}"]
    assert SampleVAE(model="j", seed=4).seed_or_random(logged.append) == 4 and len(logged) == 1


def test_unknown_parameters_and_kinds_are_refused():
    with pytest.raises(SpecError, match="unknown parameter"):
        params_from_json("train-vae", {"epochz": 3})
    with pytest.raises(SpecError) as caught:
        params_from_json("nope", {})
    assert str(caught.value) == "unknown job kind 'nope'; installed kinds: " + ", ".join(KINDS)
    assert missing_kind_message("echo") == f"job kind 'echo' is not installed on this worker (installed: {', '.join(KINDS)})"


def test_only_a_batching_kind_has_a_batch_budget():
    settings = load_settings({"GENQ_SD_MAX_BATCH": "6"})
    assert SD.batch_budget(settings) == 6
    assert [KINDS[kind].batch_budget(settings) for kind in ("train-vae", "interpolate", "sample-vae")] == [1, 1, 1]


def test_every_kind_declares_its_picture_and_importable_report_figures():
    from genq.core.kinds import report_figure

    assert {cls.kind: cls.main_picture for cls in BUILT_IN} == {
        "train-vae": "reconstructions.png", "interpolate": "interpolation.png", "sample-vae": "samples.png",
        "sd": "image-0.png"}
    for kind, cls in KINDS.items():
        for name in cls.report_figures:
            assert callable(report_figure(kind, name))


def test_every_kind_names_an_importable_run_function():
    from genq.core.kinds import run_function

    for kind in KINDS:
        assert callable(run_function(kind))


@pytest.mark.parametrize("model", ["/etc", "../../etc/passwd", "no/such/folder", "not a model", "org/../name", "~/nothing.safetensors"])
def test_sd_model_must_be_a_hub_id_or_a_real_model(model):
    with pytest.raises(SpecError, match="model"):
        parse(SD, {"prompt": "p", "model": model})


def test_sd_model_paths_are_made_real_and_absolute(tmp_path, monkeypatch):
    folder = tmp_path / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.chdir(tmp_path)
    assert parse(SD, {"prompt": "p", "model": "link"}).model == str(folder)
    assert parse(SD, {"prompt": "p", "model": "org/name"}).model == "org/name"
    assert parse(SD, {"prompt": "p"}).model == load_settings().sd_model


def test_sd_model_roots_confine_local_paths(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    for folder in (allowed / "m", other / "m"):
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
    (allowed / "escape").symlink_to(other / "m")
    settings = load_settings({"GENQ_MODEL_ROOTS": str(allowed)})
    assert parse(SD, {"prompt": "p", "model": str(allowed / "m")}, settings).model == str(allowed / "m")
    for outside in (other / "m", allowed / "escape"):
        with pytest.raises(SpecError, match="GENQ_MODEL_ROOTS"):
            parse(SD, {"prompt": "p", "model": str(outside)}, settings)
    assert parse(SD, {"prompt": "p", "model": "org/name"}, settings).model == "org/name"


def test_settings_defaults_live_under_genq_home(tmp_path):
    settings = load_settings({"GENQ_HOME": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'genq.sqlite3'}"
    assert settings.artifact_root == tmp_path / "artifacts" and settings.data_root == tmp_path / "data"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"


def test_settings_refuse_a_non_number():
    with pytest.raises(ValueError, match="GENQ_HEARTBEAT_INTERVAL"):
        load_settings({"GENQ_HEARTBEAT_INTERVAL": "soon"})


class Note(JobParams):
    """A kind declared outside genq, as a plugin declares one."""

    kind = "note"
    run_function = "genq_note:run"
    text: str
    tag: str | None = None


NUL = "must not contain the NUL character (U+0000)"
SURROGATE = "must not contain a lone surrogate (U+DCFF): it is not valid Unicode text"


@pytest.mark.parametrize("cls, params, message", [
    (SD, {"prompt": "a \x00 cat"}, f"prompt: {NUL}"),
    (SD, {"prompt": "a \udcff cat"}, f"prompt: {SURROGATE}"),
    (SD, {"prompt": "a cat", "negative": "\x00"}, f"negative: {NUL}"),
    (SD, {"prompt": "a cat", "model": "org/na\x00me"}, f"model: {NUL}"),
    (Interpolate, {"model": "abcd\x00"}, f"model: {NUL}"),
    (SampleVAE, {"model": "\udcff"}, f"model: {SURROGATE}"),
    (Note, {"text": "hi\x00"}, f"text: {NUL}"),
    (Note, {"text": "hi", "tag": "\udcff"}, f"tag: {SURROGATE}"),
])
def test_text_no_store_can_keep_is_refused_in_every_text_field_of_every_kind(cls, params, message):
    with pytest.raises(SpecError) as caught:
        parse(cls, params)
    assert str(caught.value) == message


def test_the_run_options_and_the_group_name_refuse_it_through_the_python_api(tmp_path):
    from genq.api import Client

    client = Client(load_settings({"GENQ_HOME": str(tmp_path)}))  # refused before the store is opened
    for call, message in [
        (lambda: client.submit("train-vae", idempotency_key="nightly\x00"), f"idempotency-key: {NUL}"),
        (lambda: client.submit("train-vae", after="\udcff"), f"after: {SURROGATE}"),
        (lambda: client.submit("train-vae", queue="gpu\x00"), "queue: queue 'gpu\\x00' must be 1-64 letters"),
        (lambda: client.sweep("train-vae", epochs=[1, 2], name="betas\x00"), f"group-name: {NUL}"),
        (lambda: client.sweep("train-vae", epochs=[1, 2], name="g" * 201), "group-name: must be at most 200 characters"),
        (lambda: client.sweep("sd", prompt=["a cat", "a \x00 dog"]), f"sweep point prompt=a \x00 dog: prompt: {NUL}"),
    ]:
        with pytest.raises(SpecError) as caught:
            call()
        assert str(caught.value).startswith(message)
    assert not (tmp_path / "genq.sqlite3").exists()


@pytest.mark.parametrize("env, says", [
    ({"GENQ_RETRY_FOR": "nan"}, "GENQ_RETRY_FOR: must be a finite number of seconds >= 0 and at most 31,622,400, got 'nan'"),
    ({"GENQ_LEASE": "inf"}, "GENQ_LEASE: must be a finite number of seconds > 0 and at most 31,622,400, got 'inf'"),
    ({"GENQ_LEASE": "0"}, "GENQ_LEASE: must be a finite number of seconds > 0"),
    ({"GENQ_STALE_AFTER": "-5"}, "GENQ_STALE_AFTER: must be a finite number of seconds > 0"),
    ({"GENQ_HEARTBEAT_INTERVAL": "0"}, "GENQ_HEARTBEAT_INTERVAL: must be a finite number of seconds > 0 and below "
                                       "GENQ_LEASE (30), got '0'"),
    ({"GENQ_HEARTBEAT_INTERVAL": "30"}, "GENQ_HEARTBEAT_INTERVAL: must be a finite number of seconds > 0 and below "
                                        "GENQ_LEASE (30), got '30'"),
    ({"GENQ_LEASE": "1"}, "GENQ_HEARTBEAT_INTERVAL: must be a finite number of seconds > 0 and below GENQ_LEASE (1), "
                          "got 2 (its default)"),
    ({"GENQ_RECONCILE_INTERVAL": "0"}, "GENQ_RECONCILE_INTERVAL: must be a finite number of seconds > 0"),
    ({"GENQ_RESEND_AFTER": "-1"}, "GENQ_RESEND_AFTER: must be"),
    ({"GENQ_RETRY_BACKOFF": "1e400"}, "GENQ_RETRY_BACKOFF: must be"),
    ({"GENQ_VISIBILITY_TIMEOUT": "0"}, "GENQ_VISIBILITY_TIMEOUT: must be an integer from 1 to 31,622,400, got '0'"),
    ({"GENQ_MAX_ATTEMPTS": "0"}, "GENQ_MAX_ATTEMPTS: must be an integer from 1 to 1,000, got '0'"),
    ({"GENQ_MAX_ATTEMPTS": "2.5"}, "GENQ_MAX_ATTEMPTS: must be an integer"),
    ({"GENQ_MODEL_CACHE_SIZE": "0"}, "GENQ_MODEL_CACHE_SIZE: must be an integer from 1"),
    ({"GENQ_TORCH_THREADS": "-1"}, "GENQ_TORCH_THREADS: must be an integer from 0"),
    ({"GENQ_SD_MAX_PIXELS": "0"}, "GENQ_SD_MAX_PIXELS: must be an integer from 1"),
    ({"GENQ_SD_MAX_PIXEL_STEPS": "nan"}, "GENQ_SD_MAX_PIXEL_STEPS: must be an integer"),
    ({"GENQ_SD_MAX_BATCH": "0"}, "GENQ_SD_MAX_BATCH: must be an integer from 1 to 1,024"),
    ({"GENQ_MAX_SWEEP": "0"}, "GENQ_MAX_SWEEP: must be an integer from 1 to 1,000,000"),
    ({"GENQ_MAX_SWEEP": "1000001"}, "GENQ_MAX_SWEEP: must be an integer from 1 to 1,000,000"),
])
def test_every_numeric_setting_is_checked_at_load_in_one_line_naming_it(env, says):
    with pytest.raises(ValueError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)


def test_numeric_settings_in_range_are_taken_as_given():
    settings = load_settings({"GENQ_LEASE": "1.5", "GENQ_HEARTBEAT_INTERVAL": "0.5", "GENQ_RETRY_FOR": "0",
                              "GENQ_RETRY_BACKOFF": "0", "GENQ_TORCH_THREADS": "0", "GENQ_MAX_SWEEP": "1000000",
                              "GENQ_VISIBILITY_TIMEOUT": " 60 "})
    assert (settings.lease_s, settings.heartbeat_interval_s, settings.retry_for_s, settings.retry_backoff_s) == (1.5, 0.5, 0, 0)
    assert (settings.torch_threads, settings.max_sweep, settings.visibility_timeout_s) == (0, 1_000_000, 60)
    assert load_settings({"GENQ_STALE_AFTER": "6"}).lease_s == 6.0  # the lease's earlier name
