"""This worker's row in the registry: who it is, what it runs, and that it is still alive.

Registered when Celery says the worker is ready, marked seen every GENQ_HEARTBEAT_INTERVAL by a thread,
marked `stopped` on a warm shutdown (when the database cannot be reached then, the row's id is kept in
a private file of GENQ_HOME and the next worker of this home to register marks it `stopped`).
A worker killed outright just stops being seen and reads as
`lost` once the lease has passed (genq.core.store.workers).
"""
from __future__ import annotations

import logging
import os
import platform
import socket
import threading
from pathlib import Path
from importlib import metadata

from genq.core.config import Settings
from genq.core.retry import retrying
from genq.core.store.workers import WorkerIdentity, WorkerRegistry
from genq.worker.gpu_figures import GpuFigures
from genq.worker.loop import BackgroundLoop

log = logging.getLogger("genq.presence")
VERSIONED = ("genq", "torch", "diffusers", "transformers", "celery")
STOP_RETRY_S = 5.0  # how long a stopping worker tries to record it


def device_label(device: str) -> str:
    """"cuda:<the GPU's index on the machine>" (from CUDA_VISIBLE_DEVICES when one is pinned), or "cpu"."""
    if device != "cuda" and not device.startswith("cuda"):
        return device
    if ":" in device:
        return device
    visible = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return f"cuda:{visible[0]}" if len(visible) == 1 else "cuda:0"


def describe(settings: Settings, device: str) -> WorkerIdentity:
    """What this worker is. Reads the GPU's name and memory only for a CUDA device (torch is
    imported by then: the worker is ready, and CUDA initialises in this one process)."""
    device_name, device_memory = platform.processor() or platform.machine(), None
    if device.startswith("cuda"):
        import torch

        properties = torch.cuda.get_device_properties(0)
        device_name, device_memory = properties.name, int(properties.total_memory)
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    versions["python"] = platform.python_version()
    return WorkerIdentity(name=settings.worker_name, host=socket.gethostname(), pid=os.getpid(),
                          device=device_label(device), device_name=device_name, device_memory=device_memory,
                          queues=settings.worker_queues, versions=versions)


class Presence(BackgroundLoop):
    """The registry row of this worker process; every method swallows database errors (the
    registry is for people to look at: a blip must never fail a job). `busy` and `idle` are
    written by the loop's thread, at once, so that a job's run never waits for them."""

    name = "presence"

    def __init__(self, registry: WorkerRegistry, interval_s: float, unrecorded_stops: Path | None = None) -> None:
        super().__init__(interval_s)
        self.registry = registry
        self.unrecorded_stops = unrecorded_stops  # ids of rows whose clean stop could not be written
        self.row_id: str | None = None
        self.identity: WorkerIdentity | None = None
        self._lock = threading.Lock()
        self._changed = False  # busy or idle since the last write
        self._current_job: str | None = None
        self._finished = 0  # jobs ended since the last write
        self.gpu: GpuFigures | None = None

    def start(self, identity: WorkerIdentity) -> None:
        self.identity = identity
        self.gpu = GpuFigures(identity.device)
        self._register()
        super().start()

    def _register(self) -> None:
        identity = self.identity
        self.row_id = self._safely(lambda: self.registry.register(identity), "register")
        if self.row_id:
            log.info("registered as %s (%s) on queues %s", identity.name, identity.device, ",".join(identity.queues))
            self._record_earlier_stops()

    def busy(self, job_id: str) -> None:
        with self._lock:
            self._changed, self._current_job = True, job_id
        self.nudge()

    def idle(self, finished_jobs: int = 1) -> None:
        with self._lock:
            self._changed, self._current_job = True, None
            self._finished += finished_jobs
        self.nudge()

    def stop(self, wait: bool = False) -> None:
        super().stop(wait=True)
        self._write_changes()
        if self.row_id and not self._mark_stopped(self.row_id) and self.unrecorded_stops is not None:
            self._keep_for_later(self.row_id)

    def _mark_stopped(self, row_id: str) -> bool:
        try:
            retrying(lambda: self.registry.stopped(row_id), STOP_RETRY_S, "marking this worker stopped")
            return True
        except Exception as exc:
            log.warning("worker registry: could not mark stopped (%s)", type(exc).__name__)
            return False

    def _keep_for_later(self, row_id: str) -> None:
        """The database is away as this worker stops: the next worker of this home writes the stop."""
        self.unrecorded_stops.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.unrecorded_stops, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{row_id}\n".encode())
        finally:
            os.close(fd)
        log.warning("could not mark this worker stopped; the next worker of this home will")

    def _record_earlier_stops(self) -> None:
        if self.unrecorded_stops is None or not self.unrecorded_stops.exists():
            return
        taken = self.unrecorded_stops.with_name(f"{self.unrecorded_stops.name}.{os.getpid()}")
        try:
            os.rename(self.unrecorded_stops, taken)  # one registering worker takes them
        except FileNotFoundError:
            return
        for row_id in taken.read_text().split():
            if self._safely(lambda: self.registry.stopped(row_id, now=False), "mark an earlier run stopped") is None:
                self._keep_for_later(row_id)
        taken.unlink()

    def tick(self) -> None:
        if self.row_id is None:
            self._register()  # the database was away when this worker started
            return
        if not self._write_changes():
            self._safely(lambda: self.registry.seen(self.row_id, **self._gpu_figures()), "mark seen")

    def _write_changes(self) -> bool:
        """Write the state and the jobs done since the last write; whether there was anything to write."""
        if self.row_id is None:
            return False
        with self._lock:
            changed, job_id, finished = self._changed, self._current_job, self._finished
            self._changed, self._finished = False, 0
        if not changed:
            return False
        done = self._safely(lambda: self.registry.report(self.row_id, job_id, finished, **self._gpu_figures()),
                            "record its state")
        if done is None:
            with self._lock:  # written next time
                self._changed = True
                self._finished += finished
        return True

    def _gpu_figures(self) -> dict[str, int]:
        return self.gpu.read() if self.gpu is not None else {}

    @staticmethod
    def _safely(action, what: str):
        try:
            return action()
        except Exception as exc:
            log.warning("worker registry: could not %s (%s)", what, type(exc).__name__)
            return None
