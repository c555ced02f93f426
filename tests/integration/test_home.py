"""The default GENQ_HOME is the user's (~/.genq), whatever the current folder; a command that only reads
says there is no store yet instead of making an empty one. Through the real CLI, GENQ_HOME unset."""
from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import BIN

pytestmark = pytest.mark.integration

READING = [["list"], ["status", "abcd1234"], ["show", "abcd1234"], ["wait", "abcd1234"], ["logs", "abcd1234"],
           ["artifacts", "abcd1234"], ["workers"], ["group", "betas"]]


def run(user: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`client ARGS` in `cwd` for a user whose HOME is `user`, with no GENQ_* variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENQ_")} | {"HOME": str(user)}
    return subprocess.run([str(BIN / "client"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def everything_in(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders for p in folder.rglob("*"))


def test_reading_commands_say_there_is_no_store_and_create_nothing(tmp_path):
    # Given a user with no genq store, working in a folder of their own
    user, cwd = tmp_path / "user", tmp_path / "work"
    user.mkdir()
    cwd.mkdir()
    store = user / ".genq" / "genq.sqlite3"

    # When each command that only reads runs (two at a time)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda args: run(user, cwd, *args), READING))

    # Then each says in one line that there is no store at ~/.genq yet and how to make one, exit 1
    for args, result in zip(READING, results):
        assert result.returncode == 1, (args, result.stderr)
        assert result.stdout == "", args
        assert result.stderr == (f"Error: no store at {store} yet: `client up` makes one "
                                 "(`client db upgrade` just the store)\n"), args
    # And nothing was created: no file, no folder, neither in the home nor in the current folder
    assert everything_in(user, cwd) == []


def test_a_store_left_in_the_current_folder_by_an_older_genq_is_named(tmp_path):
    # Given a store an older genq made in ./.genq (its GENQ_HOME's default then), and none in ~/.genq
    user, cwd = tmp_path / "user", tmp_path / "work"
    user.mkdir()
    (cwd / ".genq").mkdir(parents=True)
    (cwd / ".genq" / "genq.sqlite3").write_bytes(b"")
    before = everything_in(user, cwd)
    # When the user lists their jobs there
    result = run(user, cwd, "list")
    # Then the one line says where the older store is and how to use it, and nothing is created
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: no store at {user / '.genq' / 'genq.sqlite3'} yet: `client up` makes one (`client db upgrade` just "
        f"the store); {cwd / '.genq' / 'genq.sqlite3'} is an older genq's: GENQ_HOME={cwd / '.genq'} uses it"]
    assert everything_in(user, cwd) == before


def test_the_default_home_follows_the_user_from_any_folder(tmp_path):
    # Given a user who makes the store in one folder
    user, first, second = tmp_path / "user", tmp_path / "first", tmp_path / "second"
    for folder in (user, first, second):
        folder.mkdir()
    made = run(user, first, "db", "upgrade")
    assert made.returncode == 0, made.stderr
    home = user / ".genq"
    assert (home / "genq.sqlite3").is_file()

    # When they read it from another folder
    listed = run(user, second, "list")
    config = json.loads(run(user, second, "config", "--json").stdout)

    # Then it is the same store in ~/.genq, with the artifacts in ~/.genq/artifacts, and neither folder got one
    assert listed.returncode == 0 and listed.stdout == "no jobs\n", listed.stderr
    assert config["home"] == str(home) and config["database_url"] == f"sqlite:///{home / 'genq.sqlite3'}"
    assert config["artifact_root"] == str(home / "artifacts")
    assert everything_in(first, second) == []
