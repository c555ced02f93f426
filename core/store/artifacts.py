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


def write_atomically(target: Path, data: bytes, mode: int | None = None) -> None:
    """Temp file in the same folder, fsync, rename: a reader sees the old file or the new one.

    The file gets `mode`, or by default what the umask gives a new file (mkstemp alone makes 0600).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, ARTIFACT_FILE_MODE & ~current_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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

    def put(self, job_id: str, name: str, data: bytes, media_type: str | None = None) -> StoredFile:
        target = self.path(job_id, name)
        write_atomically(target, data)
        return StoredFile(
            name=name,
            relative_path=f"{job_id}/{name}",
            media_type=media_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

