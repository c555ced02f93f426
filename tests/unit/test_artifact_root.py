"""GENQ_ARTIFACT_ROOT: a folder, or an object-store URL (s3://bucket/prefix) reached through fsspec."""
from __future__ import annotations

from pathlib import Path

import pytest

from genq.core.config import load_settings


def artifact_root(value: str, tmp_path: Path):
    return load_settings({"HOME": str(tmp_path), "GENQ_ARTIFACT_ROOT": value}).artifact_root


def test_an_s3_url_stays_a_url_and_never_becomes_a_local_folder_named_s3(tmp_path):
    # Before object stores were known, this was Path.cwd() / "s3:/bucket/prefix": jobs "succeeded" on one host.
    assert artifact_root("s3://bucket/some/prefix", tmp_path) == "s3://bucket/some/prefix"
    assert artifact_root("s3://bucket/", tmp_path) == "s3://bucket"


def test_a_folder_stays_an_absolute_path(tmp_path):
    assert artifact_root(str(tmp_path / "art"), tmp_path) == tmp_path / "art"
    assert artifact_root(f"file://{tmp_path / 'art'}", tmp_path) == tmp_path / "art"


@pytest.mark.parametrize("value, says", [
    ("nosuch://bucket/prefix", "scheme 'nosuch' is not an object store genq knows"),
    ("s3://", "names no bucket"),
    ("s3:///prefix", "names no bucket"),
    ("s3://bucket/a/../b", "'..'"),
])
def test_a_bad_url_is_one_clear_line(value, says, tmp_path):
    with pytest.raises(ValueError) as caught:
        artifact_root(value, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("GENQ_ARTIFACT_ROOT") and says in message
