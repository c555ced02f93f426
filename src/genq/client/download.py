"""`client artifacts JOB --download DIR`: copy a job's artifacts out of the store, verified, only into DIR.

The index row is not trusted: the name is validated again, its recorded path must have the store's
layout (`<job id>/<name>` in a folder, `<job id>/<attempt>/<token>/<name>` in an object store), a
folder store's file is reached one folder at a time without following a symbolic link, an object is
streamed from the store, and the copy must match the recorded size and sha256. In DIR every subfolder is opened the
same way, so nothing is written outside DIR. All artifacts are copied to temp files and verified
first; only when every one matches are they renamed into place, so a refused download leaves no
file in DIR (only subfolders it created, empty).
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from genq.client.visible import visible
from genq.core.store.artifacts import (FOLDER_FLAGS, ArtifactNameError, ArtifactStore, ArtifactUnreadable,
                                       validate_artifact_name, why_unopenable)
from genq.core.store.models import ArtifactRow

CHUNK_BYTES = 1 << 20
TAMPERED = "the file was changed after the job wrote it"


class DownloadRefused(Exception):
    """One artifact cannot be copied safely; the message is one printable line naming it."""


@dataclass
class Staged:
    """A verified copy in a temp file beside its final name, waiting to be renamed into place."""

    folder_fd: int
    temp_name: str
    final_name: str


def download_artifacts(artifacts: list[ArtifactRow], store: ArtifactStore, folder: Path) -> list[Path]:
    """Copy and verify every artifact, then rename them all into `folder`; returns their paths there."""
    folder.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    staged: list[Staged] = []
    try:
        for artifact in artifacts:
            staged.append(stage_artifact(artifact, store, root_fd))
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


def stage_artifact(artifact: ArtifactRow, store: ArtifactStore, target_root_fd: int) -> Staged:
    """Copy one artifact from the store to a temp file under the target folder and verify it."""
    name = checked_name(artifact, store)
    *subfolders, final_name = name.split("/")
    source = open_source(store, artifact, name)
    try:
        folder_fd = open_target_folder(target_root_fd, subfolders, name)
        try:
            temp_name = copy_verified(source, folder_fd, final_name, artifact)
        except BaseException:
            os.close(folder_fd)
            raise
    finally:
        source.close()
    return Staged(folder_fd, temp_name, final_name)


def checked_name(artifact: ArtifactRow, store: ArtifactStore) -> str:
    try:
        name = validate_artifact_name(artifact.name)
    except ArtifactNameError as exc:
        raise refused(artifact.name, str(exc)) from None
    try:
        store.check_recorded(artifact.job_id, name, artifact.relative_path)
    except ArtifactUnreadable as exc:
        raise refused(name, str(exc)) from None
    return name


def open_source(store: ArtifactStore, artifact: ArtifactRow, name: str) -> BinaryIO:
    """The artifact's bytes, streamed from the store (its row checked first by checked_name)."""
    try:
        return store.open(artifact.relative_path)
    except ArtifactUnreadable as exc:
        raise refused(name, str(exc)) from None


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


def copy_verified(source: BinaryIO, folder_fd: int, final_name: str, artifact: ArtifactRow) -> str:
    """Copy into a new temp file in the folder while hashing; returns its name once size and sha256 match."""
    temp_name, temp_fd = create_temp(folder_fd, final_name)
    try:
        size, digest = copy_and_hash(source, temp_fd, artifact.name)
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


def copy_and_hash(source: BinaryIO, target_fd: int, name: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := read_chunk(source, name):
        digest.update(chunk)
        size += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(target_fd, view):]
    return size, digest.hexdigest()


def read_chunk(source: BinaryIO, name: str) -> bytes:
    try:
        return source.read(CHUNK_BYTES)
    except ArtifactUnreadable as exc:
        raise refused(name, str(exc)) from None


def remove_quietly(name: str, folder_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        pass


def refused(name: object, why: str) -> DownloadRefused:
    return DownloadRefused(visible(f"artifact {name} is refused: {why}"))
