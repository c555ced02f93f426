"""The artifact store: where a job's files live, behind one small interface with two backends.

- `FolderStore`: files under `<root>/<job id>/<name>`, staged to a temp file and renamed into place
  inside the run's fenced transaction.
- `ObjectStore` (genq.core.store.object_store): objects under `<url>/<job id>/<attempt>/<token>/<name>`
  in S3 or anything fsspec reaches, uploaded whole before the row that indexes them.

`open_artifact_store(root)` picks the backend from GENQ_ARTIFACT_ROOT (a Path or a URL). Every reader
(CLI, Python API, dashboard) streams through `open()`; the index row (size, sha256) is the truth.
"""
from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import re
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

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


class ArtifactUnreadable(OSError):
    """An artifact's file cannot be read from the store, or is not what its row recorded; the message is
    one line saying why. An OSError, as a file that cannot be read is to every reader."""


class ArtifactStoreError(ValueError):
    """The store itself is unusable as configured (no such bucket, no access): one line; a restart cannot help."""


class ArtifactStoreUnavailable(ConnectionError):
    """The store did not answer (a transient failure: retried like a database blip)."""


class Staged(Protocol):
    """An artifact's data written where no reader looks yet; `publish()` makes it the artifact (inside
    the run's fenced transaction), `discard()` removes what was never published."""

    def publish(self) -> None: ...
    def discard(self) -> None: ...


def describe(name: str, relative_path: str, data: bytes, media_type: str | None = None) -> StoredFile:
    return StoredFile(
        name=name,
        relative_path=relative_path,
        media_type=media_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


class ArtifactStore:
    """What every backend does. `relative_path` is the index row's: where the artifact lies under the root."""

    root: Path | str

    def stage(self, job_id: str, attempt: int, name: str, data: bytes,
              media_type: str | None = None) -> tuple[StoredFile, Staged]:
        raise NotImplementedError

    def put(self, job_id: str, name: str, data: bytes, media_type: str | None = None, attempt: int = 1) -> StoredFile:
        """Stage and publish at once (tools and tests; a run publishes inside its fenced transaction)."""
        stored, staged = self.stage(job_id, attempt, name, data, media_type)
        try:
            staged.publish()
        finally:
            staged.discard()
        return stored

    def check_recorded(self, job_id: str, name: str, relative_path: str) -> None:
        """Raise ArtifactUnreadable unless an index row's path has this store's layout for (job, name)."""
        raise NotImplementedError

    def open(self, relative_path: str) -> BinaryIO:
        """The artifact's bytes as a stream (ArtifactUnreadable when missing or not a plain file)."""
        raise NotImplementedError

    def url(self, relative_path: str) -> str:
        """Where the artifact lies, as listings print it: a local path, or s3://bucket/prefix/..."""
        raise NotImplementedError

    def local_file(self, relative_path: str, size: int, sha256: str, scratch: Path) -> Path | None:
        """A local file with the artifact's bytes for a run to read (a checkpoint, a dependency's model):
        the file itself in a folder store, a verified copy under `scratch` otherwise; None when missing."""
        raise NotImplementedError

    def remove(self, relative_path: str) -> None:
        """Delete an artifact's file no row points to any more (best effort)."""

    def check(self) -> None:
        """At a worker's start: ArtifactStoreError when the store cannot be used as configured."""


class FolderStore(ArtifactStore):
    """Files under `<root>/<job id>/<name>`; a file is renamed into place inside the fenced transaction."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, job_id: str, name: str) -> Path:
        validate_artifact_name(name)
        return self.root / job_id / name

    def stage(self, job_id: str, attempt: int, name: str, data: bytes,
              media_type: str | None = None) -> tuple[StoredFile, StagedFile]:
        """The artifact written beside its place; `publish()` it once the run may still write (fenced)."""
        stored = describe(name, f"{job_id}/{name}", data, media_type)
        return stored, stage_file(self.path(job_id, name), data)

    def check_recorded(self, job_id: str, name: str, relative_path: str) -> None:
        if relative_path != f"{job_id}/{name}":
            raise ArtifactUnreadable(f"its recorded path {relative_path!r} is not {job_id}/{name}")
        if not is_plain_component(job_id):
            raise ArtifactUnreadable(f"its job id {job_id!r} is not a folder name")

    def open(self, relative_path: str) -> BinaryIO:
        return os.fdopen(open_no_symlinks(self.root, relative_path), "rb")

    def url(self, relative_path: str) -> str:
        return str(self.root / relative_path)

    def local_file(self, relative_path: str, size: int, sha256: str, scratch: Path) -> Path | None:
        path = self.root / relative_path
        return path if path.exists() else None


def is_plain_component(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "/" not in part and "\0" not in part


FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_no_symlinks(root: Path, relative_path: str) -> int:
    """An fd on the regular file at `relative_path`, reached from the root one folder at a time, no symlinks.

    Each step opens a single name relative to its parent's fd, so the file is inside the store by
    construction; the root itself may be a symlink (a shared mount, say): that is the operator's choice.
    """
    *folders, last = relative_path.split("/")
    try:
        folder_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ArtifactUnreadable(f"the artifact store {str(root)!r} cannot be opened: {exc.strerror}") from None
    try:
        for part in folders:
            child_fd = open_step(folder_fd, part, FOLDER_FLAGS)
            os.close(folder_fd)
            folder_fd = child_fd
        file_fd = open_step(folder_fd, last, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    finally:
        os.close(folder_fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise ArtifactUnreadable("it is not a regular file in the artifact store")
    return file_fd


def open_step(parent_fd: int, part: str, flags: int) -> int:
    try:
        return os.open(part, flags, dir_fd=parent_fd)
    except OSError as exc:
        raise ArtifactUnreadable(why_unopenable(parent_fd, part, exc, "in the artifact store")) from None


def why_unopenable(parent_fd: int, part: str, exc: OSError, where: str) -> str:
    if exc.errno == errno.ENOENT:
        return f"{part!r} is missing {where}"
    try:
        mode = os.stat(part, dir_fd=parent_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return f"{part!r} {where} is a symbolic link"
    if exc.errno == errno.ENOTDIR:
        return f"{part!r} {where} is not a folder"
    return f"{part!r} {where} cannot be opened: {exc.strerror}"


def open_artifact_store(root: Path | str) -> ArtifactStore:
    """The backend GENQ_ARTIFACT_ROOT names: a folder (a Path), or an object store (a URL)."""
    if isinstance(root, Path):
        return FolderStore(root)
    from genq.core.store.object_store import ObjectStore

    return ObjectStore(root)
