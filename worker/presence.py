"""This worker's row in the registry: who it is, what it runs, and that it is still alive.

Registered when Celery says the worker is ready, renewed every heartbeat interval by a thread,
marked `stopped` on a warm shutdown. A worker killed outright just stops being seen and reads as
`lost` once the lease has passed (genq.core.store.workers).
"""
from __future__ import annotations

import logging
import os
import platform
import socket
import threading
from importlib import metadata

from genq.core.config import Settings
from genq.core.store.workers import WorkerIdentity, WorkerRegistry

log = logging.getLogger("genq.presence")
VERSIONED = ("genq", "torch", "diffusers", "transformers", "celery")


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


class Presence:
    """The registry row of this worker process; every method swallows database errors (the
    registry is for people to look at: a blip must never fail a job)."""

    def __init__(self, registry: WorkerRegistry, interval_s: float) -> None:
        self.registry, self.interval_s = registry, interval_s
        self.row_id: str | None = None
        self.identity: WorkerIdentity | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="presence", daemon=True)

    def start(self, identity: WorkerIdentity) -> None:
        self.identity = identity
        self._register()
        self._thread.start()

    def _register(self) -> None:
        identity = self.identity
        self.row_id = self._safely(lambda: self.registry.register(identity), "register")
        if self.row_id:
            log.info("registered as %s (%s) on queues %s", identity.name, identity.device, ",".join(identity.queues))

    def busy(self, job_id: str) -> None:
        if self.row_id:
            self._safely(lambda: self.registry.busy(self.row_id, job_id), "mark busy")

    def idle(self, finished_jobs: int = 1) -> None:
        if self.row_id:
            self._safely(lambda: self.registry.idle(self.row_id, finished_jobs), "mark idle")

    def stop(self) -> None:
        self._stop.set()
        if self.row_id:
            self._safely(lambda: self.registry.stopped(self.row_id), "mark stopped")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.row_id is None:
                self._register()  # the database was away when this worker started
                continue
            self._safely(lambda: self.registry.seen(self.row_id), "heartbeat")

    @staticmethod
    def _safely(action, what: str):
        try:
            return action()
        except Exception as exc:
            log.warning("worker registry: could not %s (%s)", what, type(exc).__name__)
            return None
