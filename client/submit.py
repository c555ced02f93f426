"""`client submit KIND ...`: validate, store the job as queued, then send its id to the broker."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import click

from genq.client.render import echo_json, job_summary, status_line
from genq.client.runtime import Runtime, pass_runtime
from genq.client.waiting import wait_for
from genq.core.specs import MAX_SEED, InterpolateSpec, SampleVAESpec, SDSpec, Spec, SpecError, TrainVAESpec
from genq.core.store.states import JobStatus


def build_spec(cls, **params) -> Spec:
    try:
        return cls(**params)
    except SpecError as exc:
        raise click.UsageError(str(exc)) from exc


def with_seed(spec: Spec) -> Spec:
    """A job without a seed gets a random one now, so that the job records what it ran with."""
    if getattr(spec, "seed", 0) is None:
        return dataclasses.replace(spec, seed=random.randint(0, MAX_SEED))
    return spec


def resolve_after(rt: Runtime, ref: str | None, required_kind: str | None = None, option: str = "--after") -> str | None:
    if ref is None:
        return None
    try:
        job = rt.store.resolve(ref)
    except LookupError as exc:
        raise click.UsageError(f"{option}: {exc}") from exc
    if required_kind and job.kind != required_kind:
        raise click.UsageError(f"{option} {ref} is a {job.kind} job, not a {required_kind} job")
    return job.id


def enqueue(rt: Runtime, spec: Spec, after: str | None, wait: bool, as_json: bool, timeout: float | None) -> None:
    from genq.worker.dispatch import BrokerUnavailable, dispatch_if_ready

    store = rt.store
    job = store.create(spec, depends_on=after)
    try:
        dispatch_if_ready(rt.app, store, job)
    except BrokerUnavailable as exc:
        raise click.ClickException(f"job {job.id} failed: {exc}") from exc
    job = store.get(job.id)
    if wait:
        job = wait_for(store, job.id, timeout, show_progress=not as_json)
    if as_json:
        echo_json(job_summary(job))
    elif wait:
        click.echo(status_line(job))
    else:
        click.echo(job.id)
    if job.status == JobStatus.FAILED.value:
        if not wait:
            click.echo(f"error: {job.error}", err=True)
        raise SystemExit(1)
    if wait and job.status != JobStatus.SUCCEEDED.value:
        raise SystemExit(1)


def common_options(func):
    func = click.option("--timeout", type=float, default=None, help="With --wait: give up waiting after S seconds (exit 3).")(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")(func)
    func = click.option("--wait", is_flag=True, help="Wait for the job to finish; exit 0 only if it succeeded.")(func)
    func = click.option("--after", metavar="JOB", default=None,
                        help="Start only after JOB succeeded (fail if it fails), like Slurm's afterok.")(func)
    return func


@click.group()
def submit() -> None:
    """Submit a job. The job id is printed; `client wait ID` follows it."""


@submit.command("train-vae")
@click.option("--latent-dims", type=int, default=2, show_default=True, help="Size of the latent space.")
@click.option("--capacity", type=int, default=64, show_default=True, help="Channels c of the first conv layer (second has 2c).")
@click.option("--beta", type=float, default=1.0, show_default=True, help="Weight of the KL term.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--weight-decay", type=float, default=1e-5, show_default=True, help="Adam weight decay.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--train-limit", type=int, default=None, help="Train on the first N training images only.")
@click.option("--seed", type=int, default=None, help="RNG seed (random and recorded when omitted).")
@common_options
@pass_runtime
def train_vae(rt: Runtime, after, wait, as_json, timeout, **params) -> None:
    """Train the seed's convolutional VAE on MNIST (defaults: the seed's configuration)."""
    spec = with_seed(build_spec(TrainVAESpec, **params))
    enqueue(rt, spec, resolve_after(rt, after), wait, as_json, timeout)


@submit.command("interpolate")
@click.option("--model", "model_job", required=True, metavar="JOB", help="A train-vae job (waits for it if unfinished).")
@click.option("--from-index", type=int, default=None, help="Test-set index of image 1 (lambda = 1).")
@click.option("--to-index", type=int, default=None, help="Test-set index of image 2 (lambda = 0).")
@click.option("--from-digit", type=int, default=None, help="Image 1 is the first test image of this digit.")
@click.option("--to-digit", type=int, default=None, help="Image 2 is the first test image of this digit.")
@click.option("--steps", type=int, default=10, show_default=True, help="Number of frames K (lambda in linspace(0, 1, K)).")
@common_options
@pass_runtime
def interpolate(rt: Runtime, model_job, after, wait, as_json, timeout, **params) -> None:
    """Decode lambda*mu1 + (1-lambda)*mu2 between two test images of a trained VAE."""
    spec = build_spec(InterpolateSpec, model_job=model_job, **params)
    model_id = resolve_after(rt, model_job, "train-vae", "--model")
    spec = dataclasses.replace(spec, model_job=model_id)
    enqueue(rt, spec, model_after(rt, model_id, after), wait, as_json, timeout)


@submit.command("sample-vae")
@click.option("--model", "model_job", required=True, metavar="JOB", help="A train-vae job (waits for it if unfinished).")
@click.option("--count", type=int, default=64, show_default=True, help="Number of draws from N(0, I).")
@click.option("--seed", type=int, default=None, help="RNG seed (random and recorded when omitted).")
@common_options
@pass_runtime
def sample_vae(rt: Runtime, model_job, after, wait, as_json, timeout, **params) -> None:
    """Decode draws from the prior of a trained VAE (and its 2-D latent manifold)."""
    spec = build_spec(SampleVAESpec, model_job=model_job, **params)
    model_id = resolve_after(rt, model_job, "train-vae", "--model")
    spec = with_seed(dataclasses.replace(spec, model_job=model_id))
    enqueue(rt, spec, model_after(rt, model_id, after), wait, as_json, timeout)


def model_after(rt: Runtime, model_id: str, after: str | None) -> str:
    if after is not None and resolve_after(rt, after) != model_id:
        raise click.UsageError("--after must be the --model job for this kind (it already waits for it)")
    return model_id


@submit.command("sd")
@click.option("--prompt", required=True, help="What the picture shows.")
@click.option("--negative", default=None, help="What must not be in the picture (negative prompt).")
@click.option("--steps", type=int, default=30, show_default=True, help="Denoising steps (1-150).")
@click.option("--guidance", type=float, default=7.5, show_default=True, help="Classifier-free guidance scale.")
@click.option("--seed", type=int, default=None, help="Same seed, same image (random and recorded when omitted).")
@click.option("--width", type=int, default=512, show_default=True, help="Multiple of 8, 64-2048.")
@click.option("--height", type=int, default=512, show_default=True, help="Multiple of 8, 64-2048.")
@click.option("--num-images", type=int, default=1, show_default=True, help="Images for this prompt (1-16).")
@click.option("--scheduler", type=click.Choice(["dpm++", "ddim", "euler", "euler-a", "pndm"]), default="dpm++",
              show_default=True)
@click.option("--model", default=None, metavar="ID_OR_PATH",
              help="Diffusers folder, hub model id or single-file .safetensors (default: GENQ_SD_MODEL).")
@common_options
@pass_runtime
def sd(rt: Runtime, after, wait, as_json, timeout, model, **params) -> None:
    """Stable Diffusion text-to-image with an optional negative prompt."""
    model = model or rt.settings.sd_model
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise click.UsageError(f"--model {model}: no such file or folder")
        model = str(path.absolute())
    spec = with_seed(build_spec(SDSpec, model=model, **params))
    enqueue(rt, spec, resolve_after(rt, after), wait, as_json, timeout)


def looks_like_path(model: str) -> bool:
    """A hub id is `owner/name`; anything that starts like a path or names a file is a path."""
    return model.startswith((".", "/", "~")) or model.endswith(".safetensors") or Path(model).exists() or model.count("/") > 1
