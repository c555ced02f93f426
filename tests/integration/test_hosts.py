"""genq across hosts: a head (PostgreSQL, Redis, an S3 server), two GPU nodes and a laptop, each a
network namespace of its own (tests/hosts.py), with no folder shared between them.

The laptop submits a sweep; both nodes run its jobs; every artifact lands in the S3 server and
downloads on the laptop with its sha256 matching. Then the faults a cluster meets: a node's link cut
mid-job, the S3 server stopped, a node killed outright, Redis restarted empty; after each, nothing is
lost and nothing runs twice (the soak's audit rules).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.faults import PrivatePostgres, PrivateRedis
from tests.hosts import CLUSTER, OFFICE, Bed, Host, namespaces_refused

pytestmark = pytest.mark.integration

REFUSED = namespaces_refused()
if REFUSED:
    pytest.skip(f"no several-host test bed on this machine: {REFUSED}", allow_module_level=True)

S3_PORT, BUCKET = 5000, "genq"
AWS = {"AWS_ACCESS_KEY_ID": "genq-test", "AWS_SECRET_ACCESS_KEY": "genq-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
LEASE_S = 6
SD = ["--model", "/tmp/models/tiny", "--width", "64", "--height", "64", "--steps", "2"]
VAE = ["--epochs", "1", "--train-limit", "256", "--capacity", "8"]
WORKER_READY_S = 180


class Cluster:
    """The bed's hosts and services, and genq's environment as each host sees it."""

    def __init__(self, bed: Bed, tiny_model: Path, data_root: Path) -> None:
        self.bed = bed
        self.head = bed.add_host("head", {CLUSTER: 1, OFFICE: 1}, private_tmp=False)
        self.nodes = [bed.add_host(f"node{i}", {CLUSTER: 10 + i}) for i in (1, 2)]
        self.laptop = bed.add_host("laptop", {OFFICE: 21})
        # Inputs every host holds a copy of, in its own /tmp: the model, MNIST
        staged = bed.root / "inputs"
        shutil.copytree(tiny_model, staged / "tiny")
        shutil.copytree(data_root / "MNIST" / "raw", staged / "MNIST" / "raw")
        self.inputs = f"mkdir -p /tmp/models /tmp/data && cp -r {staged}/tiny /tmp/models/ && cp -r {staged}/MNIST /tmp/data/"
        self.postgres = PrivatePostgres(netns=self.head.netns)
        self.database = self.postgres.create_database("genq").rsplit("/", 1)[1]
        self.redis = PrivateRedis(netns=self.head.netns)
        self.s3 = None
        self.start_s3()
        self.head.run([str(BIN / "python"), "-c", (
            "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:%d').create_bucket(Bucket=%r)"
            % (S3_PORT, BUCKET))], env=self.env_for(self.head))
        self.client("db", "upgrade")
        self.workers: dict[str, object] = {}

    # -- what each host is told ------------------------------------------------------------
    def env_for(self, host: Host) -> dict[str, str]:
        head = self.head.address(CLUSTER if CLUSTER in host.addresses else OFFICE)
        return {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
            "GENQ_HOME": "/tmp/genq-home",
            "GENQ_DATABASE_URL": f"postgresql+psycopg://postgres@{head}:{self.postgres.port}/{self.database}",
            "GENQ_BROKER_URL": f"redis://{head}:{self.redis.port}/0",
            "GENQ_ARTIFACT_ROOT": f"s3://{BUCKET}/artifacts",
            "AWS_ENDPOINT_URL": f"http://{head}:{S3_PORT}", **AWS,
            "GENQ_QUEUE": "hosts", "GENQ_DATA_ROOT": "/tmp/data", "GENQ_DEVICE": "cpu", "GENQ_TORCH_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "GENQ_LEASE": str(LEASE_S), "GENQ_HEARTBEAT_INTERVAL": "0.5",
            "GENQ_RECONCILE_INTERVAL": "1", "GENQ_RESEND_AFTER": "3", "GENQ_RETRY_FOR": "20",
        }

    def start_s3(self) -> None:
        self.s3 = self.head.start([str(BIN / "moto_server"), "-H", "0.0.0.0", "-p", str(S3_PORT)], "s3.log",
                                  env=self.env_for(self.head))
        deadline = time.monotonic() + 60
        while not self.head.reachable("127.0.0.1", S3_PORT):
            assert self.s3.poll() is None and time.monotonic() < deadline, Path(self.s3.log_path).read_text()
            time.sleep(0.3)

    def stop_s3(self) -> None:
        self.head.stop(self.s3)

    # -- the laptop ------------------------------------------------------------------------
    def client(self, *args: str, check: bool = True, timeout: float = 300):
        return self.laptop.run([str(BIN / "client"), *args], env=self.env_for(self.laptop), setup=self.inputs,
                               check=check, timeout=timeout)

    def client_json(self, *args: str, **kwargs):
        return json.loads(self.client(*args, "--json", **kwargs).stdout)

    # -- the nodes -------------------------------------------------------------------------
    def start_worker(self, node: Host):
        env = {**self.env_for(node), "GENQ_WORKER_NAME": node.name}
        process = node.start([str(BIN / "genq-worker"), "--processes", "1"], f"worker-{len(node.processes)}.log",
                             env=env, setup=self.inputs)
        self.workers[node.name] = process
        return process

    def wait_ready(self, node: Host) -> None:
        process = self.workers[node.name]
        deadline = time.monotonic() + WORKER_READY_S
        while b" ready." not in Path(process.log_path).read_bytes():
            assert process.poll() is None, f"{node.name}'s worker exited:\n{Path(process.log_path).read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{node.name}'s worker not ready:\n{Path(process.log_path).read_text()[-3000:]}"
            time.sleep(0.5)

    def wait_all(self, ids: list[str], timeout: float = 600) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.client_json("status", job_id) for job_id in ids]
            if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
                return jobs
            assert time.monotonic() < deadline, [(j["id"][:8], j["status"]) for j in jobs if j["status"] not in ("succeeded",)]
            time.sleep(2)


@pytest.fixture(scope="module")
def cluster(tiny_model, mnist_root):
    with Bed() as bed:
        cluster = Cluster(bed, tiny_model, Path(mnist_root))
        for node in cluster.nodes:
            cluster.start_worker(node)
        for node in cluster.nodes:
            cluster.wait_ready(node)
        yield cluster
        for node in cluster.nodes:
            for process in node.processes:
                if process.poll() is None:
                    node.stop(process)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_laptop_reaches_only_the_head(cluster):
    head_office, head_cluster = cluster.head.address(OFFICE), cluster.head.address(CLUSTER)
    assert cluster.laptop.reachable(head_office, cluster.redis.port)
    assert not cluster.laptop.reachable(head_cluster, cluster.redis.port)  # another network: no route
    assert not cluster.laptop.reachable(cluster.nodes[0].address(), 22, timeout=0.5)
    assert cluster.nodes[0].reachable(head_cluster, cluster.postgres.port)


def test_a_sweep_from_the_laptop_runs_on_both_nodes_and_every_artifact_downloads(cluster):
    # Given 20 jobs from the laptop: a sweep of 17 tiny SD jobs, and a short train-vae with an
    # interpolation and samples that wait for it
    group = cluster.client_json("submit", "sd", *SD, "--prompt", "a lighthouse", "--sweep", "seed=1..17")
    model = cluster.client("submit", "train-vae", *VAE).stdout.strip()
    after = [cluster.client("submit", "interpolate", "--model", model, "--from-digit", "7", "--to-digit", "1").stdout.strip(),
             cluster.client("submit", "sample-vae", "--model", model).stdout.strip()]
    ids = [job["id"] for job in group["jobs"]] + [model, *after]
    assert len(ids) == 20

    # When both nodes run them
    jobs = cluster.wait_all(ids)

    # Then every job succeeded, once, and both nodes ran some
    assert [job["status"] for job in jobs] == ["succeeded"] * 20, [(j["id"][:8], j["status"], j["error"]) for j in jobs]
    ran_on = {job["worker"].split(":")[0] for job in jobs}
    assert ran_on == {"node1", "node2"}, ran_on
    workers = {w["name"].split(":")[0] for w in cluster.client_json("workers")}
    assert {"node1", "node2"} <= workers
    for job_id in ids:
        runs = [e for e in cluster.client_json("show", job_id)["events"] if e["to"] == "running"]
        assert len(runs) == 1, (job_id, runs)

    # And every artifact is in the S3 server, none on a node's disk, and downloads on the laptop verified
    out = cluster.laptop.folder / "out"
    for job_id in ids:
        listed = cluster.client_json("artifacts", job_id)
        assert listed and all(a["path"].startswith(f"s3://{BUCKET}/artifacts/") for a in listed), listed
        cluster.client("artifacts", job_id, "--download", str(out / job_id))
        for artifact in listed:
            assert sha256(out / job_id / artifact["name"]) == artifact["sha256"]
    for node in cluster.nodes:
        pid = cluster.workers[node.name].pid
        home = Path(f"/proc/{pid}/root/tmp/genq-home")
        stored = [p for p in home.rglob("*") if p.is_file() and p.suffix in (".png", ".pt", ".safetensors", ".json")]
        assert not (home / "artifacts").exists() and stored == [], stored


LONG = ["--model", "/tmp/models/tiny", "--width", "256", "--height", "256", "--steps", "60", "--prompt", "a long one"]


def runs_of(cluster: Cluster, job_id: str) -> list[dict]:
    return [e for e in cluster.client_json("show", job_id)["events"] if e["to"] == "running"]


def ended_once(cluster: Cluster, job_id: str) -> dict:
    """The job's final state, checked against the audit's rules: it ended once, and every artifact it
    lists downloads on the laptop with its recorded sha256 (nothing half-indexed)."""
    shown = cluster.client_json("show", job_id)
    ends = [e for e in shown["events"] if e["to"] in ("succeeded", "failed", "cancelled")]
    assert len(ends) == 1, (job_id, ends)
    out = cluster.laptop.folder / "out" / job_id
    listed = cluster.client_json("artifacts", job_id)
    if listed:
        cluster.client("artifacts", job_id, "--download", str(out))
        for artifact in listed:
            assert sha256(out / artifact["name"]) == artifact["sha256"]
    return shown


def node_running(cluster: Cluster, job_id: str, timeout: float = 120) -> Host:
    deadline = time.monotonic() + timeout
    while (status := cluster.client_json("status", job_id))["status"] != "running":
        assert status["status"] == "queued" and time.monotonic() < deadline, status
        time.sleep(0.5)
    return next(node for node in cluster.nodes if status["worker"].startswith(f"{node.name}:"))


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.5)
    return value


def test_a_node_cut_off_mid_job_is_taken_over_and_its_late_writes_are_refused(cluster):
    # Given a long job running on one node
    job_id = cluster.client("submit", "sd", *LONG).stdout.strip()
    victim = node_running(cluster, job_id)
    other = next(node for node in cluster.nodes if node is not victim)
    log = Path(cluster.workers[victim.name].log_path)
    seen = log.stat().st_size

    # When its link is cut until the other node has taken the job over (a lease later)
    victim.cut()
    try:
        wait_for(lambda: (s := cluster.client_json("status", job_id))["status"] == "running"
                 and s["worker"].startswith(f"{other.name}:"), LEASE_S + 60, "the other node to take the job over")
    finally:
        victim.restore()

    # Then the job ends once, succeeded on the other node, with attempt 2's artifacts only
    [final] = cluster.wait_all([job_id])
    shown = ended_once(cluster, job_id)
    assert final["status"] == "succeeded" and final["worker"].startswith(f"{other.name}:"), final
    assert [e["worker"].split(":")[0] for e in runs_of(cluster, job_id)] == [victim.name, other.name]
    assert all(f"{job_id}/2/" in a["path"] for a in cluster.client_json("artifacts", job_id)), shown["artifacts"]
    # And the cut node's late writes were refused by the fencing (its run stopped, or its end was not
    # recorded), and it rejoined: registered live, and running jobs again
    wait_for(lambda: any(mark in log.read_bytes()[seen:] for mark in (b"was taken over", b"no longer its")), 60,
             "the cut node's run to be refused")
    wait_for(lambda: any(w["name"].startswith(f"{victim.name}:") and w["state"] in ("idle", "busy")
                         for w in cluster.client_json("workers")), 60, "the cut node to rejoin")
    later = cluster.client_json("submit", "sd", *SD, "--prompt", "after the cut", "--sweep", "seed=1..6")
    jobs = cluster.wait_all([job["id"] for job in later["jobs"]])
    assert [job["status"] for job in jobs] == ["succeeded"] * 6


def test_a_node_killed_outright_loses_nothing(cluster):
    job_id = cluster.client("submit", "sd", *LONG).stdout.strip()
    victim = node_running(cluster, job_id)
    victim.stop(cluster.workers[victim.name], sig=9)  # the whole supervisor group, as a power cut
    try:
        [final] = cluster.wait_all([job_id])
        ended_once(cluster, job_id)
        assert final["status"] == "succeeded" and not final["worker"].startswith(f"{victim.name}:"), final
        assert len(runs_of(cluster, job_id)) == 2
    finally:
        cluster.start_worker(victim)
        cluster.wait_ready(victim)


def test_redis_restarted_empty_loses_no_job(cluster):
    group = cluster.client_json("submit", "sd", *SD, "--prompt", "before the wipe", "--sweep", "seed=1..8")
    ids = [job["id"] for job in group["jobs"]]
    cluster.redis.restart()  # every waiting message is gone; SQL still has the jobs
    jobs = cluster.wait_all(ids)
    assert [job["status"] for job in jobs] == ["succeeded"] * 8, [(j["id"][:8], j["status"], j["error"]) for j in jobs]
    for job_id in ids:
        ended_once(cluster, job_id)
        assert len(runs_of(cluster, job_id)) == 1


def test_the_s3_server_frozen_for_30_s_leaves_no_half_indexed_artifact(cluster):
    # Given jobs running while the S3 server stops answering for 30 s (SIGSTOP: moto keeps its objects
    # in memory, so a stopped process, not a killed one)
    group = cluster.client_json("submit", "sd", *SD, "--prompt", "through the outage", "--sweep", "seed=1..6")
    ids = [job["id"] for job in group["jobs"]]
    node_running(cluster, ids[0])
    cluster.s3.send_signal(19)
    try:
        time.sleep(30)
    finally:
        cluster.s3.send_signal(18)

    # Then every job ended once: succeeded (its uploads retried) or failed in one line; whatever is
    # indexed downloads verified, and nothing was run twice
    jobs = cluster.wait_all(ids)
    for job in jobs:
        ended_once(cluster, job["id"])
        assert job["status"] in ("succeeded", "failed"), job
        if job["status"] == "failed":
            assert "\n" not in job["error"], job["error"]
    assert sum(job["status"] == "succeeded" for job in jobs) >= 1
