"""Real services for the tests: Redis at GENQ_TEST_REDIS_URL, PostgreSQL at GENQ_TEST_POSTGRES_URL
(a fresh database per test session), SQLite files, an S3-compatible HTTP server on 127.0.0.1 (moto's
server mode, one per test session; a fresh bucket per test), and real `genq-worker` processes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from genq.core.config import load_settings

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("GENQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get("GENQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
WORKER_START_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    from genq.core.vae.data import default_data_root

    root = default_data_root(REPO).absolute()
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(f"MNIST not found under {root}: set GENQ_DATA_ROOT")
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class S3Server:
    """moto's S3 server over HTTP on 127.0.0.1; clients reach it through the standard AWS variables only."""

    port: int
    server: object = None

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}", "AWS_ACCESS_KEY_ID": "genq-test",
                "AWS_SECRET_ACCESS_KEY": "genq-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> "S3Server":
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def stop(self) -> None:
        """The server goes; its buckets and objects stay in this process's memory for a start() on the same port."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self):
        import boto3

        env = self.env
        return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])

    def new_bucket(self) -> str:
        name = f"genq-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def s3_root(s3_server, monkeypatch) -> str:
    """A fresh bucket; the AWS variables in this process's environment point at the test server."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.new_bucket()}/artifacts"


@pytest.fixture
def artifact_env(request) -> dict[str, str]:
    """What the `genq` fixture adds to its environment for the artifact store: nothing (a folder in its
    home), or with `@pytest.mark.parametrize("artifact_env", ["folder", "s3"], indirect=True)` an S3 root."""
    if getattr(request, "param", "folder") == "folder":
        return {}
    return {"GENQ_ARTIFACT_ROOT": request.getfixturevalue("s3_root"), **request.getfixturevalue("s3_server").env}


# A store-independent artifact test: the folder on both databases (as before), the object store on one.
ON_EVERY_ARTIFACT_STORE = pytest.mark.parametrize(("database_url", "artifact_env"),
                                                  [("sqlite", "folder"), ("postgresql", "folder"), ("sqlite", "s3")],
                                                  indirect=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"genq_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion model in diffusers format, written once per test session."""
    from genq.core.sd.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("sd") / "tiny-sd")


def migrated(url: str) -> str:
    from genq.core.store.db import upgrade

    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Each test that takes this runs against both backends. PostgreSQL tables are emptied first."""
    if request.param == "sqlite":
        return migrated(f"sqlite:///{tmp_path / 'genq.sqlite3'}")
    url = migrated(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE webhook_attempts, webhook_deliveries, job_logs, job_events, metrics, artifacts, jobs, workers, groups, users"))
    engine.dispose()
    return url


@dataclass
class Genq:
    """One isolated genq installation: its own home, database, and Redis queue."""

    env: dict[str, str]
    home: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    def client(self, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600):
        result = subprocess.run([str(BIN / "client"), *args], env={**self.env, **(env or {})}, cwd=self.home,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"client {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def client_json(self, *args: str, **kwargs):
        return json.loads(self.client(*args, "--json", **kwargs).stdout)

    def start_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        log_path = self.home / f"worker-{len(self.workers)}.log"
        log = open(log_path, "wb")
        name = f"{socket.gethostname()}-{len(self.workers)}"  # its one CPU worker registers as <name>:cpu0
        process = subprocess.Popen([str(BIN / "genq-worker")], env={**self.env, "GENQ_WORKER_NAME": name, **(env or {})},
                                   cwd=self.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process.log_path = log_path
        process.worker_name = f"{name}:cpu0"
        self.workers.append(process)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while b" ready." not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    @property
    def object_store(self) -> bool:
        return "://" in self.env.get("GENQ_ARTIFACT_ROOT", "")

    def artifact_paths(self, job_id: str) -> dict[str, Path]:
        """A job's artifacts as local files: where they lie in a folder store; copies downloaded (and
        verified) by `client artifacts --download` from an object store."""
        if not self.object_store:
            return {a["name"]: Path(a["path"]) for a in self.client_json("artifacts", job_id)}
        folder = self.home.parent / "downloads" / job_id
        return {a["name"]: Path(a["path"]) for a in self.client_json("artifacts", job_id, "--download", str(folder))}

    def store(self):
        from genq.core.store.db import make_engine, session_factory
        from genq.core.store.jobs import JobStore

        return JobStore(session_factory(make_engine(self.env["GENQ_DATABASE_URL"])), load_settings(self.env).queue_for)

    def wait_until(self, predicate, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def genq(tmp_path, database_url, mnist_root, artifact_env):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        **artifact_env,
        "GENQ_HOME": str(home),
        "GENQ_DATABASE_URL": database_url,
        "GENQ_BROKER_URL": REDIS_URL,
        "GENQ_QUEUE": f"genq-test-{uuid.uuid4().hex[:12]}",  # no test sees another's messages
        "GENQ_DATA_ROOT": str(mnist_root),
        "GENQ_HEARTBEAT_INTERVAL": "0.5",
        "GENQ_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    installation = Genq(env=env, home=home)
    yield installation
    installation.stop_workers()
    import redis

    broker = redis.Redis.from_url(REDIS_URL)
    leftovers = broker.keys(f"*{env['GENQ_QUEUE']}*")  # messages no worker took, bindings
    if leftovers:
        broker.delete(*leftovers)
    broker.close()
