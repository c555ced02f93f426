"""`client artifacts JOB --download DIR`: copy a job's artifacts out of the store, verified, only into DIR.

The index row is not trusted: the name is validated again, the file is read from
`<artifact root>/<job id>/<name>` only, walking one folder at a time without following a symbolic
link, and the copy must match the recorded size and sha256. In DIR every subfolder is opened the
same way, so nothing is written outside DIR. All artifacts are copied to temp files and verified
first; only when every one matches are they renamed into place, so a refused download leaves no
file in DIR (only subfolders it created, empty).
"""
from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from genq.client.visible import visible
from genq.core.store.artifacts import ArtifactNameError, validate_artifact_name
from genq.core.store.models import ArtifactRow

CHUNK_BYTES = 1 << 20
TAMPERED = "the file was changed after the job wrote it"
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DownloadRefused(Exception):
    """One artifact cannot be copied safely; the message is one printable line naming it."""


@dataclass
class Staged:
    """A verified copy in a temp file beside its final name, waiting to be renamed into place."""

    folder_fd: int
    temp_name: str
    final_name: str


def download_artifacts(artifacts: list[ArtifactRow], artifact_root: Path, folder: Path) -> list[Path]:
    """Copy and verify every artifact, then rename them all into `folder`; returns their paths there."""
    folder.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    staged: list[Staged] = []
    try:
        for artifact in artifacts:
            staged.append(stage_artifact(artifact, artifact_root, root_fd))
        for artifact, copy in zip(artifacts, staged):
            move_into_place(copy, artifact.name)
    finally:
        for copy in staged:
            remove_quietly(copy.temp_name, copy.folder_fd)
            os.close(copy.folder_fd)
        os.close(root_fd)
    return [folder / artifact.name for artifact in artifacts]


def move_into_place(copy: Staged, name: str) -> None:
    try:
        os.replace(copy.temp_name, copy.final_name, src_dir_fd=copy.folder_fd, dst_dir_fd=copy.folder_fd)
    except OSError as exc:
        raise refused(name, f"it cannot be put in place in the download folder: {exc.strerror}") from None


def stage_artifact(artifact: ArtifactRow, artifact_root: Path, target_root_fd: int) -> Staged:
    """Copy one artifact from the store to a temp file under the target folder and verify it."""
    name = checked_name(artifact)
    *subfolders, final_name = name.split("/")
    source_fd = open_source(artifact_root, artifact.job_id, name)
    try:
        folder_fd = open_target_folder(target_root_fd, subfolders, name)
        try:
            temp_name = copy_verified(source_fd, folder_fd, final_name, artifact)
        except BaseException:
            os.close(folder_fd)
            raise
    finally:
        os.close(source_fd)
    return Staged(folder_fd, temp_name, final_name)


def checked_name(artifact: ArtifactRow) -> str:
    try:
        name = validate_artifact_name(artifact.name)
    except ArtifactNameError as exc:
        raise refused(artifact.name, str(exc)) from None
    if artifact.relative_path != f"{artifact.job_id}/{name}":
        raise refused(name, f"its recorded path {artifact.relative_path!r} is not {artifact.job_id}/{name}")
    if not is_plain_component(artifact.job_id):
        raise refused(name, f"its job id {artifact.job_id!r} is not a folder name")
    return name


def is_plain_component(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "/" not in part and "\0" not in part


def open_source(artifact_root: Path, job_id: str, name: str) -> int:
    """An fd on the artifact's regular file, reached from the root one folder at a time, no symlinks.

    Each step opens a single name relative to its parent's fd, so the file is inside the store by
    construction; the root itself may be a symlink (a shared mount, say): that is the operator's choice.
    """
    try:
        folder_fd = os.open(artifact_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise refused(name, f"the artifact store {str(artifact_root)!r} cannot be opened: {exc.strerror}") from None
    try:
        for part in [job_id, *name.split("/")[:-1]]:
            folder_fd = step_into(folder_fd, part, name, "in the artifact store")
        file_fd = open_no_follow(folder_fd, name.split("/")[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 name, "in the artifact store")
    finally:
        os.close(folder_fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise refused(name, "it is not a regular file in the artifact store")
    return file_fd


def open_target_folder(root_fd: int, subfolders: list[str], name: str) -> int:
    """An fd on the folder under DIR that will hold the artifact, creating subfolders, following no symlink."""
    folder_fd = os.dup(root_fd)
    try:
        for part in subfolders:
            make_folder(folder_fd, part, name)
            folder_fd = step_into(folder_fd, part, name, "in the download folder")
    except BaseException:
        os.close(folder_fd)
        raise
    return folder_fd


def make_folder(parent_fd: int, part: str, name: str) -> None:
    try:
        os.mkdir(part, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise refused(name, f"folder {part!r} cannot be made in the download folder: {exc.strerror}") from None


def step_into(parent_fd: int, part: str, name: str, where: str) -> int:
    """The fd of folder `part` under `parent_fd`, which is closed on success (and left to the caller on failure)."""
    child_fd = open_no_follow(parent_fd, part, FOLDER_FLAGS, name, where)
    os.close(parent_fd)
    return child_fd


def open_no_follow(parent_fd: int, part: str, flags: int, name: str, where: str) -> int:
    try:
        return os.open(part, flags, dir_fd=parent_fd)
    except OSError as exc:
        raise refused(name, why_unopenable(parent_fd, part, exc, where)) from None


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


def copy_verified(source_fd: int, folder_fd: int, final_name: str, artifact: ArtifactRow) -> str:
    """Copy into a new temp file in the folder while hashing; returns its name once size and sha256 match."""
    temp_name, temp_fd = create_temp(folder_fd, final_name)
    try:
        size, digest = copy_and_hash(source_fd, temp_fd)
        os.fsync(temp_fd)
    except BaseException:
        os.close(temp_fd)
        remove_quietly(temp_name, folder_fd)
        raise
    os.close(temp_fd)
    mismatch = None
    if size != artifact.size:
        mismatch = f"does not match its recorded size ({artifact.size} bytes, the store has {size}): {TAMPERED}"
    elif digest != artifact.sha256:
        mismatch = f"does not match its recorded sha256: {TAMPERED}"
    if mismatch:
        remove_quietly(temp_name, folder_fd)
        raise DownloadRefused(visible(f"artifact {artifact.name} {mismatch}"))
    return temp_name


def create_temp(folder_fd: int, final_name: str) -> tuple[str, int]:
    temp_name = f".{final_name}.{secrets.token_hex(6)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return temp_name, os.open(temp_name, flags, 0o666, dir_fd=folder_fd)  # the umask applies, as for any new file


def copy_and_hash(source_fd: int, target_fd: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := os.read(source_fd, CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(target_fd, view):]
    return size, digest.hexdigest()


def remove_quietly(name: str, folder_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        pass


def refused(name: object, why: str) -> DownloadRefused:
    return DownloadRefused(visible(f"artifact {name} is refused: {why}"))
