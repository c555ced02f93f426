"""What a job's run function may talk to: its context, and nothing else.

A run function has the signature `run(spec, ctx) -> dict` (the dict is the job's result,
JSON only). It reports through `ctx` and never touches Celery or the database. The worker
supplies a context backed by the SQL and artifact stores (`worker.context`); `LocalContext`
below runs a job in-process against a plain folder (benchmarks, scripts, core tests).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from genq.core.cache import ModelCache
from genq.core.store.artifacts import validate_artifact_name, write_atomically

log = logging.getLogger("genq.job")


class JobCancelled(Exception):
    """Raised by a run function (via `ctx.check_cancelled()`) to end its job `cancelled`."""


class JobContext(Protocol):
    job_id: str
    device: str  # "cpu" or "cuda"; the run function creates its torch.device from it
    data_root: Path
    cache: ModelCache
    compile_models: bool  # torch.compile the models it runs (GENQ_SD_COMPILE); the sd kind compiles its UNet

    def progress(self, done: int, total: int, message: str = "") -> None: ...
    def preview(self, png: bytes) -> None:
        """A small PNG of where the run is (not an artifact): written with the next progress write, replacing the last."""
    def metric(self, step: int, name: str, value: float) -> None:
        """Record one value; recording the same (step, name) again replaces it."""
    def artifact(self, name: str, source: bytes | Path, media_type: str | None = None) -> None:
        """Store bytes or a file as this job's artifact `name`, atomically (replaces an older one)."""
    def existing_artifact(self, name: str) -> Path | None:
        """This job's artifact from an earlier attempt (a checkpoint to resume from), or None."""
    def job_artifact(self, job_id: str, name: str) -> Path:
        """Another job's artifact (a dependency's model); raises FileNotFoundError when absent."""
    def log(self, message: str, level: str = "info") -> None: ...
    def cancelled(self) -> bool: ...
    def check_cancelled(self) -> None:
        """Raise JobCancelled when the user asked to cancel."""


class LocalContext:
    """A context over a plain folder: artifacts are files in `root/<job_id>/`."""

    def __init__(self, root: Path, job_id: str = "local", device: str = "cpu",
                 data_root: Path | None = None, cache: ModelCache | None = None,
                 compile_models: bool = False) -> None:
        self.root = Path(root)
        self.job_id = job_id
        self.device = device
        self.data_root = Path(data_root) if data_root else self.root / "data"
        self.cache = cache if cache is not None else ModelCache(capacity=2)
        self.compile_models = compile_models
        self.metrics: dict[tuple[int, str], float] = {}
        self.progress_state: tuple[int, int, str] = (0, 0, "")
        self.previews: list[bytes] = []
        self.logs: list[tuple[str, str]] = []
        self.cancel_requested = False

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.progress_state = (done, total, message)

    def preview(self, png: bytes) -> None:
        self.previews.append(bytes(png))

    def metric(self, step: int, name: str, value: float) -> None:
        self.metrics[(step, name)] = float(value)

    def artifact(self, name: str, source: bytes | Path, media_type: str | None = None) -> None:
        validate_artifact_name(name)
        target = self.root / self.job_id / name
        if isinstance(source, (bytes, bytearray)):
            write_atomically(target, bytes(source))
        else:
            write_atomically(target, Path(source).read_bytes())

    def existing_artifact(self, name: str) -> Path | None:
        validate_artifact_name(name)
        path = self.root / self.job_id / name
        return path if path.exists() else None

    def job_artifact(self, job_id: str, name: str) -> Path:
        validate_artifact_name(name)
        path = self.root / job_id / name
        if not path.exists():
            raise FileNotFoundError(f"job {job_id} has no artifact {name!r}")
        return path

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append((level, message))
        log.log(logging.getLevelName(level.upper()), message)

    def cancelled(self) -> bool:
        return self.cancel_requested

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled("cancelled by request")

    def artifact_json(self, name: str) -> dict:
        return json.loads((self.root / self.job_id / name).read_text())
