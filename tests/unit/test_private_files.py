"""Safe outputs without processes: the broker password in load_settings, redaction in `client config`,
the SQLite file's mode, and artifacts that follow the umask."""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest

from genq.core.config import load_settings, redact_url
from genq.core.store.artifacts import current_umask, write_atomically
from genq.core.store.db import make_engine


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def home_with_password(tmp_path) -> Path:
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "password").write_text("s3cret-_X\n")
    return tmp_path


@pytest.mark.parametrize("given, expected", [
    (None, "redis://:s3cret-_X@127.0.0.1:6379/0"),
    ("redis://127.0.0.1:7001/2", "redis://:s3cret-_X@127.0.0.1:7001/2"),
    ("redis://localhost:7001/0", "redis://:s3cret-_X@localhost:7001/0"),
    ("redis://[::1]:7001/0", "redis://:s3cret-_X@[::1]:7001/0"),
    ("redis://:theirs@127.0.0.1:7001/0", "redis://:theirs@127.0.0.1:7001/0"),  # credentials given: kept
    ("redis://redis:6379/0", "redis://redis:6379/0"),  # not this machine: not ours
    ("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
])
def test_a_local_broker_url_carries_the_homes_password(home_with_password, given, expected):
    env = {"GENQ_HOME": str(home_with_password)} | ({"GENQ_BROKER_URL": given} if given else {})
    assert load_settings(env).broker_url == expected


def test_without_a_password_file_the_broker_url_is_as_given(tmp_path):
    assert load_settings({"GENQ_HOME": str(tmp_path)}).broker_url == "redis://127.0.0.1:6379/0"


def test_the_broker_url_client_up_recorded_is_used_while_genq_broker_url_is_unset(home_with_password):
    (home_with_password / "broker" / "url").write_text("redis://127.0.0.1:7002/3\n")
    assert load_settings({"GENQ_HOME": str(home_with_password)}).broker_url == "redis://:s3cret-_X@127.0.0.1:7002/3"
    given = {"GENQ_HOME": str(home_with_password), "GENQ_BROKER_URL": "redis://127.0.0.1:7001/0"}
    assert load_settings(given).broker_url == "redis://:s3cret-_X@127.0.0.1:7001/0"  # the variable wins


@pytest.mark.parametrize("recorded", ["redis://10.0.0.5:7002/0", "redis://:theirs@127.0.0.1:7002/0",
                                      "rediss://127.0.0.1:7002/0", "redis://127.0.0.1:port/0", "not a url",
                                      "redis://127.0.0.1:7002/0 x", ""])
def test_a_recorded_broker_url_that_is_not_a_local_one_without_credentials_is_ignored(home_with_password, recorded):
    (home_with_password / "broker" / "url").write_text(recorded + "\n")
    assert load_settings({"GENQ_HOME": str(home_with_password)}).broker_url == "redis://:s3cret-_X@127.0.0.1:6379/0"


def test_the_default_home_is_the_users_genq_folder(tmp_path):
    settings = load_settings({"HOME": str(tmp_path)})
    assert settings.home == tmp_path / ".genq"
    assert settings.database_url == f"sqlite:///{tmp_path / '.genq' / 'genq.sqlite3'}"
    assert settings.artifact_root == tmp_path / ".genq" / "artifacts"
    assert load_settings({"HOME": str(tmp_path), "GENQ_HOME": str(tmp_path / "elsewhere")}).home == tmp_path / "elsewhere"


def test_describe_redacts_passwords_in_urls(home_with_password):
    settings = load_settings({"GENQ_HOME": str(home_with_password),
                              "GENQ_DATABASE_URL": "postgresql+psycopg://genq:db-pass@pg:5432/genq"})
    described = settings.describe()
    assert described["broker_url"] == "redis://:***@127.0.0.1:6379/0"
    assert described["database_url"] == "postgresql+psycopg://genq:***@pg:5432/genq"
    assert "s3cret" not in str(described) and "db-pass" not in str(described)


@pytest.mark.parametrize("url, shown", [
    ("sqlite:////abs/genq.sqlite3", "sqlite:////abs/genq.sqlite3"),
    ("redis://user@host/0", "redis://user@host/0"),
    ("redis://host/0?password=x&db=1", "redis://host/0?password=***&db=1"),
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
    ("gpu", "gpu"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_sqlite_store_is_created_0600_in_a_0700_folder(tmp_path):
    db = tmp_path / "new" / "genq.sqlite3"
    with umask(0o022):
        engine = make_engine(f"sqlite:///{db}")
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            connection.commit()
        engine.dispose()
    assert mode(db.parent) == 0o700 and mode(db) == 0o600
    for companion in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if companion.exists():
            assert mode(companion) == 0o600


def test_an_existing_sqlite_file_and_folder_keep_their_mode(tmp_path):
    os.chmod(tmp_path, 0o750)
    db = tmp_path / "genq.sqlite3"
    db.touch()
    os.chmod(db, 0o640)
    make_engine(f"sqlite:///{db}").dispose()
    assert mode(db) == 0o640 and mode(tmp_path) == 0o750


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_artifacts_follow_the_umask(tmp_path, mask, expected):
    target = tmp_path / "job" / "a.png"
    with umask(mask):
        assert current_umask() == mask
        write_atomically(target, b"data")
    assert mode(target) == expected and target.read_bytes() == b"data"
