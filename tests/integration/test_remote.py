"""Remote clients: a `client` (and genq.Client) whose environment has only GENQ_ADDRESS and a user's token,
a wrong database URL, a closed broker port and an artifact root it cannot read, does everything over
HTTP against a real `client server`, a real worker, Redis and PostgreSQL, and says what local mode says."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import BIN, free_port
from tests.integration.test_server import add_user, start_server, stop

pytestmark = pytest.mark.integration

FAST_SD = ["--width", "64", "--height", "64", "--steps", "2"]


def remote_env(tmp_path: Path, address: str, token: str | None) -> dict[str, str]:
    """Only the server's address and a token: every other way to genq's state is wrong or closed."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "laptop"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "GENQ_HOME": str(tmp_path / "laptop" / ".genq"), "GENQ_ADDRESS": address,
           "GENQ_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nowhere",
           "GENQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
           "GENQ_ARTIFACT_ROOT": str(blocked / "artifacts")}
    if token is not None:
        env["GENQ_TOKEN"] = token
    return env


def client(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "client"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def together(*calls):
    """Run independent CLI processes at once (each is a real subprocess); their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


@pytest.fixture
def server(genq):
    started = start_server(genq)
    yield started
    stop(started.process)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_client_with_only_an_address_and_a_token_does_everything_over_http_as_local_mode_does(
        genq, server, tiny_model, tmp_path):
    alice, bob = add_user(genq, "alice"), add_user(genq, "bob")
    remote = remote_env(tmp_path, server.url, alice)
    model = ["--model", str(tiny_model)]

    # Given alice's limit of no queued jobs, her submit is refused as locally: exit 2, the same line, nothing stored
    genq.client("users", "set", "alice", "--max-queued", "0")
    over, local_over, bad, local_bad = together(
        lambda: client(remote, "submit", "sd", *model, "--prompt", "x", *FAST_SD),
        lambda: genq.client("submit", "sd", *model, "--prompt", "x", *FAST_SD, env={"GENQ_USER": "alice"}, check=False),
        # and bad input, which is the CLI's usage error, exit 2, word for word
        lambda: client(remote, "submit", "sd", *model, "--prompt", "x", "--width", "100"),
        lambda: genq.client("submit", "sd", *model, "--prompt", "x", "--width", "100", check=False))
    assert (over.returncode, over.stdout, over.stderr) == (2, "", local_over.stderr) and local_over.returncode == 2
    assert (bad.returncode, bad.stderr) == (2, local_bad.stderr) and "--width" in bad.stderr
    genq.client("users", "set", "alice", "--no-max-queued")
    assert genq.client_json("list") == []

    # When alice submits with --wait and a worker runs it
    genq.start_worker()
    submitted = client(remote, "submit", "sd", *model, "--prompt", "a lighthouse", "--num-images", "2", *FAST_SD, "--wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    assert " succeeded " in submitted.stdout

    # Then every read says what local mode says about the same job
    commands = (["status", job_id], ["show", job_id, "--json"], ["logs", job_id], ["list"], ["artifacts", job_id])
    answers = together(*[lambda c=command: client(remote, *c) for command in commands],
                       *[lambda c=command: genq.client(*c) for command in commands])
    for command, answer, local in zip(commands, answers, answers[len(commands):]):
        assert (answer.returncode, answer.stdout) == (0, local.stdout), command
    local_status = answers[len(commands)].stdout
    # And its artifacts download, each matching its recorded sha256
    downloaded = json.loads(client(remote, "artifacts", job_id, "--download", str(tmp_path / "out"), "--json").stdout)
    assert len(downloaded) >= 2
    for item in downloaded:
        assert Path(item["path"]).parent == tmp_path / "out"
        assert hashlib.sha256(Path(item["path"]).read_bytes()).hexdigest() == item["sha256"]

    # When alice submits a sweep and waits for its group
    swept = client(remote, "submit", "sd", *model, "--prompt", "p", *FAST_SD, "--sweep", "seed=1,2", "--group-name", "pair")
    assert swept.returncode == 0, swept.stderr
    waited = client(remote, "wait", "--group", "pair")
    assert (waited.returncode, waited.stdout) == (0, f"group {swept.stdout.strip()}: 2 succeeded\n")
    # Then the group is the local one, and its report is drawn from what the server sends
    report, local_group = together(lambda: client(remote, "group", "pair", "--json", "--report", str(tmp_path / "report")),
                                   lambda: genq.client("group", "pair", "--json"))
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    assert summary.pop("report") == [str(tmp_path / "report" / name) for name in ("table.csv", "grid.png")]
    assert summary == json.loads(local_group.stdout)
    with open(tmp_path / "report" / "table.csv", newline="") as table:
        assert [row["id"] for row in csv.DictReader(table)] == [job["id"] for job in summary["jobs"]]

    # And genq.Client over the same environment gives the same Job API
    script = ("import genq, hashlib, json; c = genq.Client(); j = c.job(%r); a = j.artifacts()[0]; "
              "print(json.dumps([type(c).__name__, j.status, a.name, hashlib.sha256(a.read()).hexdigest(), a.path]))"
              % job_id)
    api = subprocess.run([sys.executable, "-c", script], env=remote, capture_output=True, text=True, timeout=120)
    assert api.returncode == 0, api.stderr
    kind, status, name, digest, path = json.loads(api.stdout)
    assert (kind, status, path) == ("RemoteClient", "succeeded", None)
    assert digest == next(item["sha256"] for item in downloaded if item["name"] == name)

    # And bob finds none of it and cancels nothing: the "not found" line local mode gives
    as_bob = {**remote, "GENQ_TOKEN": bob}
    bobs = (["status", job_id], ["cancel", job_id], ["artifacts", job_id, "--download", str(tmp_path / "bob")])
    local_only = (["users", "list"], ["up"])  # and commands that need this machine say so, exit 2
    *refusals, group_refusal, users, up = together(*[lambda c=command: client(as_bob, *c) for command in bobs],
                                                   lambda: client(as_bob, "cancel", "--group", "pair"),
                                                   *[lambda c=command: client(remote, *c) for command in local_only])
    for command, refused in zip(bobs, refusals):
        assert (refused.returncode, refused.stderr) == (1, f"Error: no job {job_id!r}\n"), command
    assert group_refusal.returncode == 1 and group_refusal.stderr.startswith("Error: no group 'pair'")
    assert not (tmp_path / "bob").exists()
    for command, answer in zip(local_only, (users, up)):
        assert answer.returncode == 2 and len(answer.stderr.splitlines()) == 1, command
        assert "not through a server" in answer.stderr

    # When alice logs in (a 0600 file), a shell without GENQ_ADDRESS and GENQ_TOKEN works through it
    logged_in = client(remote, "login", server.url, "--token", alice)
    assert logged_in.returncode == 0, logged_in.stderr
    login_file = tmp_path / "config" / "genq" / "login.json"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    bare = {key: value for key, value in remote.items() if key not in ("GENQ_ADDRESS", "GENQ_TOKEN")}
    assert client(bare, "status", job_id).stdout == local_status
    assert client(bare, "logout").returncode == 0 and not login_file.exists()

    # When alice's token is revoked, it is one line and exit 1
    genq.client("users", "revoke", "alice")
    revoked = client(remote, "status", job_id)
    assert revoked.returncode == 1 and revoked.stderr.splitlines() == [
        f"Error: the genq server at {server.url} refused the token: this token was revoked"]
    assert client(remote, "login", server.url, "--token", alice).returncode == 1 and not login_file.exists()


def test_a_server_that_does_not_answer_is_one_line_and_exit_1_and_a_worker_refuses_an_address(tmp_path):
    address = f"http://127.0.0.1:{free_port()}"
    env = remote_env(tmp_path, address, "some-token")
    commands = (["status", "abcd1234"], ["submit", "sd", "--model", "m", "--prompt", "x", "--wait"],
                ["login", address, "--token", "t"])
    *answers, no_token, worker = together(
        *[lambda c=command: client(env, *c) for command in commands],
        lambda: client({**env, "GENQ_TOKEN": ""}, "list"),
        lambda: subprocess.run([str(BIN / "genq-worker")], env=env, capture_output=True, text=True, timeout=120))
    for command, answer in zip(commands, answers):
        assert answer.returncode == 1 and answer.stderr.splitlines() == [
            f"Error: cannot reach the genq server at {address}: [Errno 111] Connection refused"], command
    assert no_token.returncode == 2 and len(no_token.stderr.splitlines()) == 1 and "GENQ_TOKEN" in no_token.stderr
    assert worker.returncode == 2 and len(worker.stderr.splitlines()) == 1 and "GENQ_ADDRESS" in worker.stderr
