"""`genq-worker`: one worker process per GPU (or N on the CPU), started, watched and stopped together.

- Plan: which workers to run (`plan`). GPUs are counted without touching CUDA: an existing
  CUDA_VISIBLE_DEVICES list, else `nvidia-smi -L`, else /proc/driver/nvidia/gpus. Each worker is
  one child process `python -m genq.worker.child` with its own environment: CUDA_VISIBLE_DEVICES=i
  and GENQ_DEVICE=cuda (or cpu), GENQ_WORKER_NAME=<host>:gpu<i> / <host>:cpu<k>, and the options.
- Supervise: a child that exits unexpectedly is started again after a back-off (`restart_delay`).
  Its running job is not ours to handle: its lease runs out and a reconciler takes it over.
- Stop: SIGTERM or SIGINT is forwarded as SIGTERM (Celery's warm shutdown: running jobs finish);
  a second signal, or --grace seconds, kills what is left with SIGKILL. Exit 0. (Exit 1 or 2 when
  a child cannot start: a configuration error, a Celery option it refuses; nothing is restarted.)

Children stay in this process's group (a signal to the group reaches them all) and are asked by
the kernel to receive SIGTERM when this process dies (PR_SET_PDEATHSIG), so a supervisor killed
outright leaves no orphan taking jobs: each finishes its running job and exits.

This module imports neither torch nor Celery: the supervisor is small, and CUDA lives only in
the children.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import click

from genq.core.config import check_queue_name, load_settings

log = logging.getLogger("genq.supervisor")

MIN_RESTART_DELAY_S = 1.0  # the first restart of a child that died
MAX_RESTART_DELAY_S = 60.0  # the back-off doubles up to this
STABLE_AFTER_S = 60.0  # a child that ran this long died "for the first time": its restart waits the minimum again
DEFAULT_GRACE_S = 3600.0  # after a stop, how long running jobs may take before their workers are killed
POLL_INTERVAL_S = 0.2  # how often the supervisor looks at its children and at signals received
NVIDIA_SMI_TIMEOUT_S = 30.0
NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver knows
CHILD_MODULE = "genq.worker.child"

EXIT_USAGE = 2  # a bad option: the supervisor's, or one Celery refused in a child
EXIT_CONFIG = 78  # sysexits' EX_CONFIG: a child's settings or the database schema are wrong
EXIT_FAILED = 1  # what the supervisor exits with after a child's configuration error
# A child exiting with one of these soon after its start (before STABLE_AFTER_S) would fail the same way
# again: it is not restarted, the others are stopped, and the supervisor exits with the value.
PERMANENT_EXITS = {EXIT_USAGE: EXIT_USAGE, EXIT_CONFIG: EXIT_FAILED}

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CUDA_ID = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")  # what CUDA_VISIBLE_DEVICES may list


class UsageError(ValueError):
    """Options that cannot be run as given; one line for the user, exit 2."""


class ConfigError(Exception):
    """A GENQ_* setting that cannot be used; one line for the user, exit 1."""


# -- the plan ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuInventory:
    """The GPUs this machine offers, by the ids CUDA_VISIBLE_DEVICES takes, and where that was read."""

    ids: tuple[str, ...]
    source: str  # "CUDA_VISIBLE_DEVICES", "nvidia-smi -L", or "nvidia-smi and /proc/driver/nvidia/gpus"

    @property
    def pinned(self) -> bool:
        """The ids came from the user's CUDA_VISIBLE_DEVICES (and keep their meaning: no reordering)."""
        return self.source == "CUDA_VISIBLE_DEVICES"

    def describe(self) -> str:
        if not self.ids:
            return f"no GPU (none in {self.source})"
        return f"{len(self.ids)} GPU{'s' if len(self.ids) > 1 else ''}: {','.join(self.ids)} (from {self.source})"


@dataclass(frozen=True)
class Slot:
    """One worker process to keep running: its registry name and what it adds to the environment."""

    name: str
    env: dict[str, str]


def cuda_visible(raw: str) -> tuple[str, ...]:
    """The ids of a CUDA_VISIBLE_DEVICES value; like CUDA, the list ends at the first invalid entry
    ("" and "-1" mean no GPU)."""
    ids = []
    for entry in (part.strip() for part in raw.split(",")):
        if not CUDA_ID.match(entry):
            break
        ids.append(entry)
    return tuple(ids)


def nvidia_smi_listing() -> str | None:
    """`nvidia-smi -L`'s output, or None when it is not installed or fails (no driver)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        result = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def find_gpus(env: Mapping[str, str], listing: Callable[[], str | None] = nvidia_smi_listing,
              proc_gpus: Path = NVIDIA_PROC_GPUS) -> GpuInventory:
    """The GPUs, without initialising CUDA: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`,
    else the driver's /proc folder (indices in PCI bus order, as nvidia-smi numbers them)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return GpuInventory(cuda_visible(env["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES")
    text = listing()
    if text is not None:
        return GpuInventory(tuple(re.findall(r"^GPU (\d+):", text, re.MULTILINE)), "nvidia-smi -L")
    try:
        count = sum(1 for _ in proc_gpus.iterdir())
    except OSError:
        count = 0
    return GpuInventory(tuple(str(index) for index in range(count)), f"nvidia-smi and {proc_gpus}")


def choose_gpus(spec: str, inventory: GpuInventory) -> tuple[str, ...]:
    """--gpus: `all`, a count N (the first N), or ids separated by commas (`0,2`; one alone: `3,`)."""
    text = spec.strip()
    have = inventory.ids
    if text == "all":
        if not have:
            raise UsageError(f"--gpus all: this machine has {inventory.describe()}; "
                             "run CPU workers with --processes N")
        return have
    if text.isdigit():
        count = int(text)
        if count == 0:
            raise UsageError("--gpus 0: a count must be at least 1 (GPU 0 alone is --gpus 0, and CPU "
                             "workers are --processes N)")
        if count > len(have):
            raise UsageError(f"--gpus {count}: this machine has {inventory.describe()}")
        return have[:count]
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    if not wanted or not all(CUDA_ID.match(gpu) for gpu in wanted):
        raise UsageError(f"--gpus takes all, a count (2) or GPU indices separated by commas (0,2), got {spec!r}")
    for gpu in wanted:
        if wanted.count(gpu) > 1:
            raise UsageError(f"--gpus {text}: GPU {gpu} is named twice")
        if gpu not in have:
            raise UsageError(f"--gpus {text}: there is no GPU {gpu}; this machine has {inventory.describe()}")
    return tuple(wanted)


def threads_per_worker(cores: int, workers: int) -> int:
    """torch's CPU threads for each of `workers` CPU workers sharing `cores` cores."""
    return max(1, cores // max(1, workers))


def plan(*, gpus: str | None, processes: int | None, queues: str | None, preload: str | None,
         env: Mapping[str, str], find: Callable[[], GpuInventory], cores: int, host: str) -> list[Slot]:
    """The workers to run. Default: every GPU when there is one (and GENQ_DEVICE is not cpu), else
    one CPU worker. Raises UsageError for what cannot be run as asked."""
    if gpus is not None and processes is not None:
        raise UsageError("--gpus and --processes exclude each other: run GPU workers or CPU workers")
    if processes is not None and processes < 1:
        raise UsageError(f"--processes must be at least 1, got {processes}")
    common: dict[str, str] = {}
    if queues is not None:
        names = [queue.strip() for queue in queues.split(",") if queue.strip()]
        if not names:
            raise UsageError("--queues takes queue names separated by commas, e.g. --queues gpu,cpu")
        try:
            for name in names:
                check_queue_name(name, "--queues: queue")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        common["GENQ_WORKER_QUEUES"] = ",".join(dict.fromkeys(names))
    if preload is not None:
        if not preload.strip():
            raise UsageError("--preload takes a model (a hub id or a local model folder)")
        common["GENQ_PRELOAD"] = preload.strip()
    prefix = env.get("GENQ_WORKER_NAME") or host

    chosen: tuple[str, ...] = ()
    inventory = None
    if gpus is not None:
        inventory = find()
        chosen = choose_gpus(gpus, inventory)
    elif processes is None and (env.get("GENQ_DEVICE") or "auto") != "cpu":
        inventory = find()
        chosen = inventory.ids
    if chosen:
        order = {} if inventory.pinned or "CUDA_DEVICE_ORDER" in env else {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        return [Slot(f"{prefix}:gpu{gpu}", {**common, **order, "CUDA_VISIBLE_DEVICES": gpu, "GENQ_DEVICE": "cuda",
                                             "GENQ_WORKER_NAME": f"{prefix}:gpu{gpu}"})
                for gpu in chosen]

    count = processes or 1
    threads = {} if env.get("GENQ_TORCH_THREADS") else {"GENQ_TORCH_THREADS": str(threads_per_worker(cores, count))}
    return [Slot(f"{prefix}:cpu{k}", {**common, **threads, "CUDA_VISIBLE_DEVICES": "", "GENQ_DEVICE": "cpu",
                                      "GENQ_WORKER_NAME": f"{prefix}:cpu{k}"})
            for k in range(count)]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- supervision ------------------------------------------------------------------------------------------

def restart_delay(previous_s: float | None, uptime_s: float) -> float:
    """Seconds to wait before starting again a child that died after `uptime_s`; `previous_s` is the
    wait before its last start (None: it never died). 1 s, doubling to 60 s while it keeps dying;
    back to 1 s once it has stayed up STABLE_AFTER_S."""
    if previous_s is None or uptime_s >= STABLE_AFTER_S:
        return MIN_RESTART_DELAY_S
    return min(previous_s * 2, MAX_RESTART_DELAY_S)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send the child SIGTERM when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nobody would tell us
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass(eq=False)
class Child:
    slot: Slot
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    delay_s: float | None = None  # the back-off before its latest start; None: it never died
    restart_at: float | None = None  # when it is due to start again, while it is down


class Supervisor:
    """Runs one child per slot until told to stop; see the module's docstring."""

    def __init__(self, slots: Sequence[Slot], command: Sequence[str], env: Mapping[str, str],
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        self.children = [Child(slot) for slot in slots]
        self.command, self.env, self.grace_s = list(command), dict(env), grace_s
        self.pending: list[int] = []  # signals received, not yet acted on (the handler only records)
        self.stop_requested = False  # by a signal, or by a child that cannot start
        self.kill_at: float | None = None
        self.killed = False
        self.exit_code = 0

    @property
    def stopping(self) -> bool:
        return self.stop_requested or bool(self.pending)

    def run(self) -> int:
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            names = ", ".join(child.slot.name for child in self.children)
            log.info("starting %d worker%s: %s", len(self.children), "s" if len(self.children) > 1 else "", names)
            for child in self.children:
                self._start(child)
            while True:
                self._act_on_signals()
                self._reap()
                if self.stopping:
                    if not any(child.process for child in self.children):
                        break
                    self._kill_when_grace_is_over()
                else:
                    self._restart_due()
                time.sleep(POLL_INTERVAL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()  # nothing is left running by an exception above
        log.info("all workers stopped")
        return self.exit_code

    def _on_signal(self, signum: int, _frame) -> None:
        self.pending.append(signum)

    def _act_on_signals(self) -> None:
        while self.pending:
            name = signal.Signals(self.pending.pop(0)).name
            if not self.stop_requested:
                self._stop(name)
            elif not self.killed:
                log.warning("%s again: killing the workers; their running jobs are taken over once their "
                            "leases expire", name)
                self._kill_all()

    def _stop(self, why: str) -> None:
        """Warm shutdown: SIGTERM to every child (Celery finishes the running job), no more restarts."""
        self.stop_requested = True
        self.kill_at = time.monotonic() + self.grace_s
        log.info("%s: stopping the workers; each finishes its running job (a second signal, or %g s, kills them)",
                 why, self.grace_s)
        for child in self.children:
            child.restart_at = None
            if child.process is not None:
                child.process.send_signal(signal.SIGTERM)

    def _kill_when_grace_is_over(self) -> None:
        if not self.killed and self.kill_at is not None and time.monotonic() >= self.kill_at:
            log.warning("workers still running %g s after the stop: killing them; their running jobs are taken "
                        "over once their leases expire", self.grace_s)
            self._kill_all()

    def _kill_all(self) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.kill()
                self.killed = True

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.started_at = time.monotonic()
        try:
            child.process = subprocess.Popen(self.command, env={**self.env, **child.slot.env},
                                             preexec_fn=_die_with_parent())
        except (OSError, subprocess.SubprocessError) as exc:
            child.process = None
            self._schedule_restart(child, f"could not be started ({exc})", 0.0)
            return
        device = child.slot.env.get("GENQ_DEVICE", "")
        gpu = child.slot.env.get("CUDA_VISIBLE_DEVICES") if device == "cuda" else None
        log.info("started %s (pid %d, %s)", child.slot.name, child.process.pid, f"GPU {gpu}" if gpu else device)

    def _reap(self) -> None:
        for child in self.children:
            process = child.process
            if process is None or process.poll() is None:
                continue
            child.process = None
            uptime_s = time.monotonic() - child.started_at
            what = f"{child.slot.name} (pid {process.pid}) {describe_exit(process.returncode)}"
            if self.stopping:
                log.info("%s", what)
            elif process.returncode in PERMANENT_EXITS and uptime_s < STABLE_AFTER_S:
                log.error("%s at its start: starting it again would fail the same way; stopping", what)
                self.exit_code = PERMANENT_EXITS[process.returncode]
                self._stop(f"{child.slot.name} cannot start")
            else:
                self._schedule_restart(child, what, uptime_s)

    def _schedule_restart(self, child: Child, what: str, uptime_s: float) -> None:
        child.delay_s = restart_delay(child.delay_s, uptime_s)
        child.restart_at = time.monotonic() + child.delay_s
        log.warning("%s after %.1f s; starting it again in %g s", what, uptime_s, child.delay_s)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                self._start(child)


# -- the command ------------------------------------------------------------------------------------------

@click.command(name="genq-worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                     "help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--gpus", metavar="all|N|I,J", help="GPU workers, one process per GPU: all of them, the first N, or "
              "these indices (one alone: --gpus 3,). Default: all, when the machine has a GPU and GENQ_DEVICE is not "
              "cpu. GPUs are counted from CUDA_VISIBLE_DEVICES when it is set, else from nvidia-smi -L.")
@click.option("--processes", type=int, metavar="N", help="N CPU workers instead (torch threads split between them, "
              "unless GENQ_TORCH_THREADS is set). Default: one, on a machine without GPU.")
@click.option("--queues", "-Q", metavar="A,B", help="The queues every worker consumes (GENQ_WORKER_QUEUES). "
              "Default: the queue of every job kind.")
@click.option("--preload", metavar="MODEL", help="A Stable Diffusion model each worker loads before it takes jobs "
              "(GENQ_PRELOAD): a hub id or a local model folder.")
@click.option("--grace", type=click.FloatRange(min=0), default=DEFAULT_GRACE_S, show_default=True, metavar="SECONDS",
              help="After SIGTERM or Ctrl+C, how long running jobs may take before their workers are killed.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def command(gpus: str | None, processes: int | None, queues: str | None, preload: str | None, grace: float,
            celery_args: tuple[str, ...]) -> int:
    """Run genq workers: one process per GPU, or N on the CPU, each a Celery worker (threads pool of one, prefetch 1)
    that is started again when it dies.

    \b
      genq-worker                  every GPU, or one CPU worker on a machine without GPU
      genq-worker --gpus 2         the first two GPUs
      genq-worker --gpus 0,2       GPUs 0 and 2 (as nvidia-smi numbers them)
      genq-worker --processes 4    four CPU workers
      genq-worker --queues cpu --loglevel DEBUG

    Each worker registers as HOST:gpuI or HOST:cpuK (HOST: GENQ_WORKER_NAME if set, else the host name);
    `client workers` lists them. A worker that dies is started again after 1 s, doubling to 60 s while
    it keeps dying; its running job is taken over once its lease (GENQ_LEASE) expires.

    SIGTERM or Ctrl+C stops the workers: each finishes its running job, then exits (Celery's warm
    shutdown). A second signal, or --grace seconds, kills them. Should genq-worker itself be killed,
    its workers finish their running jobs and exit.

    Options not listed here go to every worker's `celery worker` (for instance --loglevel DEBUG).
    Settings come from GENQ_* environment variables; `client config` prints them.
    """
    env = dict(os.environ)
    slots = plan(gpus=gpus, processes=processes, queues=queues, preload=preload, env=env,
                 find=lambda: find_gpus(env), cores=available_cores(), host=socket.gethostname())
    try:  # every child would fail on a bad GENQ_* value: say it once, here, rather than in a restart loop
        load_settings({**env, **slots[0].env})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Supervisor(slots, [sys.executable, "-m", CHILD_MODULE, *celery_args], env, grace).run()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("GENQ_ADDRESS", "").strip():
        print("genq-worker: a worker takes its jobs from the store and the broker, not through a server "
              "(GENQ_ADDRESS is set): unset GENQ_ADDRESS", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    try:
        code = command.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="genq-worker",
                            standalone_mode=False)
    except (UsageError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        print(f"genq-worker: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except ConfigError as exc:
        print(f"genq-worker: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    except click.Abort:  # Ctrl+C before the supervisor took over the signal
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
