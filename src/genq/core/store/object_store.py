"""The object-store backend of the artifact store: S3 (and MinIO, Ceph, R2) or anything fsspec reaches.

GENQ_ARTIFACT_ROOT=s3://bucket/prefix; the endpoint and credentials come from the store's standard
variables only (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION for S3).

An artifact is uploaded whole (s3fs uploads large data in parts and completes the upload only at the
end) under `<job id>/<attempt>/<token>/<name>`: a key no other write ever uses, so a superseded run's
late upload cannot replace anything a row points to. The upload is checked (its size) before the row
that indexes it is written in the run's fenced transaction; a write whose row is refused removes its
object. Readers stream the object and check it against the row's size and sha256.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from genq.core.store.artifacts import (ArtifactStore, ArtifactStoreError, ArtifactStoreUnavailable, ArtifactUnreadable,
                                       StoredFile, describe, is_plain_component, validate_artifact_name)

log = logging.getLogger("genq.artifacts")
T = TypeVar("T")
TOKEN_BYTES = 8  # 16 hex digits: each write's own key
CHUNK_BYTES = 1 << 20
CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL"


def transient_errors() -> tuple[type[BaseException], ...]:
    """Failures that can pass: the endpoint not answering, a connection dropped, a time-out."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, asyncio.TimeoutError]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError
        found += [BotoConnectionError, HTTPClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError
        found.append(ClientError)
    except ImportError:
        pass
    return tuple(found)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ObjectStore(ArtifactStore):
    """Objects under `<url>/<job id>/<attempt>/<token>/<name>`."""

    def __init__(self, url: str) -> None:
        self.root = url
        self._connected = None  # (the fsspec filesystem, the root as its path: bucket/prefix), on first use

    def _connect(self):
        if self._connected is None:
            import fsspec

            try:
                # no instance shared with other stores, no cached listings: every answer is the store's own
                self._connected = fsspec.core.url_to_fs(self.root, skip_instance_cache=True, use_listings_cache=False)
            except ImportError as exc:
                raise ArtifactStoreError(f"GENQ_ARTIFACT_ROOT {self.root}: its library is not installed ({exc})") from None
        return self._connected

    @property
    def fs(self):
        return self._connect()[0]

    def _key(self, relative_path: str) -> str:
        return f"{self._connect()[1]}/{relative_path}"

    def _call(self, action: Callable[[], T], what: str) -> T:
        """`action()`, its failures said in one line: unusable store (ArtifactStoreError), an outage
        (ArtifactStoreUnavailable, transient), or a missing object (FileNotFoundError, kept)."""
        try:
            return action()
        except (ArtifactStoreError, ArtifactUnreadable):
            raise
        except FileNotFoundError:
            raise
        except PermissionError as exc:
            raise ArtifactStoreError(f"{what}: {self.root} refused access ({one_line(exc)}); {CREDENTIALS_HINT}") from None
        except transient_errors() as exc:
            raise ArtifactStoreUnavailable(f"{what}: {self.root} did not answer ({one_line(exc)})") from None
        except Exception as exc:
            if type(exc).__name__ == "NoCredentialsError":
                raise ArtifactStoreError(f"{what}: no credentials for {self.root}; {CREDENTIALS_HINT}") from None
            if isinstance(exc, OSError):  # s3fs's form of other service errors (a 5xx past its own retries)
                raise ArtifactStoreUnavailable(f"{what}: {self.root} failed ({one_line(exc)})") from None
            raise

    # -- writes ---------------------------------------------------------------------------
    def stage(self, job_id: str, attempt: int, name: str, data: bytes,
              media_type: str | None = None) -> tuple[StoredFile, "UploadedObject"]:
        validate_artifact_name(name)
        relative_path = f"{job_id}/{attempt}/{secrets.token_hex(TOKEN_BYTES)}/{name}"
        key = self._key(relative_path)
        what = f"upload of artifact {name}"
        # A failed upload leaves no object (a multipart upload is completed only at its end); one whose
        # answer was lost may have left one, never indexed, under a key no other write uses.
        self._call(lambda: self.fs.pipe_file(key, data), what)
        try:
            stored_size = self._call(lambda: self.fs.size(key), what)
        except BaseException:
            self.remove(relative_path)
            raise
        if stored_size != len(data):
            self.remove(relative_path)
            raise ArtifactStoreUnavailable(f"{what}: {self.root} holds {stored_size} of its {len(data)} bytes")
        return describe(name, relative_path, data, media_type), UploadedObject(self, relative_path)

    def remove(self, relative_path: str) -> None:
        try:
            self.fs.rm_file(self._key(relative_path))
        except Exception as exc:
            log.warning("could not remove %s/%s: %s", self.root, relative_path, one_line(exc))

    def check(self) -> None:
        """Write and remove a probe object: the bucket exists and these credentials may write there."""
        probe = f".genq-probe-{secrets.token_hex(TOKEN_BYTES)}"
        what = f"GENQ_ARTIFACT_ROOT {self.root}"
        try:
            self._call(lambda: self.fs.pipe_file(self._key(probe), b"genq"), what)
        except FileNotFoundError:
            raise ArtifactStoreError(f"{what}: no such bucket (create it, or correct the URL)") from None
        self.remove(probe)

    # -- reads ----------------------------------------------------------------------------
    def check_recorded(self, job_id: str, name: str, relative_path: str) -> None:
        if not is_plain_component(job_id):
            raise ArtifactUnreadable(f"its job id {job_id!r} is not a key part")
        layout = rf"{re.escape(job_id)}/[0-9]+/[0-9a-f]{{{2 * TOKEN_BYTES}}}/{re.escape(name)}"
        if not re.fullmatch(layout, relative_path):
            raise ArtifactUnreadable(f"its recorded key {relative_path!r} is not {job_id}/<attempt>/<token>/{name}")

    def open(self, relative_path: str) -> BinaryIO:
        what = f"reading {relative_path}"
        try:
            return ObjectReader(self._call(lambda: self.fs.open(self._key(relative_path), "rb"), what), self, what)
        except FileNotFoundError:
            raise ArtifactUnreadable(f"{relative_path.rsplit('/', 1)[-1]!r} is missing in the artifact store") from None
        except (ArtifactStoreError, ArtifactStoreUnavailable) as exc:
            raise ArtifactUnreadable(str(exc)) from None

    def url(self, relative_path: str) -> str:
        return f"{self.root}/{relative_path}"

    def local_file(self, relative_path: str, size: int, sha256: str, scratch: Path) -> Path | None:
        """A verified copy under `scratch` (the run's own temp folder, removed when the run ends)."""
        target = scratch / relative_path
        if target.exists():
            return target
        what = f"reading {relative_path}"
        try:
            source = self._call(lambda: self.fs.open(self._key(relative_path), "rb"), what)
        except FileNotFoundError:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        digest, copied = hashlib.sha256(), 0
        try:
            with source, open(part, "wb") as out:
                while chunk := self._call(lambda: source.read(CHUNK_BYTES), what):
                    digest.update(chunk)
                    copied += len(chunk)
                    out.write(chunk)
            if copied != size or digest.hexdigest() != sha256:
                raise ArtifactUnreadable(f"{self.url(relative_path)} does not match its recorded size and sha256: "
                                         "the object was changed after the job wrote it")
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return target


class UploadedObject:
    """An uploaded object no row points to yet. The row is its publication; unpublished, it is removed."""

    def __init__(self, store: ObjectStore, relative_path: str) -> None:
        self.store, self.relative_path = store, relative_path
        self.published = False

    def publish(self) -> None:
        self.published = True

    def discard(self) -> None:
        if not self.published:
            self.store.remove(self.relative_path)


class ObjectReader:
    """An object opened for reading whose failures mid-stream are one line (ArtifactUnreadable)."""

    def __init__(self, source, store: ObjectStore, what: str) -> None:
        self._source, self._store, self._what = source, store, what

    def read(self, size: int = -1) -> bytes:
        try:
            return self._store._call(lambda: self._source.read(size), self._what)
        except (ArtifactStoreError, ArtifactStoreUnavailable, FileNotFoundError) as exc:
            raise ArtifactUnreadable(str(exc)) from None

    def __getattr__(self, attribute):  # seek, tell, readable, ... for PIL and friends
        return getattr(self._source, attribute)

    def close(self) -> None:
        self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

