"""The context a run function gets on a worker: backed by the SQL and artifact stores.

Every write is fenced by the run's attempt (a superseded run's writes are refused and it stops)
and retried through a database blip for up to GENQ_RETRY_FOR seconds. Progress, metric points and
log lines are gathered and written together at most every FLUSH_EVERY_S: with the next artifact,
with the run's end, or by the run's heartbeat when the run itself writes nothing more.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from genq.core.cache import ModelCache
from genq.core.context import JobCancelled
from genq.core.lifecycle import Lifecycle
from genq.core.params import text_problem
from genq.core.retry import is_transient, retrying
from genq.core.store.artifacts import ArtifactStore, ArtifactUnreadable, validate_artifact_name
from genq.core.store.jobs import RunSuperseded, RunWrites
from genq.core.store.models import utcnow
from genq.worker.liveness import Heartbeat

log = logging.getLogger("genq.job")
# A run reports progress at every step; SQL sees its small writes at most this often (a batch of eight
# jobs at 20 steps/s would otherwise spend its time committing, and a short job commits once or twice).
FLUSH_EVERY_S = 0.25


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Text a run reports, as the store can keep it: a NUL or a lone surrogate becomes U+FFFD."""
    if text_problem(text) is None:
        return text
    return UNSTORABLE.sub("\ufffd", text)


class JobSuperseded(JobCancelled):
    """This run lost its job (its lease expired and the job was taken over, or it ended elsewhere)."""


class StoreLost(JobCancelled):
    """The run's writes could not reach the store for GENQ_RETRY_FOR: the run stops, records nothing,
    and leaves its job to be taken over once its lease has passed (an outage is not the job's failure)."""


class TimeLimitExceeded(JobCancelled):
    """The run went past the job's --time-limit."""


class ArtifactWriteFailed(Exception):
    """An artifact could not be written to the artifact store for GENQ_RETRY_FOR: the write fails (one
    line), and with it the run, like any error of the run's own."""


class RunContext:
    """A run's JobContext on a worker: its writes go through the lifecycle engine, fenced by its attempt."""

    def __init__(self, job_id: str, attempt: int, lifecycle: Lifecycle, artifacts: ArtifactStore, heartbeat: Heartbeat,
                 device: str, data_root: Path, cache: ModelCache, retry_for_s: float,
                 deadline: float | None = None, compile_models: bool = False) -> None:
        self.job_id = job_id
        self.compile_models = compile_models  # GENQ_SD_COMPILE
        self.attempt = attempt
        self.device = device
        self.data_root = data_root
        self.cache = cache
        self._lifecycle = lifecycle
        self._store = lifecycle.store  # reads of artifacts
        self._artifacts = artifacts
        self._heartbeat = heartbeat
        self._retry_for_s = retry_for_s
        self._deadline = deadline  # time.monotonic() past which the run must stop (its time limit)
        self._pending = RunWrites()
        self._flushed_at = time.monotonic()
        self._writing = threading.Lock()  # the run's thread and its heartbeat's both flush
        self._scratch: Path | None = None  # local copies of artifacts read from an object store
        heartbeat.flush_stale = self.flush_stale

    def _write(self, action, what: str) -> None:
        try:
            retrying(action, self._retry_for_s, f"{what} of job {self.job_id}")
        except RunSuperseded as exc:
            self._heartbeat.superseded.set()
            raise JobSuperseded(str(exc)) from None
        except Exception as exc:
            if is_transient(exc):
                raise StoreLost(f"{what} of job {self.job_id}: the store did not answer for "
                                f"{self._retry_for_s:g}s ({type(exc).__name__})") from exc
            raise

    def progress(self, done: int, total: int, message: str = "") -> None:
        with self._writing:
            self._pending.progress = (done, total, storable(message))
        self._flush_if_due()

    def preview(self, png: bytes) -> None:
        with self._writing:
            self._pending.preview = bytes(png)
        self._flush_if_due()

    def metric(self, step: int, name: str, value: float) -> None:
        with self._writing:
            self._pending.metrics.append((step, name, value))
        self._flush_if_due()

    def artifact(self, name: str, source: bytes | Path, media_type: str | None = None) -> None:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        replaced = self._read(lambda: self._store.artifact(self.job_id, name), f"artifact {name}")
        stored, staged = self._upload(name, data, media_type)
        try:
            self.flush(stored, staged.publish)
        finally:
            staged.discard()  # a no-op once published
        if replaced is not None and replaced.relative_path != stored.relative_path:
            self._artifacts.remove(replaced.relative_path)  # an object store keeps each write under its own key

    def _upload(self, name: str, data: bytes, media_type: str | None):
        """The artifact staged in the store (for an object store: uploaded whole), an outage retried."""
        try:
            return retrying(lambda: self._artifacts.stage(self.job_id, self.attempt, name, data, media_type),
                            self._retry_for_s, f"upload of artifact {name} of job {self.job_id}")
        except Exception as exc:
            if is_transient(exc):
                raise ArtifactWriteFailed(f"{exc} (tried for {self._retry_for_s:g}s)") from None
            raise

    def flush(self, stored=None, publish=None) -> None:
        """Write what is pending (and an artifact, when given) in one fenced transaction."""
        with self._writing:
            writes, self._pending = self._pending, RunWrites()
            self._flushed_at = time.monotonic()
            if writes or stored is not None:
                self._write(lambda: self._lifecycle.record(self.job_id, self.attempt, writes, stored, publish),
                            "writes" if stored is None else f"artifact {stored.name}")

    def flush_stale(self) -> None:
        """From the heartbeat: write what has waited longer than FLUSH_EVERY_S."""
        if self._pending:
            self._flush_if_due()

    def take_pending(self) -> RunWrites:
        """What is not written yet, for the run's final transaction to write."""
        with self._writing:
            writes, self._pending = self._pending, RunWrites()
            return writes

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at >= FLUSH_EVERY_S:
            self.flush()

    def existing_artifact(self, name: str) -> Path | None:
        validate_artifact_name(name)
        row = self._read(lambda: self._store.artifact(self.job_id, name), f"artifact {name}")
        return None if row is None else self._local_file(row)

    def job_artifact(self, job_id: str, name: str) -> Path:
        validate_artifact_name(name)
        row = self._read(lambda: self._store.artifact(job_id, name), f"artifact {name}")
        path = None if row is None else self._local_file(row)
        if path is None:
            raise FileNotFoundError(f"job {job_id} has no artifact {name!r}")
        return path

    def _local_file(self, row) -> Path | None:
        """The artifact as a local file: in place in a folder store, else a verified copy in this run's
        scratch folder (removed by close())."""
        try:
            self._artifacts.check_recorded(row.job_id, row.name, row.relative_path)
        except ArtifactUnreadable as exc:
            raise ArtifactUnreadable(f"artifact {row.name} of job {row.job_id} is refused: {exc}") from None
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"genq-run-{self.job_id[:8]}-"))
        return self._read(lambda: self._artifacts.local_file(row.relative_path, row.size, row.sha256, self._scratch),
                          f"artifact {row.name}")

    def close(self) -> None:
        """The run has ended: its local copies go."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def log(self, message: str, level: str = "info") -> None:
        with self._writing:
            self._pending.logs.append((level, storable(message), utcnow()))
        self._flush_if_due()
        log.log(logging.getLevelName(level.upper()), "[%s] %s", self.job_id[:8], message)

    def cancelled(self) -> bool:
        return self._heartbeat.superseded.is_set() or self._heartbeat.cancel_asked(self._read)

    def check_cancelled(self) -> None:
        if self._heartbeat.superseded.is_set():
            raise JobSuperseded(f"job {self.job_id} was taken over: attempt {self.attempt} stops")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TimeLimitExceeded("time limit exceeded")
        if self._heartbeat.cancel_asked(self._read):
            raise JobCancelled("cancelled by request")

    def _read(self, action, what: str):
        """A read of the store, retried through a database blip like every write."""
        try:
            return retrying(action, self._retry_for_s, f"{what} of job {self.job_id}")
        except Exception as exc:
            if is_transient(exc):
                raise StoreLost(f"{what} of job {self.job_id}: the store did not answer for "
                                f"{self._retry_for_s:g}s ({type(exc).__name__})") from exc
            raise
