"""The context a run function gets on a worker: backed by the SQL and artifact stores.

Every write is fenced by the run's attempt (a superseded run's writes are refused and it stops)
and retried through a database blip for up to GENQ_RETRY_FOR seconds.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from genq.core.cache import ModelCache
from genq.core.context import JobCancelled
from genq.core.store.artifacts import ArtifactStore, validate_artifact_name
from genq.core.store.jobs import JobStore, RunSuperseded
from genq.worker.liveness import Heartbeat
from genq.worker.retry import retrying

log = logging.getLogger("genq.job")
# A run reports progress and looks for a cancel at every step; SQL sees them at most this often (the
# last step's progress always): a batch of eight jobs at 20 steps/s would otherwise spend its time committing.
PROGRESS_EVERY_S = 0.25
CANCEL_READ_EVERY_S = 0.25


class JobSuperseded(JobCancelled):
    """This run lost its job (its lease expired and the job was taken over, or it ended elsewhere)."""


class TimeLimitExceeded(JobCancelled):
    """The run went past the job's --time-limit."""


class StoreContext:
    def __init__(self, job_id: str, attempt: int, store: JobStore, artifacts: ArtifactStore, heartbeat: Heartbeat,
                 device: str, data_root: Path, cache: ModelCache, retry_for_s: float,
                 deadline: float | None = None, compile_models: bool = False) -> None:
        self.job_id = job_id
        self.compile_models = compile_models  # GENQ_SD_COMPILE
        self.attempt = attempt
        self.device = device
        self.data_root = data_root
        self.cache = cache
        self._store = store
        self._artifacts = artifacts
        self._heartbeat = heartbeat
        self._retry_for_s = retry_for_s
        self._deadline = deadline  # time.monotonic() past which the run must stop (its time limit)
        self._progress_written = self._cancel_read = float("-inf")

    def _write(self, action, what: str) -> None:
        try:
            retrying(action, self._retry_for_s, f"{what} of job {self.job_id}")
        except RunSuperseded as exc:
            self._heartbeat.superseded.set()
            raise JobSuperseded(str(exc)) from None

    def progress(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self._progress_written < PROGRESS_EVERY_S:
            return
        self._progress_written = now
        self._write(lambda: self._store.set_progress(self.job_id, self.attempt, done, total, message), "progress")

    def metric(self, step: int, name: str, value: float) -> None:
        self._write(lambda: self._store.record_metric(self.job_id, self.attempt, step, name, value), "metric")

    def artifact(self, name: str, source: bytes | Path, media_type: str | None = None) -> None:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        stored, staged = self._artifacts.stage(self.job_id, name, data, media_type)
        try:
            self._write(lambda: self._store.record_artifact(self.job_id, self.attempt, stored, staged.publish),
                        f"artifact {name}")
        finally:
            staged.discard()  # a no-op once published

    def existing_artifact(self, name: str) -> Path | None:
        validate_artifact_name(name)
        if self._read(lambda: self._store.artifact(self.job_id, name), f"artifact {name}") is None:
            return None
        path = self._artifacts.path(self.job_id, name)
        return path if path.exists() else None

    def job_artifact(self, job_id: str, name: str) -> Path:
        validate_artifact_name(name)
        path = self._artifacts.path(job_id, name)
        if self._read(lambda: self._store.artifact(job_id, name), f"artifact {name}") is None or not path.exists():
            raise FileNotFoundError(f"job {job_id} has no artifact {name!r}")
        return path

    def log(self, message: str, level: str = "info") -> None:
        self._write(lambda: self._store.append_log(self.job_id, level, message, self.attempt), "log line")
        log.log(logging.getLevelName(level.upper()), "[%s] %s", self.job_id[:8], message)

    def cancelled(self) -> bool:
        return self._heartbeat.cancel_requested.is_set() or self._heartbeat.superseded.is_set()

    def check_cancelled(self) -> None:
        if self._heartbeat.superseded.is_set():
            raise JobSuperseded(f"job {self.job_id} was taken over: attempt {self.attempt} stops")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TimeLimitExceeded("time limit exceeded")
        if self._heartbeat.cancel_requested.is_set() or self._cancel_asked_in_store():
            raise JobCancelled("cancelled by request")

    def _cancel_asked_in_store(self) -> bool:
        """Between heartbeats, a cancel is read from the store at most every CANCEL_READ_EVERY_S."""
        now = time.monotonic()
        if now - self._cancel_read < CANCEL_READ_EVERY_S:
            return False
        self._cancel_read = now
        return self._read(lambda: self._store.cancel_requested(self.job_id), "cancel check")

    def _read(self, action, what: str):
        """A read of the store, retried through a database blip like every write."""
        return retrying(action, self._retry_for_s, f"{what} of job {self.job_id}")
