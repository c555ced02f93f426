"""client/download.py on a real artifact store, a temp folder or moto's S3 server on 127.0.0.1 (the rows
are the SQL model, unsaved). The tests that do not depend on the store run on both."""
from __future__ import annotations

import os

import pytest

from genq.client.download import DownloadRefused, download_artifacts
from genq.core.store.artifacts import ArtifactStore, FolderStore, open_artifact_store
from genq.core.store.models import ArtifactRow

JOB = "0b6f2a52-0d53-4cf4-9d38-1f0c5c2d1e11"


def stored(store, name: str, data: bytes) -> ArtifactRow:
    store = store if isinstance(store, ArtifactStore) else FolderStore(store)
    put = store.put(JOB, name, data)
    return ArtifactRow(job_id=JOB, name=put.name, relative_path=put.relative_path, media_type=put.media_type,
                    size=put.size, sha256=put.sha256)


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


@pytest.fixture
def store(tmp_path):
    """A folder store's root, for the tests of what only a folder has (symbolic links)."""
    return tmp_path / "artifacts"


@pytest.fixture(params=["folder", "s3"])
def any_store(request, tmp_path) -> ArtifactStore:
    if request.param == "folder":
        return open_artifact_store(tmp_path / "artifacts")
    return open_artifact_store(request.getfixturevalue("s3_root"))


def overwrite(store: ArtifactStore, row: ArtifactRow, data: bytes) -> None:
    """Change an artifact's bytes behind genq's back (a file written, an object put again)."""
    if isinstance(store, FolderStore):
        (store.root / row.relative_path).write_bytes(data)
    else:
        store.fs.pipe_file(f"{store.root.removeprefix('s3://')}/{row.relative_path}", data)


def delete(store: ArtifactStore, row: ArtifactRow) -> None:
    if isinstance(store, FolderStore):
        (store.root / row.relative_path).unlink()
    else:
        store.fs.rm_file(f"{store.root.removeprefix('s3://')}/{row.relative_path}")


def test_copies_every_artifact_including_subfolders(any_store, tmp_path):
    rows = [stored(any_store, "a.json", b"{}"), stored(any_store, "images/0.png", b"png bytes")]
    out = tmp_path / "out"
    assert download_artifacts(rows, any_store, out) == [out / "a.json", out / "images/0.png"]
    assert (out / "a.json").read_bytes() == b"{}" and (out / "images/0.png").read_bytes() == b"png bytes"
    assert files_under(out) == ["a.json", "images/0.png"]  # no temp files left


def test_a_changed_file_is_refused_and_nothing_lands_in_the_folder(any_store, tmp_path):
    rows = [stored(any_store, "a.json", b"{}"), stored(any_store, "b.png", b"original")]
    overwrite(any_store, rows[1], b"Original")  # same size, other bytes
    out = tmp_path / "out"
    with pytest.raises(DownloadRefused, match=r"^artifact b.png does not match its recorded sha256: the file was"):
        download_artifacts(rows, any_store, out)
    assert files_under(out) == []  # a.json verified, but nothing is put in place unless all are


def test_a_file_of_another_size_is_refused(any_store, tmp_path):
    rows = [stored(any_store, "b.png", b"original")]
    overwrite(any_store, rows[0], b"longer than before")
    with pytest.raises(DownloadRefused, match="does not match its recorded size"):
        download_artifacts(rows, any_store, tmp_path / "out")
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("change", [
    {"relative_path": "../../etc/passwd"},
    {"name": "../../etc/passwd", "relative_path": f"{JOB}/../../etc/passwd"},
    {"name": "other.png"},
])
def test_a_forged_row_is_refused(any_store, tmp_path, change):
    row = stored(any_store, "b.png", b"original")
    for key, value in change.items():
        setattr(row, key, value)
    with pytest.raises(DownloadRefused, match="is refused"):
        download_artifacts([row], any_store, tmp_path / "out")
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("link", ["file", "subfolder", "job folder"])
def test_a_symlink_in_the_store_is_refused(store, tmp_path, link):
    outside = tmp_path / "outside"
    (outside / "images").mkdir(parents=True)
    (outside / "images" / "0.png").write_bytes(b"secret")
    (outside / JOB / "images").mkdir(parents=True)
    (outside / JOB / "images" / "0.png").write_bytes(b"secret")
    row = stored(store, "images/0.png", b"secret")
    path = {"file": store / JOB / "images" / "0.png", "subfolder": store / JOB / "images",
            "job folder": store / JOB}[link]
    os.rename(path, tmp_path / "moved")
    path.symlink_to({"file": outside / "images" / "0.png", "subfolder": outside / "images",
                     "job folder": outside / JOB}[link])
    with pytest.raises(DownloadRefused, match=f"'{path.name}' in the artifact store is a symbolic link"):
        download_artifacts([row], FolderStore(store), tmp_path / "out")
    assert files_under(tmp_path / "out") == []


def test_a_symlinked_subfolder_of_the_target_is_refused(store, tmp_path):
    row = stored(store, "images/0.png", b"png")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "images").symlink_to(elsewhere)
    with pytest.raises(DownloadRefused, match="'images' in the download folder is a symbolic link"):
        download_artifacts([row], FolderStore(store), out)
    assert list(elsewhere.iterdir()) == []


def test_a_symlink_at_the_target_name_is_replaced_not_followed(store, tmp_path):
    row = stored(store, "a.json", b"{}")
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("keep me")
    (out / "a.json").symlink_to(victim)
    download_artifacts([row], FolderStore(store), out)
    assert victim.read_text() == "keep me"
    assert not (out / "a.json").is_symlink() and (out / "a.json").read_bytes() == b"{}"


def test_a_missing_file_is_refused(any_store, tmp_path):
    row = stored(any_store, "a.json", b"{}")
    delete(any_store, row)
    with pytest.raises(DownloadRefused, match="'a.json' is missing in the artifact store"):
        download_artifacts([row], any_store, tmp_path / "out")


def test_escapes_in_a_forged_name_are_made_visible(any_store, tmp_path):
    row = stored(any_store, "a.json", b"{}")
    row.name = "a\x1b]0;pwned\x07.json"
    with pytest.raises(DownloadRefused) as refused:
        download_artifacts([row], any_store, tmp_path / "out")
    message = str(refused.value)
    assert "\x1b" not in message and "\x07" not in message and "\\x1b]0;pwned\\x07" in message
    assert "\n" not in message
