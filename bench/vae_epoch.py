"""One training epoch of the VAE: the seed's loop against the project's, same process, same device.

The seed's loop (the baseline) is written out here: torchvision MNIST with ToTensor, a shuffling
DataLoader of batch 128, `.item()` every step. The project's loop is `core.vae.train.Trainer`
(resident tensors, loss read once per epoch, a CUDA graph on CUDA). Same model, loss and Adam.
After a warm-up each loop runs --repeats epochs, interleaved; the medians are reported, and the last
line is `ratio: X.XX` (seed time / ours).

    python -m bench.vae_epoch [--device cpu|cuda] [--train-limit N] [--data-root PATH] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED_WARMUP_BATCHES = 5


def seed_loader(data_root: Path, limit: int | None, batch_size: int) -> torch.utils.data.DataLoader:
    import torch
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    dataset = MNIST(str(data_root), train=True, download=True, transform=ToTensor())
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(limit))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)


def seed_epoch(model, optimizer, loader, device, max_batches: int | None = None) -> float:
    """The seed's training loop, one epoch: returns its "average reconstruction error"."""
    from genq.core.vae.loss import vae_loss

    model.train()
    train_loss, num_batches = 0.0, 0
    for image_batch, _ in loader:
        image_batch = image_batch.to(device)
        recon, mu, logvar = model(image_batch)
        loss = vae_loss(recon, image_batch, mu, logvar)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        num_batches += 1
        if max_batches is not None and num_batches == max_batches:
            break
    return train_loss / num_batches


def timed(fn, device: torch.device) -> tuple[float, object]:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vae_epoch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images (default: all 60,000)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="MNIST's folder (default: $GENQ_DATA_ROOT, else the checkout's sibling shared/data)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each loop (median reported)")
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--latent-dims", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads for both loops (default: torch's)")
    args = parser.parse_args(argv)

    import torch  # after the arguments: --help needs neither torch nor genq's VAE

    from genq.core.kinds.train_vae import TrainVAE
    from genq.core.vae.data import default_data_root, load_mnist
    from genq.core.vae.train import Trainer, setup_training

    data_root = args.data_root or default_data_root(REPO)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = TrainVAE(latent_dims=args.latent_dims, capacity=args.capacity, train_limit=args.train_limit, seed=0)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, capacity {spec.capacity}, latent {spec.latent_dims}, batch {spec.batch_size}")

    seed_model, seed_optimizer, _ = setup_training(spec, 0, device)
    if device.type == "cuda":  # the seed's Adam is the plain one
        seed_optimizer = torch.optim.Adam(seed_model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    loader = seed_loader(data_root, spec.train_limit, spec.batch_size)
    model, optimizer, generator = setup_training(spec, 0, device)
    images = load_mnist(data_root, train=True, device=device, limit=spec.train_limit).images
    trainer = Trainer(model, optimizer, images, spec.batch_size, spec.beta, generator)
    print(f"{images.size(0)} training images, {len(loader)} batches per epoch")

    seed_epoch(seed_model, seed_optimizer, loader, device, max_batches=SEED_WARMUP_BATCHES)
    trainer.run_epoch()  # on CUDA this epoch also captures the graph

    seed_times, our_times = [], []
    for i in range(args.repeats):
        seconds, seed_loss = timed(lambda: seed_epoch(seed_model, seed_optimizer, loader, device), device)
        seed_times.append(seconds)
        seconds, ours = timed(trainer.run_epoch, device)
        our_times.append(seconds)
        print(f"repeat {i + 1}: seed loop {seed_times[-1]:.2f} s (loss/batch {seed_loss:,.1f}), "
              f"ours {our_times[-1]:.2f} s (loss/batch {ours.per_batch:,.1f})")
    seed_median, our_median = statistics.median(seed_times), statistics.median(our_times)
    print(f"seed loop: {seed_median:.3f} s per epoch (median of {args.repeats})")
    print(f"ours:      {our_median:.3f} s per epoch (median of {args.repeats})")
    print(f"ratio: {seed_median / our_median:.2f}")


if __name__ == "__main__":
    main()
