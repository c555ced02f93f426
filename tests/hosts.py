"""A test bed of several hosts on this machine: Linux network namespaces joined by veth pairs.

    cluster 10.77.1.0/24              office 10.77.2.0/24
    head    10.77.1.1  ─┐          ┌─ head    10.77.2.1
    node1   10.77.1.11 ─┼ bridge   │
    node2   10.77.1.12 ─┘          └─ laptop  10.77.2.21

The two bridges live in a namespace of their own (the switch), so no traffic touches this machine's
own network: the head (PostgreSQL, Redis, the S3 server) is on both, the GPU nodes only on the
cluster, the laptop only on the office network, so it reaches the head's address and nothing else.
Every node and the laptop also get a private folder: a tmpfs each mounts, in its own mount
namespace, on the same path (`Bed.private`, an empty folder for everyone else), so the same path holds
each host's own files. Their GENQ_HOME, temp folder (TMPDIR) and copies of their inputs live there,
and no folder is shared between hosts. Cutting a host's link sets its port on the switch down; restoring it brings it back.

Needs root and iproute2 (`ip netns`); `namespaces_refused()` says why not where they are missing.
Everything made here is removed on close (and at interpreter exit): processes, namespaces, veths.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults import PrivatePostgres, PrivateRedis

BIN = Path(sys.executable).parent
CLUSTER, OFFICE = "cluster", "office"
SUBNETS = {CLUSTER: "10.77.1", OFFICE: "10.77.2"}
PRIVATE_SIZE = "4g"
_OPEN: list["Bed"] = []


def namespaces_refused() -> str | None:
    """Why this machine cannot build the bed, in a few words; None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"gqprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"the kernel refused a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass(eq=False)
class Host:
    """One host: a network namespace, its addresses, its private folder (the bed's, for logs)."""

    bed: "Bed"
    name: str
    netns: str
    addresses: dict[str, str]  # network -> address
    folder: Path
    private: bool
    ports: dict[str, str] = field(default_factory=dict)  # network -> its port's name on the switch
    processes: list[subprocess.Popen] = field(default_factory=list)

    def address(self, network: str | None = None) -> str:
        return self.addresses[network] if network else next(iter(self.addresses.values()))

    def argv(self, command: list[str], setup: str = "") -> list[str]:
        """`command` run on this host: in its network namespace (whose mount namespace `ip netns exec`
        makes private), with its own private folder where it has one, after `setup` (a shell line)."""
        prelude = []
        if self.private:
            folder = shlex.quote(str(self.bed.private))
            prelude.append(f"mount -t tmpfs -o size={PRIVATE_SIZE},mode=1777 tmpfs {folder} && mkdir -p {folder}/tmp")
        if setup:
            prelude.append(setup)
        script = " && ".join([*prelude, 'exec "$@"'])
        return ["ip", "netns", "exec", self.netns, "sh", "-c", script, "sh", *command]

    def run(self, command: list[str], env: dict[str, str] | None = None, timeout: float = 300, setup: str = "",
            check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(command, setup), env=env, capture_output=True, text=True, timeout=timeout,
                                cwd=self.folder)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name}: {shlex.join(command)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def start(self, command: list[str], log_name: str, env: dict[str, str] | None = None, setup: str = "") -> subprocess.Popen:
        """A long-running process on this host, in a process group of its own, logging to its folder."""
        log_path = self.folder / log_name
        with open(log_path, "ab") as log:
            process = subprocess.Popen(self.argv(command, setup), env=env, cwd=self.folder, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        process.log_path = log_path
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen, sig: int = 15, timeout: float = 30) -> None:
        """Signal the process's group and wait; SIGKILL if it does not go in time."""
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, 9)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)

    def cut(self) -> None:
        """The host's cables pulled: its ports on the switch go down (its processes go on)."""
        for port in self.ports.values():
            ip("-n", self.bed.switch, "link", "set", "dev", port, "down")

    def restore(self) -> None:
        for port in self.ports.values():
            ip("-n", self.bed.switch, "link", "set", "dev", port, "up")

    def reachable(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to address:port opens."""
        probe = (f"import socket; s = socket.create_connection(({address!r}, {port}), timeout={timeout}); s.close()")
        return self.run(["python3", "-c", probe], check=False, timeout=timeout + 10).returncode == 0


class Bed:
    """The namespaces, bridges and veth pairs of one test's hosts. A context manager."""

    def __init__(self, root: Path | None = None) -> None:
        self.tag = f"{os.getpid() % 100000:05d}{int(time.monotonic() * 1000) % 100:02d}"
        self.root = Path(root or tempfile.mkdtemp(prefix="genq-hosts-", dir="/var/tmp"))
        self.private = self.root / "private"  # where each private host mounts its own folder
        self.private.mkdir()
        self.switch = f"gq{self.tag}-switch"
        self.hosts: dict[str, Host] = {}
        self._veths = 0
        _OPEN.append(self)
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        for bridge in SUBNETS:
            ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", bridge, "up")

    def __enter__(self) -> "Bed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_host(self, name: str, numbers: dict[str, int], private: bool = True) -> Host:
        """A host with one interface on each network of `numbers` (network -> last byte of its address)."""
        netns = f"gq{self.tag}-{name}"
        ip("netns", "add", netns)
        ip("-n", netns, "link", "set", "lo", "up")
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        host = Host(self, name, netns, {}, folder, private)
        for index, (network, number) in enumerate(numbers.items()):
            self._veths += 1
            inside, port = f"gq{self.tag}{self._veths:02d}h", f"gq{self.tag}{self._veths:02d}s"
            ip("link", "add", inside, "type", "veth", "peer", "name", port)
            ip("link", "set", inside, "netns", netns)
            ip("link", "set", port, "netns", self.switch)
            ip("-n", netns, "link", "set", inside, "name", f"eth{index}")
            address = f"{SUBNETS[network]}.{number}"
            ip("-n", netns, "addr", "add", f"{address}/24", "dev", f"eth{index}")
            ip("-n", netns, "link", "set", f"eth{index}", "up")
            ip("-n", self.switch, "link", "set", port, "master", network)
            ip("-n", self.switch, "link", "set", port, "up")
            host.addresses[network], host.ports[network] = address, port
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for process in host.processes:
                if process.poll() is None:
                    host.stop(process, 9, timeout=10)
        for netns in [*(h.netns for h in self.hosts.values()), self.switch]:
            # Processes still inside (daemons that left their group) go with their namespace's last reference.
            pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self.hosts.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        if self in _OPEN:
            _OPEN.remove(self)


S3_PORT, BUCKET = 5000, "genq"
AWS = {"AWS_ACCESS_KEY_ID": "genq-test", "AWS_SECRET_ACCESS_KEY": "genq-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
LEASE_S = 6
VAE = ["--epochs", "1", "--train-limit", "256", "--capacity", "8"]
WORKER_READY_S = 180


class Cluster:
    """genq on the bed: the head's services (PostgreSQL, Redis, moto's S3 server), a worker on each node,
    the laptop's `client`; and genq's environment as each host sees it."""

    def __init__(self, bed: Bed, tiny_model: Path, data_root: Path) -> None:
        self.bed = bed
        self.head = bed.add_host("head", {CLUSTER: 1, OFFICE: 1}, private=False)
        self.nodes = [bed.add_host(f"node{i}", {CLUSTER: 10 + i}) for i in (1, 2)]
        self.laptop = bed.add_host("laptop", {OFFICE: 21})
        # Inputs every host holds a copy of, in its own private folder: the model, MNIST
        staged = bed.root / "inputs"
        shutil.copytree(tiny_model, staged / "tiny")
        shutil.copytree(data_root / "MNIST" / "raw", staged / "MNIST" / "raw")
        own = bed.private
        self.model = str(own / "models" / "tiny")
        self.inputs = (f"mkdir -p {own}/models {own}/data && cp -r {staged}/tiny {own}/models/"
                       f" && cp -r {staged}/MNIST {own}/data/")
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
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            **self.private_env(host),
            "GENQ_DATABASE_URL": f"postgresql+psycopg://postgres@{head}:{self.postgres.port}/{self.database}",
            "GENQ_BROKER_URL": f"redis://{head}:{self.redis.port}/0",
            "GENQ_ARTIFACT_ROOT": f"s3://{BUCKET}/artifacts",
            "AWS_ENDPOINT_URL": f"http://{head}:{S3_PORT}", **AWS,
            "GENQ_QUEUE": "hosts", "GENQ_DEVICE": "cpu", "GENQ_TORCH_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "GENQ_LEASE": str(LEASE_S), "GENQ_HEARTBEAT_INTERVAL": "0.5",
            "GENQ_RECONCILE_INTERVAL": "1", "GENQ_RESEND_AFTER": "3", "GENQ_RETRY_FOR": "20",
        }

    def private_env(self, host: Host) -> dict[str, str]:
        """Where a host keeps its own files: its private folder, or (the head) a folder of its own."""
        own = self.bed.private if host.private else host.folder
        return {"HOME": str(own), "TMPDIR": str(own / "tmp") if host.private else str(host.folder),
                "GENQ_HOME": str(own / "genq-home"), "GENQ_DATA_ROOT": str(own / "data")}

    def sd(self, steps: int = 2, size: int = 64) -> list[str]:
        """`client submit sd` options for the tiny model each host holds its own copy of."""
        return ["--model", self.model, "--width", str(size), "--height", str(size), "--steps", str(steps)]

    def long_sd(self) -> list[str]:
        """An sd job that outlives a lease (about 15 s here)."""
        return [*self.sd(60, 256), "--prompt", "a long one"]

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

    def node_running(self, job_id: str, timeout: float = 120) -> Host:
        """The node that runs the job, once it runs."""
        deadline = time.monotonic() + timeout
        while (status := self.client_json("status", job_id))["status"] != "running":
            assert status["status"] == "queued" and time.monotonic() < deadline, status
            time.sleep(0.5)
        return next(node for node in self.nodes if status["worker"].startswith(f"{node.name}:"))

    def audit(self, job_id: str, out: Path) -> "JobAudit":
        """The job against the soak's audit rules, its artifacts downloaded on the laptop into out/<job id>."""
        shown = self.client_json("show", job_id)
        listed = self.client_json("artifacts", job_id)
        if listed:
            self.client("artifacts", job_id, "--download", str(out / job_id))
        bad = [a["name"] for a in listed
               if hashlib.sha256((out / job_id / a["name"]).read_bytes()).hexdigest() != a["sha256"]]
        return JobAudit(shown, ends=sum(e["to"] in ("succeeded", "failed", "cancelled") for e in shown["events"]),
                        attempts={a["path"].split(f"{job_id}/", 1)[1].split("/", 1)[0] for a in listed},
                        bad_downloads=bad)

    def wait_all(self, ids: list[str], timeout: float = 600) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.client_json("status", job_id) for job_id in ids]
            if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
                return jobs
            assert time.monotonic() < deadline, [(j["id"][:8], j["status"]) for j in jobs if j["status"] not in ("succeeded",)]
            time.sleep(2)



@dataclass
class JobAudit:
    """What the audit found of one job: its `client show`, how often it ended, the attempts its
    artifacts come from (their object keys), and the artifacts whose download is not their sha256."""

    shown: dict
    ends: int
    attempts: set[str]
    bad_downloads: list[str]

    @property
    def problems(self) -> list[str]:
        """How it breaks the rules: it must end once, keep one attempt's artifacts, and download whole."""
        found = [] if self.ends == 1 else [f"ended {self.ends} times"]
        if len(self.attempts) > 1:
            found.append(f"artifacts of attempts {sorted(self.attempts)}")
        if self.bad_downloads:
            found.append(f"downloads unlike their sha256: {self.bad_downloads}")
        return found


@atexit.register
def _close_all() -> None:
    for bed in list(_OPEN):
        bed.close()
