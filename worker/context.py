"""The context a run function gets on a worker: backed by the SQL store and the artifact store."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from genq.core.cache import ModelCache
from genq.core.context import JobCancelled
from genq.core.store.artifacts import ArtifactStore, validate_artifact_name
from genq.core.store.jobs import JobStore

log = logging.getLogger("genq.job")


class Heartbeat:
    """Refreshes the job's heartbeat and picks up cancellation, in a background thread."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, interval_s: float) -> None:
        self.store, self.job_id, self.attempt, self.interval_s = store, job_id, attempt, interval_s
        self.cancel_requested = threading.Event()
        self.superseded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.store.heartbeat(self.job_id):
                    self.cancel_requested.set()
                job = self.store.get(self.job_id)
                if job is not None and job.attempts != self.attempt:
                    self.superseded.set()  # another worker took the job over: stop this run
            except Exception:
                log.exception("heartbeat for job %s failed", self.job_id)


class StoreContext:
    def __init__(self, job_id: str, store: JobStore, artifacts: ArtifactStore, heartbeat: Heartbeat,
                 device: str, data_root: Path, cache: ModelCache) -> None:
        self.job_id = job_id
        self.device = device
        self.data_root = data_root
        self.cache = cache
        self._store = store
        self._artifacts = artifacts
        self._heartbeat = heartbeat

    def progress(self, done: int, total: int, message: str = "") -> None:
        self._store.set_progress(self.job_id, done, total, message)

    def metric(self, step: int, name: str, value: float) -> None:
        self._store.record_metric(self.job_id, step, name, value)

    def artifact(self, name: str, source: bytes | Path, media_type: str | None = None) -> None:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        stored = self._artifacts.put(self.job_id, name, data, media_type)
        self._store.record_artifact(self.job_id, stored)

    def existing_artifact(self, name: str) -> Path | None:
        validate_artifact_name(name)
        if self._store.artifact(self.job_id, name) is None:
            return None
        path = self._artifacts.path(self.job_id, name)
        return path if path.exists() else None

    def job_artifact(self, job_id: str, name: str) -> Path:
        validate_artifact_name(name)
        path = self._artifacts.path(job_id, name)
        if self._store.artifact(job_id, name) is None or not path.exists():
            raise FileNotFoundError(f"job {job_id} has no artifact {name!r}")
        return path

    def log(self, message: str, level: str = "info") -> None:
        self._store.append_log(self.job_id, level, message)
        log.log(logging.getLevelName(level.upper()), "[%s] %s", self.job_id[:8], message)

    def cancelled(self) -> bool:
        return self._heartbeat.cancel_requested.is_set() or self._heartbeat.superseded.is_set()

    def check_cancelled(self) -> None:
        if self._heartbeat.superseded.is_set():
            raise JobSuperseded(f"job {self.job_id} was taken over by another worker")
        if self._heartbeat.cancel_requested.is_set() or self._store.cancel_requested(self.job_id):
            raise JobCancelled("cancelled by request")


class JobSuperseded(JobCancelled):
    """This run lost its job to another worker (its heartbeat had gone stale)."""
