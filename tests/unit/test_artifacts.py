from __future__ import annotations

import hashlib

import pytest

from genq.core.store.artifacts import ArtifactNameError, FolderStore, current_umask, validate_artifact_name


@pytest.mark.parametrize("name", ["model.safetensors", "images/image-0.png", "a_b-c.1.json"])
def test_good_names_pass(name):
    assert validate_artifact_name(name) == name


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "a//b", "./a", "a/.", ".hidden",
                                  "sp ace.png", "x" * 201])
def test_bad_names_are_refused(name):
    with pytest.raises(ArtifactNameError):
        validate_artifact_name(name)


def test_put_writes_atomically_and_indexes_size_and_sha256(tmp_path):
    store = FolderStore(tmp_path)
    stored = store.put("job-1", "images/a.png", b"first")
    stored = store.put("job-1", "images/a.png", b"second version")
    path = tmp_path / "job-1" / "images" / "a.png"
    assert path.read_bytes() == b"second version"
    assert stored.size == 14 and stored.sha256 == hashlib.sha256(b"second version").hexdigest()
    assert stored.relative_path == "job-1/images/a.png" and stored.media_type == "image/png"
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]  # no temp files left behind
    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # readable by whom the umask lets read


def test_put_refuses_an_escaping_name(tmp_path):
    with pytest.raises(ArtifactNameError):
        FolderStore(tmp_path / "root").put("job-1", "../../outside", b"x")
    assert not (tmp_path / "outside").exists()
