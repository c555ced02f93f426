"""Both artifact-store backends behind the one interface: a folder, and S3 (moto's real HTTP server)."""
from __future__ import annotations

import hashlib

import pytest

from genq.core.store.artifacts import ArtifactStoreError, ArtifactUnreadable, FolderStore, open_artifact_store
from genq.core.store.object_store import ObjectStore

JOB = "0b6f2a52-0d53-4cf4-9d38-1f0c5c2d1e11"


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path):
    if request.param == "folder":
        return open_artifact_store(tmp_path / "artifacts")
    return open_artifact_store(request.getfixturevalue("s3_root"))


def test_the_root_picks_the_backend(tmp_path, s3_root):
    assert isinstance(open_artifact_store(tmp_path), FolderStore)
    assert isinstance(open_artifact_store(s3_root), ObjectStore)


def test_a_published_artifact_streams_back_with_its_size_and_sha256(store):
    data = b"x" * 3_000_000
    stored, staged = store.stage(JOB, 1, "images/a.png", data, None)
    staged.publish()
    staged.discard()  # a no-op once published
    assert (stored.size, stored.sha256, stored.media_type) == (len(data), hashlib.sha256(data).hexdigest(), "image/png")
    store.check_recorded(JOB, "images/a.png", stored.relative_path)
    with store.open(stored.relative_path) as source:
        assert source.read() == data
    assert store.url(stored.relative_path).startswith(str(store.root) + "/")


def test_an_unpublished_artifact_is_never_seen(store):
    stored, staged = store.stage(JOB, 1, "a.json", b"{}", None)
    staged.discard()
    with pytest.raises(ArtifactUnreadable, match="'a.json' is missing in the artifact store"):
        store.open(stored.relative_path).close()


def test_an_object_write_is_under_a_key_of_its_own_attempt(s3_root, s3_server):
    # Given two runs of one job (attempt 1 superseded by attempt 2) writing the same name
    store = open_artifact_store(s3_root)
    first, first_staged = store.stage(JOB, 1, "model.bin", b"attempt 1", None)
    second, second_staged = store.stage(JOB, 2, "model.bin", b"attempt 2", None)
    # Then each upload has its own key, and the one never published (its row refused) is removed
    assert first.relative_path.startswith(f"{JOB}/1/") and second.relative_path.startswith(f"{JOB}/2/")
    second_staged.publish()
    first_staged.discard()
    bucket = s3_root.removeprefix("s3://").split("/")[0]
    assert s3_server.keys(bucket) == [f"artifacts/{second.relative_path}"]


@pytest.mark.parametrize("path", ["{job}/a.json", "{job}/1/0123456789abcdef/other.json", "{job}/x/0123456789abcdef/a.json",
                                  "../{job}/1/0123456789abcdef/a.json"])
def test_a_forged_object_key_is_refused(s3_root, path):
    with pytest.raises(ArtifactUnreadable, match="is not"):
        open_artifact_store(s3_root).check_recorded(JOB, "a.json", path.format(job=JOB))


def test_a_local_copy_of_an_object_is_verified(s3_root, s3_server, tmp_path):
    store = open_artifact_store(s3_root)
    stored = store.put(JOB, "checkpoint.bin", b"weights")
    copy = store.local_file(stored.relative_path, stored.size, stored.sha256, tmp_path / "scratch")
    assert copy.read_bytes() == b"weights" and copy.is_relative_to(tmp_path / "scratch")
    bucket, prefix = s3_root.removeprefix("s3://").split("/", 1)
    s3_server.client().put_object(Bucket=bucket, Key=f"{prefix}/{stored.relative_path}", Body=b"Weights")
    with pytest.raises(ArtifactUnreadable, match="does not match its recorded size and sha256"):
        store.local_file(stored.relative_path, stored.size, stored.sha256, tmp_path / "other")
    assert store.local_file(f"{JOB}/1/0123456789abcdef/gone.bin", 1, "0" * 64, tmp_path / "scratch") is None


def test_a_missing_bucket_is_one_line_at_the_check(s3_root):
    store = open_artifact_store(s3_root.replace("genq-test-", "no-such-bucket-"))
    with pytest.raises(ArtifactStoreError) as caught:
        store.check()
    assert "no such bucket" in str(caught.value) and "\n" not in str(caught.value)
    open_artifact_store(s3_root).check()  # the fixture's bucket exists: the probe is written and removed



def test_a_large_artifact_is_uploaded_in_parts_and_read_back_whole(s3_root, s3_server):
    # s3fs uploads data of twice its 50 MiB chunk or more as a multipart upload, completed only at the end
    data = bytes(range(256)) * (105 * 2**20 // 256)
    store = open_artifact_store(s3_root)
    stored = store.put(JOB, "model.safetensors", data)
    bucket, prefix = s3_root.removeprefix("s3://").split("/", 1)
    head = s3_server.client().head_object(Bucket=bucket, Key=f"{prefix}/{stored.relative_path}")
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-3")  # three parts
    digest = hashlib.sha256()
    with store.open(stored.relative_path) as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == stored.sha256


@pytest.mark.parametrize("url, library", [("gs://bucket/prefix", "gcsfs"), ("az://container/prefix", "adlfs")])
def test_a_store_whose_library_is_not_installed_is_one_line_at_the_check(url, library):
    try:
        __import__(library)
        pytest.skip(f"{library} is installed here")
    except ImportError:
        pass
    with pytest.raises(ArtifactStoreError, match=rf"^GENQ_ARTIFACT_ROOT {url}: its library is not installed \(.*{library}"):
        open_artifact_store(url).check()
