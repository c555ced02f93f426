"""Train the seed's VAE on MNIST, resumably.

The whole training set is one tensor on the device. Each epoch draws, from one seeded generator on
that device, a permutation of the images and the reparameterisation noise for all of them, then
steps through the permutation in batches (the last partial batch included, as the seed's DataLoader
does). The summed loss stays on the device and is read once per epoch. On CUDA the full-batch train
step (forward, backward, Adam) is captured once in a CUDA graph and replayed; the tail batch runs
eagerly. After every epoch a checkpoint (model, optimizer, generator, metric history) replaces the
previous one, and a redelivered job continues from it.
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from genq.core.context import JobContext
from genq.core.kinds.train_vae import TrainVAE
from genq.core.vae.data import load_mnist
from genq.core.vae.pictures import RECONSTRUCTION_COUNT, loss_png, reconstructions_png
from genq.core.vae.loss import vae_loss
from genq.core.vae.model import VAE, VAEConfig, config_bytes, model_bytes

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
EVAL_BATCH_SIZE = 128
CUDA_GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (allocations, Adam state)


@dataclass(frozen=True)
class EpochLoss:
    total: float  # the summed loss over every image
    batches: int
    images: int

    @property
    def per_image(self) -> float:
        return self.total / self.images

    @property
    def per_batch(self) -> float:
        """The seed's "average reconstruction error": summed loss per batch, averaged over batches."""
        return self.total / self.batches


def make_optimizer(model: VAE, lr: float, weight_decay: float, capturable: bool = False) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, capturable=capturable)


def setup_training(spec: TrainVAE, seed: int, device: torch.device) -> tuple[VAE, torch.optim.Adam, torch.Generator]:
    """A freshly initialised model (the same weights on every device for one seed), its optimizer
    (capturable on CUDA, for the CUDA graph) and the generator that drives the data order and noise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VAE(VAEConfig(latent_dims=spec.latent_dims, capacity=spec.capacity))
    model = model.to(device)
    optimizer = make_optimizer(model, spec.lr, spec.weight_decay, capturable=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(seed)
    return model, optimizer, generator


class Trainer:
    """Runs epochs over resident images; `run_epoch` is what the benchmark times."""

    def __init__(self, model: VAE, optimizer: torch.optim.Optimizer, images: torch.Tensor, batch_size: int,
                 beta: float, generator: torch.Generator, cuda_graph: bool | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.images = images  # (N, 1, 28, 28) on the device
        self.batch_size = batch_size
        self.beta = beta
        self.generator = generator
        self.device = images.device
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        if self.cuda_graph:
            latent = model.config.latent_dims
            self.static_x = torch.empty((batch_size, *images.shape[1:]), device=self.device)  # (B, 1, 28, 28)
            self.static_eps = torch.empty((batch_size, latent), device=self.device)  # (B, latent)
            self.graph: torch.cuda.CUDAGraph | None = None
            self.warmup_left = CUDA_GRAPH_WARMUP_STEPS
            self.warmup_stream = torch.cuda.Stream(device=self.device)

    def batches_per_epoch(self) -> int:
        return -(-self.images.size(0) // self.batch_size)

    def run_epoch(self, after_batch: Callable[[int], None] | None = None) -> EpochLoss:
        """One pass over the images; `after_batch(batches done)` after each step (progress, and a cancel
        or time limit taking effect within a step: it may raise)."""
        self.model.train()
        n, latent = self.images.size(0), self.model.config.latent_dims
        order = torch.randperm(n, generator=self.generator, device=self.device)  # (N,)
        noise = torch.randn((n, latent), generator=self.generator, device=self.device)  # (N, latent)
        self.loss_sum.zero_()
        batches = 0
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            eps = noise[start:start + self.batch_size]
            if self.cuda_graph and index.numel() == self.batch_size:
                self._graph_step(index, eps)
            else:
                self._eager_step(self.images[index], eps)
            batches += 1
            if after_batch is not None:
                after_batch(batches)
        return EpochLoss(total=self.loss_sum.item(), batches=batches, images=n)

    def _train_step(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        recon, mu, logvar = self.model(x, eps)
        loss = vae_loss(recon, x, mu, logvar, self.beta)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach())

    def _eager_step(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._train_step(x, eps)

    def _graph_step(self, index: torch.Tensor, eps: torch.Tensor) -> None:
        torch.index_select(self.images, 0, index, out=self.static_x)
        self.static_eps.copy_(eps)
        if self.graph is None and self.warmup_left > 0:
            side = self.warmup_stream
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._eager_step(self.static_x, self.static_eps)
            torch.cuda.current_stream().wait_stream(side)
            self.warmup_left -= 1
            return
        if self.graph is None:
            # Grads set to None so that backward allocates them in the graph's private pool; replays
            # overwrite them in place. Capture records without running, so replay this batch after.
            self.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._train_step(self.static_x, self.static_eps)
        self.graph.replay()


@torch.inference_mode()
def evaluate(model: VAE, images: torch.Tensor, beta: float, batch_size: int = EVAL_BATCH_SIZE) -> EpochLoss:
    """The loss over `images` in order, in evaluation mode (z = mu), as the seed's test loop."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    batches = 0
    for start in range(0, images.size(0), batch_size):
        x = images[start:start + batch_size]
        recon, mu, logvar = model(x)
        total += vae_loss(recon, x, mu, logvar, beta)
        batches += 1
    return EpochLoss(total=total.item(), batches=batches, images=images.size(0))


# ---- checkpoints: tensors in safetensors, everything else as JSON (also kept in its metadata) ----

def checkpoint_files(meta: dict[str, Any], model: VAE, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator) -> tuple[bytes, bytes]:
    """(checkpoint.safetensors, checkpoint.json). The safetensors file alone is enough to resume:
    it carries the JSON in its metadata, so the two can never disagree about the epoch."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    scalars: dict[str, dict[str, Any]] = {}
    optimizer_state = optimizer.state_dict()
    for param_id, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    meta = dict(meta)
    meta["optimizer_scalars"] = scalars
    meta["optimizer_param_groups"] = [{k: v for k, v in g.items() if k != "params"} for g in optimizer_state["param_groups"]]
    meta["generator"] = {"device": generator.device.type, "state": base64.b64encode(generator.get_state().numpy().tobytes()).decode()}
    text = json.dumps(meta, indent=2)
    return save(tensors, metadata={"checkpoint": text}), text.encode()


def checkpoint_meta(path) -> dict[str, Any]:
    """The JSON part of a checkpoint.safetensors (epoch, seed, spec, history, ...)."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["checkpoint"])


def restore_checkpoint(path, model: VAE, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, Any]:
    """Load a checkpoint's model, optimizer and generator state in place; returns its JSON part."""
    meta = checkpoint_meta(path)
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, values in meta["optimizer_scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    # This run's param groups (same spec; capturable matches this device), the saved per-parameter state.
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    saved = meta["generator"]
    if saved["device"] == generator.device.type:
        generator.set_state(torch.frombuffer(bytearray(base64.b64decode(saved["state"])), dtype=torch.uint8))
    else:  # a generator's state does not carry across device types; stay reproducible per (seed, epoch)
        generator.manual_seed(meta["seed"] * 1000 + meta["epoch"])
        meta["generator_reseeded"] = True
    return meta


def _record_epoch(ctx: JobContext, entry: dict[str, Any]) -> None:
    ctx.metric(entry["epoch"], "train_loss_per_image", entry["train_loss_per_image"])
    ctx.metric(entry["epoch"], "train_loss_per_batch", entry["train_loss_per_batch"])


def run(spec: TrainVAE, ctx: JobContext) -> dict[str, Any]:
    started = time.perf_counter()
    device = torch.device(ctx.device)
    params = spec.to_json()
    train = load_mnist(ctx.data_root, train=True, device=device, limit=spec.train_limit)
    test = load_mnist(ctx.data_root, train=False, device=device)

    # A checkpoint of this job means an earlier attempt died (or was stopped): continue from it.
    checkpoint = ctx.existing_artifact(CHECKPOINT_TENSORS)
    saved = checkpoint_meta(checkpoint) if checkpoint is not None else None
    if saved is not None and saved.get("spec") != params:
        ctx.log("checkpoint.safetensors was written for other parameters; starting afresh", "warning")
        saved = None
    seed = saved["seed"] if saved is not None else spec.seed_or_random(ctx.log)
    model, optimizer, generator = setup_training(spec, seed, device)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    if saved is not None:
        saved = restore_checkpoint(checkpoint, model, optimizer, generator)
        history, train_seconds = saved["history"], saved["train_seconds"]
        for entry in history:  # a fresh store (or context) gets the earlier epochs too; same (step, name) replaces
            _record_epoch(ctx, entry)
        note = " (generator reseeded: the checkpoint came from another device type)" if saved.get("generator_reseeded") else ""
        ctx.log(f"resuming from the checkpoint of epoch {saved['epoch']} of {spec.epochs}{note}")
    start_epoch = len(history)

    trainer = Trainer(model, optimizer, train.images, spec.batch_size, spec.beta, generator)
    per_epoch = trainer.batches_per_epoch()
    total = per_epoch * spec.epochs
    for epoch in range(start_epoch + 1, spec.epochs + 1):
        ctx.check_cancelled()
        epoch_started = time.perf_counter()

        def after_batch(batch: int, epoch: int = epoch) -> None:
            ctx.check_cancelled()  # a cancel or time limit acts within a step (its store read is throttled)
            if batch < per_epoch:  # the epoch's end is reported with its loss, below
                ctx.progress((epoch - 1) * per_epoch + batch, total, f"epoch {epoch}/{spec.epochs}: batch {batch}/{per_epoch}")

        loss = trainer.run_epoch(after_batch)
        seconds = time.perf_counter() - epoch_started
        train_seconds += seconds
        entry = {"epoch": epoch, "train_loss_per_image": loss.per_image, "train_loss_per_batch": loss.per_batch}
        history.append(entry)
        _record_epoch(ctx, entry)
        meta = {"epoch": epoch, "seed": seed, "spec": params, "history": history, "train_seconds": train_seconds}
        tensors_file, json_file = checkpoint_files(meta, model, optimizer, generator)
        ctx.artifact(CHECKPOINT_TENSORS, tensors_file)
        ctx.artifact(CHECKPOINT_JSON, json_file)
        message = f"epoch {epoch}/{spec.epochs}: train loss {loss.per_image:.2f} per image ({seconds:.1f} s)"
        ctx.log(message)
        if epoch < spec.epochs:  # the last epoch's reconstructions are an artifact
            ctx.preview(reconstructions_png(model, test.images[:RECONSTRUCTION_COUNT]))
        ctx.progress(epoch * per_epoch, total, message)
    ctx.check_cancelled()

    test_loss = evaluate(model, test.images, spec.beta)
    ctx.metric(spec.epochs, "test_loss_per_image", test_loss.per_image)
    ctx.metric(spec.epochs, "test_loss_per_batch", test_loss.per_batch)
    ctx.artifact("model.safetensors", model_bytes(model))
    ctx.artifact("config.json", config_bytes(model.config))
    ctx.artifact("loss.png", loss_png([e["train_loss_per_image"] for e in history], test_loss.per_image))
    ctx.artifact("reconstructions.png", reconstructions_png(model, test.images[:RECONSTRUCTION_COUNT]))
    return {
        "epochs": spec.epochs,
        "train_images": len(train),
        "seed": seed,
        "device": str(device),
        "resumed_from_epoch": start_epoch,
        "seconds": round(time.perf_counter() - started, 3),
        "train_seconds": round(train_seconds, 3),
        "train_loss_per_image": history[-1]["train_loss_per_image"],
        "train_loss_per_batch": history[-1]["train_loss_per_batch"],
        "test_loss_per_image": test_loss.per_image,
        "test_loss_per_batch": test_loss.per_batch,
    }
