"""Training the VAE on a small subset: learning, checkpoints, resume after a stop, cancellation."""
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genq.core.context import JobCancelled, LocalContext
from genq.core.kinds.train_vae import TrainVAE
from genq.core.vae import train
from genq.core.vae.data import default_data_root
from genq.core.vae.model import VAE, VAEConfig

DATA_ROOT = default_data_root(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.skipif(not (DATA_ROOT / "MNIST" / "raw").is_dir(), reason=f"no MNIST under {DATA_ROOT}")

SPEC = TrainVAE(latent_dims=2, capacity=16, epochs=2, train_limit=2048, seed=7)


class StopAfterEpoch(LocalContext):
    """Asks to cancel once epoch `stop_after` has reported its end (after its checkpoint); the progress
    within an epoch is reported per batch."""

    def __init__(self, *args, stop_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_after = stop_after

    def progress(self, done, total, message=""):
        super().progress(done, total, message)
        if message.startswith(f"epoch {self.stop_after}/") and "train loss" in message:
            self.cancel_requested = True


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Two OpenMP threads on a 2-core machine shared with other processes run these small steps
    several times slower than one; the results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def context(tmp_path, job_id, cls=LocalContext, **kwargs):
    return cls(tmp_path, job_id=job_id, data_root=DATA_ROOT, **kwargs)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    ctx = context(tmp_path_factory.mktemp("runs"), "full")
    return ctx, train.run(SPEC, ctx)


def test_result_metrics_and_artifacts(two_epochs):
    ctx, result = two_epochs
    assert result["epochs"] == 2 and result["train_images"] == 2048 and result["device"] == "cpu"
    assert result["seed"] == 7 and result["resumed_from_epoch"] == 0
    assert set(ctx.metrics) == {(1, "train_loss_per_image"), (1, "train_loss_per_batch"),
                                (2, "train_loss_per_image"), (2, "train_loss_per_batch"),
                                (2, "test_loss_per_image"), (2, "test_loss_per_batch")}
    # 2048 images in batches of 128 = 16 batches; the test set's 10,000 images = 79 batches
    assert ctx.metrics[(2, "train_loss_per_batch")] == pytest.approx(ctx.metrics[(2, "train_loss_per_image")] * 2048 / 16)
    assert result["test_loss_per_batch"] == pytest.approx(result["test_loss_per_image"] * 10_000 / 79)
    assert json.loads(json.dumps(result)) == result
    folder = ctx.root / "full"
    for name in ("model.safetensors", "config.json", "loss.png", "reconstructions.png", "checkpoint.safetensors", "checkpoint.json"):
        assert (folder / name).is_file(), name
    with Image.open(folder / "loss.png") as image:
        assert image.size == (720, 440)
    with Image.open(folder / "reconstructions.png") as image:
        assert image.height == 2 * 84 + 3 * 4 and image.width > 10 * 84
    checkpoint = ctx.artifact_json("checkpoint.json")
    assert checkpoint["epoch"] == 2 and [e["epoch"] for e in checkpoint["history"]] == [1, 2]
    # epoch 1's reconstructions were its preview (the last epoch's are an artifact)
    assert len(ctx.previews) == 1
    with Image.open(io.BytesIO(ctx.previews[0])) as preview, Image.open(folder / "reconstructions.png") as final:
        assert preview.size == final.size


def test_test_loss_is_lower_after_two_epochs_than_after_one(tmp_path, two_epochs):
    ctx, result = two_epochs
    one = train.run(TrainVAE(**{**SPEC.__dict__, "epochs": 1}), context(tmp_path, "one"))
    assert result["test_loss_per_image"] < one["test_loss_per_image"]


def test_a_stopped_job_resumes_and_equals_an_uninterrupted_run(tmp_path, two_epochs):
    full_ctx, full_result = two_epochs
    # Given a job stopped right after the checkpoint of epoch 1
    ctx = context(tmp_path, "resumed", StopAfterEpoch, stop_after=1)
    with pytest.raises(JobCancelled):
        train.run(SPEC, ctx)
    assert ctx.artifact_json("checkpoint.json")["epoch"] == 1
    assert ctx.existing_artifact("model.safetensors") is None
    # When it runs again with the same context
    ctx.stop_after, ctx.cancel_requested = None, False
    result = train.run(SPEC, ctx)
    # Then it continued at epoch 2, with one metric per (step, name), bit-for-bit as the uninterrupted run
    assert result["resumed_from_epoch"] == 1
    assert any("resuming from the checkpoint of epoch 1" in message for _, message in ctx.logs)
    assert ctx.metrics == full_ctx.metrics
    assert {k: v for k, v in result.items() if "seconds" not in k and k != "resumed_from_epoch"} == \
           {k: v for k, v in full_result.items() if "seconds" not in k and k != "resumed_from_epoch"}
    ours, theirs = load_file(str(tmp_path / "resumed" / "model.safetensors")), load_file(str(full_ctx.root / "full" / "model.safetensors"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_fresh_context_on_the_same_folder_gets_the_earlier_epochs_metrics(tmp_path):
    spec = TrainVAE(latent_dims=2, capacity=4, epochs=2, train_limit=256, seed=1)
    first = context(tmp_path, "job", StopAfterEpoch, stop_after=1)
    with pytest.raises(JobCancelled):
        train.run(spec, first)
    redelivered = context(tmp_path, "job")
    train.run(spec, redelivered)
    assert redelivered.metrics[(1, "train_loss_per_image")] == first.metrics[(1, "train_loss_per_image")]


def test_cancellation_raises_at_an_epoch_boundary(tmp_path):
    ctx = context(tmp_path, "cancelled")
    ctx.cancel_requested = True
    with pytest.raises(JobCancelled):
        train.run(TrainVAE(capacity=4, epochs=3, train_limit=256, seed=1), ctx)
    assert ctx.metrics == {} and ctx.existing_artifact("checkpoint.json") is None


def test_checkpoint_restores_model_optimizer_and_generator(tmp_path):
    images = torch.rand(300, 1, 28, 28)
    spec = TrainVAE(capacity=4, batch_size=64, seed=3)
    model, optimizer, generator = train.setup_training(spec, 3, torch.device("cpu"))
    trainer = train.Trainer(model, optimizer, images, spec.batch_size, spec.beta, generator)
    assert trainer.run_epoch().batches == 5  # 4 full batches of 64 and the tail of 44
    tensors, _ = train.checkpoint_files({"epoch": 1, "seed": 3}, model, optimizer, generator)
    (tmp_path / "ck.safetensors").write_bytes(tensors)
    after_one = trainer.run_epoch()

    model2, optimizer2, generator2 = train.setup_training(spec, 99, torch.device("cpu"))
    train.restore_checkpoint(tmp_path / "ck.safetensors", model2, optimizer2, generator2)
    again = train.Trainer(model2, optimizer2, images, spec.batch_size, spec.beta, generator2).run_epoch()
    assert again == after_one
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_evaluate_sums_in_order_batches_of_128():
    model = VAE(VAEConfig(latent_dims=2, capacity=4))
    images = torch.rand(300, 1, 28, 28)
    loss = train.evaluate(model, images, beta=1.0)
    assert loss.batches == 3 and loss.images == 300
    assert loss.per_batch == pytest.approx(loss.total / 3) and loss.per_image == pytest.approx(loss.total / 300)


def test_a_checkpoint_of_other_parameters_is_not_resumed(tmp_path):
    ctx = context(tmp_path, "job", StopAfterEpoch, stop_after=1)
    with pytest.raises(JobCancelled):
        train.run(TrainVAE(capacity=4, epochs=2, train_limit=256, seed=1), ctx)
    ctx.stop_after, ctx.cancel_requested = None, False
    result = train.run(TrainVAE(capacity=4, epochs=2, train_limit=256, seed=2), ctx)
    assert result["resumed_from_epoch"] == 0 and result["seed"] == 2
    assert any(level == "warning" and "other parameters" in message for level, message in ctx.logs)


def test_a_job_without_a_seed_picks_one_and_records_it(tmp_path):
    ctx = context(tmp_path, "seedless")
    result = train.run(TrainVAE(capacity=4, epochs=1, train_limit=128), ctx)
    assert isinstance(result["seed"], int)
    assert ctx.artifact_json("checkpoint.json")["seed"] == result["seed"]
    assert any(f"using seed {result['seed']}" in message for _, message in ctx.logs)
