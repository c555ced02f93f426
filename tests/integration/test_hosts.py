"""genq across hosts: a head (PostgreSQL, Redis, an S3 server), two GPU nodes and a laptop, each a
network namespace of its own (tests/hosts.py), with no folder shared between them.

The laptop submits a sweep; both nodes run its jobs; every artifact lands in the S3 server and
downloads on the laptop with its sha256 matching. Then the faults a cluster meets: a node's link cut
mid-job, the S3 server stopped, a node killed outright, Redis restarted empty; after each, nothing is
lost and nothing runs twice (the soak's audit rules).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.faults import wait_for
from tests.hosts import BUCKET, CLUSTER, LEASE_S, OFFICE, VAE, Bed, Cluster, namespaces_refused

pytestmark = pytest.mark.integration

REFUSED = namespaces_refused()
if REFUSED:
    pytest.skip(f"no several-host test bed on this machine: {REFUSED}", allow_module_level=True)

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


def test_the_laptop_reaches_only_the_head(cluster):
    head_office, head_cluster = cluster.head.address(OFFICE), cluster.head.address(CLUSTER)
    assert cluster.laptop.reachable(head_office, cluster.redis.port)
    assert not cluster.laptop.reachable(head_cluster, cluster.redis.port)  # another network: no route
    assert not cluster.laptop.reachable(cluster.nodes[0].address(), 22, timeout=0.5)
    assert cluster.nodes[0].reachable(head_cluster, cluster.postgres.port)


def test_a_sweep_from_the_laptop_runs_on_both_nodes_and_every_artifact_downloads(cluster):
    # Given 20 jobs from the laptop: a sweep of 17 tiny SD jobs, and a short train-vae with an
    # interpolation and samples that wait for it
    group = cluster.client_json("submit", "sd", *cluster.sd(), "--prompt", "a lighthouse", "--sweep", "seed=1..17")
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
    for job_id in ids:
        listed = cluster.client_json("artifacts", job_id)
        assert listed and all(a["path"].startswith(f"s3://{BUCKET}/artifacts/") for a in listed), listed
        ended_once(cluster, job_id)  # and each artifact downloads with its sha256
    for node in cluster.nodes:
        pid = cluster.workers[node.name].pid
        home = Path(f"/proc/{pid}/root{cluster.bed.private}/genq-home")  # its private folder, as it sees it
        stored = [p for p in home.rglob("*") if p.is_file() and p.suffix in (".png", ".pt", ".safetensors", ".json")]
        assert not (home / "artifacts").exists() and stored == [], stored


def runs_of(cluster: Cluster, job_id: str) -> list[dict]:
    return [e for e in cluster.client_json("show", job_id)["events"] if e["to"] == "running"]


def ended_once(cluster: Cluster, job_id: str) -> dict:
    """The job's final state, checked against the audit's rules: it ended once, its artifacts are one
    attempt's, and each downloads on the laptop with its recorded sha256 (nothing half-indexed)."""
    audit = cluster.audit(job_id, cluster.laptop.folder / "out")
    assert audit.problems == [], (job_id, audit.problems)
    return audit.shown


def test_a_node_cut_off_mid_job_is_taken_over_and_its_late_writes_are_refused(cluster):
    # Given a long job running on one node
    job_id = cluster.client("submit", "sd", *cluster.long_sd()).stdout.strip()
    victim = cluster.node_running(job_id)
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
    wait_for(lambda: any(mark in log.read_bytes()[seen:] for mark in (b"was taken over", b"no longer its", b"is no longer at attempt")), 60,
             f"the cut node's run to be refused; its log:\n{log.read_bytes()[seen:].decode(errors='replace')[-4000:]}")
    wait_for(lambda: any(w["name"].startswith(f"{victim.name}:") and w["state"] in ("idle", "busy")
                         for w in cluster.client_json("workers")), 60, "the cut node to rejoin")
    later = cluster.client_json("submit", "sd", *cluster.sd(), "--prompt", "after the cut", "--sweep", "seed=1..6")
    jobs = cluster.wait_all([job["id"] for job in later["jobs"]])
    assert [job["status"] for job in jobs] == ["succeeded"] * 6


def test_a_node_killed_outright_loses_nothing(cluster):
    job_id = cluster.client("submit", "sd", *cluster.long_sd()).stdout.strip()
    victim = cluster.node_running(job_id)
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
    group = cluster.client_json("submit", "sd", *cluster.sd(), "--prompt", "before the wipe", "--sweep", "seed=1..8")
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
    group = cluster.client_json("submit", "sd", *cluster.sd(40, 128), "--prompt", "through the outage",
                                "--sweep", "seed=1..8")
    ids = [job["id"] for job in group["jobs"]]
    wait_for(lambda: cluster.client_json("status", ids[0])["status"] != "queued", 120, "the first job to start")
    cluster.s3.send_signal(19)
    try:
        time.sleep(30)
    finally:
        cluster.s3.send_signal(18)
    thawed = datetime.now(timezone.utc)

    # Then every job ended once: succeeded (its uploads retried) or failed in one line; whatever is
    # indexed downloads verified, and nothing was run twice
    jobs = cluster.wait_all(ids)
    for job in jobs:
        ended_once(cluster, job["id"])
        assert job["status"] in ("succeeded", "failed"), job
        if job["status"] == "failed":
            assert "\n" not in job["error"], job["error"]
    assert sum(job["status"] == "succeeded" for job in jobs) >= 1
    assert any(datetime.fromisoformat(job["finished_at"]) > thawed for job in jobs), "no job was in flight in the outage"
