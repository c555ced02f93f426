"""The on-disk artifact store: files under `<root>/<job id>/<name>`, written atomically."""
from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME_LENGTH = 200
ARTIFACT_FILE_MODE = 0o666  # before the umask, as open() would create them: 0644 under 022, 0640 under 027
_UMASK_LOCK = threading.Lock()


class ArtifactNameError(ValueError):
    pass


def validate_artifact_name(name: str) -> str:
    """Refuse names that could escape the job's folder. Subfolders ("images/0.png") are fine."""
    if not isinstance(name, str) or not name:
        raise ArtifactNameError("artifact name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise ArtifactNameError(f"artifact name longer than {MAX_NAME_LENGTH} characters: {name[:40]!r}...")
    if "\\" in name:
        raise ArtifactNameError(f"artifact name must not contain a backslash: {name!r}")
    if name.startswith("/"):
        raise ArtifactNameError(f"artifact name must be relative, not absolute: {name!r}")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ArtifactNameError(f"artifact name must not contain empty, '.' or '..' parts: {name!r}")
        if not _NAME_PART.match(part):
            raise ArtifactNameError(f"artifact name parts may use letters, digits, '.', '_' and '-' only: {name!r}")
    return name


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status). Elsewhere it is set and
    put back at once, under a lock: only files another thread creates in that instant could be affected."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


@dataclass(frozen=True)
class StagedFile:
    """Data written and fsynced to a temp file beside its target, not yet visible under the target's name."""

    temp: Path
    target: Path

    def publish(self) -> None:
        """Rename into place: a reader sees the old file or the new one, never a part. Publishing
        again (a retried transaction) is a no-op."""
        if not self.temp.exists():
            return
        os.replace(self.temp, self.target)
        dir_fd = os.open(self.target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)


def stage_file(target: Path, data: bytes, mode: int | None = None) -> StagedFile:
    """Write `data` to a temp file in the target's folder. The file gets `mode`, or by default what the
    umask gives a new file (mkstemp alone makes 0600)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, ARTIFACT_FILE_MODE & ~current_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StagedFile(Path(tmp), target)


def write_atomically(target: Path, data: bytes, mode: int | None = None) -> None:
    """Temp file in the same folder, fsync, rename."""
    staged = stage_file(target, data, mode)
    try:
        staged.publish()
    except BaseException:
        staged.discard()
        raise


@dataclass(frozen=True)
class StoredFile:
    name: str
    relative_path: str
    media_type: str
    size: int
    sha256: str


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, job_id: str, name: str) -> Path:
        validate_artifact_name(name)
        return self.root / job_id / name

    def stage(self, job_id: str, name: str, data: bytes, media_type: str | None = None) -> tuple[StoredFile, StagedFile]:
        """The artifact written beside its place; `publish()` it once the run may still write (fenced)."""
        return self.describe(job_id, name, data, media_type), stage_file(self.path(job_id, name), data)

    def put(self, job_id: str, name: str, data: bytes, media_type: str | None = None) -> StoredFile:
        write_atomically(self.path(job_id, name), data)
        return self.describe(job_id, name, data, media_type)

    @staticmethod
    def describe(job_id: str, name: str, data: bytes, media_type: str | None = None) -> StoredFile:
        return StoredFile(
            name=name,
            relative_path=f"{job_id}/{name}",
            media_type=media_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

