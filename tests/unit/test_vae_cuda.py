"""The CUDA path of VAE training: the CUDA-graph step must train like the eager step, and a job must
resume on the GPU. Skipped where there is no GPU; `bench/device_check.sh` runs it on a lent one."""
from pathlib import Path

import pytest
import torch

from genq.core.context import JobCancelled, LocalContext
from genq.core.kinds.train_vae import TrainVAE
from genq.core.vae import train
from genq.core.vae.data import default_data_root, load_mnist

DATA_ROOT = default_data_root(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# 1,100 images: 8 full batches of 128 (graph replays) and a tail of 76 (eager), every image seen
SPEC = TrainVAE(latent_dims=2, capacity=16, epochs=3, train_limit=1100, seed=11)


def epoch_losses(cuda_graph: bool) -> list[float]:
    device = torch.device("cuda")
    images = load_mnist(DATA_ROOT, train=True, device=device, limit=SPEC.train_limit).images
    model, optimizer, generator = train.setup_training(SPEC, SPEC.seed, device)
    trainer = train.Trainer(model, optimizer, images, SPEC.batch_size, SPEC.beta, generator, cuda_graph=cuda_graph)
    losses = []
    for _ in range(SPEC.epochs):
        loss = trainer.run_epoch()
        assert loss.images == SPEC.train_limit and loss.batches == 9
        losses.append(loss.per_image)
    return losses


def test_graph_step_trains_like_the_eager_step():
    eager, graph = epoch_losses(cuda_graph=False), epoch_losses(cuda_graph=True)
    assert graph == pytest.approx(eager, rel=1e-3)
    assert graph[-1] < graph[0]


class StopAfterFirstEpoch(LocalContext):
    def progress(self, done, total, message=""):
        super().progress(done, total, message)
        self.cancel_requested = done == 1


def test_training_resumes_on_the_gpu(tmp_path):
    expected = train.run(SPEC, LocalContext(tmp_path, job_id="whole", device="cuda", data_root=DATA_ROOT))
    with pytest.raises(JobCancelled):  # stopped after epoch 1, its checkpoint written
        train.run(SPEC, StopAfterFirstEpoch(tmp_path, job_id="split", device="cuda", data_root=DATA_ROOT))
    resumed = LocalContext(tmp_path, job_id="split", device="cuda", data_root=DATA_ROOT)
    result = train.run(SPEC, resumed)
    assert result["resumed_from_epoch"] == 1
    assert sorted(step for step, name in resumed.metrics if name == "train_loss_per_image") == [1, 2, 3]
    assert result["test_loss_per_image"] == pytest.approx(expected["test_loss_per_image"], rel=1e-3)
