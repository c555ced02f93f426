"""Chaos soak: many short jobs through the real CLI and real workers while things break.

    python -m bench.soak [--jobs 200] [--workers 3] [--kills 20] [--seed S] [--timeout 600]

Everything is private and thrown away afterwards (tests.faults): a PostgreSQL cluster and a Redis on
free ports, a temp GENQ_HOME and a tiny SD model (`client models make-tiny`, i.e.
genq.core.sd.tiny.make_tiny_model). It runs `client db upgrade`, starts --workers `genq-worker`
processes with a short lease (GENQ_LEASE and GENQ_STALE_AFTER = --lease seconds), then alternates:
a burst of `client submit` calls (a few at once), a random pause, one fault, until all --jobs are
submitted and every fault injected. Jobs are mostly `sd` on the tiny model (64x64, 2 steps: about
0.2 s of work); about one in fifteen is a `train-vae --epochs 1 --train-limit 256 --capacity 4`
followed by an `interpolate --model JOB --steps 2` that waits for it. Such jobs end before a fault
can find them running, so the burst before each fault opens with "slow" sd jobs (256x256, 40 steps:
a few seconds): one for a kill or stop, one per worker before a Redis wipe or PostgreSQL restart
(so that a backlog of queued messages builds up behind them). Faults, in a seeded random order:

- kill: SIGKILL a worker that is running a job (a replacement worker is started);
- stop: SIGSTOP a busy worker for the lease + 4 s, then SIGCONT it (its job must be taken over,
  and the resumed run must not write or finish the job);
- redis-wipe: kill the private Redis and start it empty, after waiting for a backlog of queued jobs;
- postgres-restart: `pg_ctl stop -m fast`, then start;
- client-kill: a `client submit` with GENQ_TEST_PAUSE_AT=after-insert and GENQ_TEST_PAUSE_FILE set
  writes the new job id to that file and sleeps after the job's row is committed and before its
  message is sent; the soak SIGKILLs it once the file exists. A client without that hook just
  finishes (reported as such in the fault's detail).

Then it waits for every job to reach a terminal state: at most --timeout seconds, or until nothing
at all changed in the store (events, progress, logs, artifacts) for --quiet seconds. What it counts
from the SQL store, and how (lost, failed, cancelled, refused, duplicated, recovery per fault), is
in bench/soak_audit.py's docstring. Prints the fault table, the counts, and a last line such as

    soak: 200 jobs, 3 workers, 20 kills, 1 stop, 1 redis wipe, 1 postgres restart, 1 client kill
      -> 0 lost, 0 duplicated, 0 failed; recovery median 4.1 s, max 9.8 s

(one line); exits 1 when anything was lost, duplicated, failed, cancelled or refused. A fault with
nothing to break within 20 s (no busy worker), or a client that ignored the pause hook, is listed
as not injected. --keep keeps the temp folder (worker logs, artifacts) and prints where it is.
Worker settings: GENQ_HEARTBEAT_INTERVAL 0.5, GENQ_RECONCILE_INTERVAL 1, GENQ_RESEND_AFTER 3,
GENQ_RETRY_FOR 60, GENQ_MAX_ATTEMPTS 10 (kills may hit one job more than 3 times), GENQ_TORCH_THREADS 1.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from bench.soak_audit import Fault, Report, Snapshot, Submission, audit, worker_of
from tests.faults import PrivatePostgres, PrivateRedis, Workers, kill_group, utc_now, worker_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
EXCEPTION_LINE = re.compile(r"^([\w.]*(Error|Exception|Exit)|error|Error): ")
FAULT_KINDS = ("kill", "stop", "redis-wipe", "postgres-restart", "client-kill")
PRECONDITION_WAIT_S = 20  # how long a fault waits for something to break (a busy worker, a backlog)
CLIENT_TIMEOUT_S = 180


@dataclass
class SoakConfig:
    jobs: int = 200
    workers: int = 3
    kills: int = 20
    stops: int = 1
    redis_wipes: int = 1
    postgres_restarts: int = 1
    client_kills: int = 1
    vae_pairs: int | None = None  # train-vae + interpolate pairs; default jobs // 15, at least 1
    seed: int = 0
    timeout: float = 600.0  # the longest wait for terminal states after the last fault
    quiet: float = 30.0  # stop waiting earlier when nothing changed in the store for this long
    lease: float = 6.0
    submitters: int = 3  # `client submit` processes at once within a burst
    data_root: Path | None = None  # MNIST; default GENQ_DATA_ROOT, else ../shared/data
    keep: bool = False  # keep the temp folder (worker logs, artifacts) for a look afterwards

    def fault_plan(self, rng: random.Random) -> list[str]:
        counts = (self.kills, self.stops, self.redis_wipes, self.postgres_restarts, self.client_kills)
        plan = [kind for kind, count in zip(FAULT_KINDS, counts) for _ in range(count)]
        rng.shuffle(plan)
        return plan

    def pairs(self) -> int:
        return self.vae_pairs if self.vae_pairs is not None else max(1, self.jobs // 15)


def say(message: str, started: datetime | None = None) -> None:
    when = f"[+{(utc_now() - started).total_seconds():6.1f}s] " if started else ""
    print(f"soak {when}{message}", file=sys.stderr, flush=True)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def clean_environment() -> dict[str, str]:
    """This process's environment without any GENQ_* setting (the soak sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GENQ_")}


def default_data_root() -> Path:
    return Path(os.environ.get("GENQ_DATA_ROOT") or REPO.parent / "shared" / "data").resolve()


# -- the installation: private services, workers, the store ---------------------------------
class Installation:
    """Private PostgreSQL + Redis, a migrated database, a tiny model and K workers; closed as a whole."""

    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.stack = contextlib.ExitStack()
        self.lock = threading.RLock()  # worker bookkeeping: the chaos and the monitor threads share it

    def __enter__(self) -> "Installation":
        try:
            self._open()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def _open(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="genq-soak-"))
        if self.cfg.keep:
            say(f"keeping {self.root}")
        else:
            self.stack.callback(shutil.rmtree, self.root, True)
        self.postgres = self.stack.enter_context(PrivatePostgres())
        self.redis = self.stack.enter_context(PrivateRedis())
        self.home = self.root / "home"
        self.home.mkdir()
        self.env = worker_env(
            clean_environment(), home=self.home, database_url=self.postgres.create_database("genq"),
            broker_url=self.redis.url, queue="soak", data_root=self.cfg.data_root or default_data_root(),
            lease_s=self.cfg.lease, GENQ_RECONCILE_INTERVAL="1", GENQ_RESEND_AFTER="3", GENQ_RETRY_FOR="60",
            GENQ_MAX_ATTEMPTS="10", GENQ_TORCH_THREADS="1")
        self.model = self.root / "tiny-sd"
        self.client_ok("models", "make-tiny", str(self.model))
        self.client_ok("db", "upgrade")
        self.engine = create_engine(self.env["GENQ_DATABASE_URL"], pool_pre_ping=True)
        self.stack.callback(self.engine.dispose)
        self.workers = self.stack.enter_context(Workers(self.env, self.home))
        self.workers.start(self.cfg.workers)

    # -- the CLI
    def client(self, *args: str, timeout: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "client"), *args], env=self.env, cwd=self.home, capture_output=True,
                              text=True, timeout=timeout)

    def client_ok(self, *args: str) -> str:
        result = self.client(*args)
        if result.returncode != 0:
            raise RuntimeError(f"client {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout

    # -- the store, read with plain SQL (whatever version of genq wrote it), riding out restarts
    def query(self, sql: str, **params) -> list:
        deadline = time.monotonic() + 120
        while True:
            try:
                with self.engine.connect() as conn:
                    return list(conn.execute(text(sql), params))
            except DBAPIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def running_jobs(self) -> list[tuple[str, str]]:
        return [(r.id, r.worker_host) for r in self.query("SELECT id, worker_host FROM jobs WHERE status = 'running'")]

    def ready_queued(self) -> set[str]:
        """Queued jobs that a worker could start now (no dependency, or one that succeeded)."""
        rows = self.query("SELECT j.id FROM jobs j LEFT JOIN jobs d ON d.id = j.depends_on "
                          "WHERE j.status = 'queued' AND (j.depends_on IS NULL OR d.status = 'succeeded')")
        return {r.id for r in rows}

    def unfinished(self) -> int:
        return self.query("SELECT count(*) AS n FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')")[0].n

    def activity(self) -> tuple:
        """Changes whenever anything happens in the store."""
        row = self.query("SELECT (SELECT coalesce(max(id), 0) FROM job_events) AS e, "
                         "(SELECT coalesce(sum(progress_done), 0) FROM jobs) AS p, "
                         "(SELECT count(*) FROM job_logs) AS l, (SELECT count(*) FROM artifacts) AS a")[0]
        return tuple(row)

    def snapshot(self) -> Snapshot:
        jobs = {r.id: dict(r._mapping) for r in self.query("SELECT id, kind, status, error, attempts, params FROM jobs")}
        events: dict[str, list[dict]] = defaultdict(list)
        for r in self.query("SELECT job_id, at, from_status, to_status, worker, reason FROM job_events ORDER BY id"):
            events[r.job_id].append({**r._mapping, "at": aware(r.at)})
        logs = None
        if "attempt" in {c["name"] for c in inspect(self.engine).get_columns("job_logs")}:
            logs = defaultdict(list)
            for r in self.query("SELECT job_id, attempt, at FROM job_logs WHERE attempt IS NOT NULL"):
                logs[r.job_id].append((r.attempt, aware(r.at)))
        return Snapshot(jobs=jobs, events=dict(events), logs=logs)

    # -- workers
    def keep_workers(self) -> None:
        """Note workers that exited on their own and start new ones up to --workers."""
        with self.lock:
            for worker in self.workers.notice_exits():
                say(f"worker {worker.index} (pid {worker.pid}) exited {worker.process.returncode} on its own")
            self.workers.replace_dead(self.cfg.workers, wait=False)

    def busy_worker(self, rng: random.Random):
        """(a live, unfrozen worker running a job, the ids of its running jobs), waiting a while for one;
        (None, empty) if none turned up."""
        deadline = time.monotonic() + PRECONDITION_WAIT_S
        while time.monotonic() < deadline:
            held: dict = defaultdict(set)
            for job_id, name in self.running_jobs():
                worker = worker_of(name, self.workers.all)
                if worker is not None and worker.alive() and not worker.is_frozen():
                    held[worker].add(job_id)
            if held:
                worker = rng.choice(sorted(held, key=lambda w: w.index))
                return worker, held[worker]
            time.sleep(0.1)
        return None, set()


# -- submissions ------------------------------------------------------------------------------
def error_line(stderr: str) -> str:
    """The line of a client's stderr that says what went wrong (not SQLAlchemy's link line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("(Background")]
    raised = [line for line in lines if EXCEPTION_LINE.match(line)]  # a traceback's last word
    return (raised or lines or [""])[-1][:240]


def submission_of(label: str, match: dict, result: subprocess.CompletedProcess) -> Submission:
    found = JOB_ID.search(result.stdout)
    return Submission(label, found.group(0) if found else None, result.returncode,
                      error_line(result.stderr) if result.returncode else "", match=match)


def submit(inst: Installation, label: str, args: list[str], match: dict) -> Submission:
    try:
        return submission_of(label, match, inst.client("submit", *args))
    except subprocess.TimeoutExpired:
        return Submission(label, None, -1, f"no answer in {CLIENT_TIMEOUT_S} s", match=match)


def sd_job(inst: Installation, label: str, slow: bool = False) -> tuple[list[str], dict]:
    """(args, match) of an sd job whose prompt is its label: 64x64 2 steps, or 256x256 40 steps."""
    size, steps = ("256", "40") if slow else ("64", "2")
    args = ["sd", "--model", str(inst.model), "--prompt", f"soak {label}", "--negative", "blurry",
            "--width", size, "--height", size, "--steps", steps]
    return args, {"kind": "sd", "prompt": f"soak {label}"}


def submit_unit(inst: Installation, unit: tuple[str, int]) -> list[Submission]:
    kind, n = unit
    if kind in ("sd", "slow"):
        label = f"{kind} #{n}"
        return [submit(inst, label, *sd_job(inst, label, slow=kind == "slow"))]
    train = submit(inst, f"train-vae #{n}", ["train-vae", "--epochs", "1", "--train-limit", "256", "--capacity", "4",
                                             "--seed", str(n)], {"kind": "train-vae", "seed": n})
    match = {"kind": "interpolate", "model": train.job_id}
    if train.job_id is None:
        return [train, Submission(f"interpolate #{n}", None, -1, "not submitted: its train-vae was refused", match=match)]
    return [train, submit(inst, f"interpolate #{n}", ["interpolate", "--model", train.job_id, "--steps", "2"], match)]


def slow_jobs_needed(fault: str, workers: int) -> int:
    """Slow jobs to have in flight when this fault strikes: a busy worker to kill or stop, or every
    worker busy so that a backlog of queued messages builds up for a Redis wipe or PostgreSQL restart."""
    return {"kill": 1, "stop": 1, "redis-wipe": workers, "postgres-restart": workers}.get(fault, 0)


def split_evenly(items: list, count: int) -> list[list]:
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def plan_bursts(cfg: SoakConfig, faults: list[str], rng: random.Random) -> list[list[tuple[str, int]]]:
    """One burst of units before each fault and one after the last: (`sd`, n) a 64x64 2-step job,
    (`slow`, n) a 256x256 40-step one (a few seconds), (`vae`, n) a train-vae + interpolate pair.
    A burst opens with the slow jobs its fault needs; quick jobs and pairs are spread evenly.
    The client kills (one sd job each) make up the rest of --jobs."""
    budget = cfg.jobs - cfg.client_kills
    pairs = min(cfg.pairs(), max(0, budget // 2))
    needs = [slow_jobs_needed(kind, cfg.workers) for kind in faults] + [0]
    slow_left = min(sum(needs), budget - 2 * pairs)
    fill = [("vae", n) for n in range(pairs)] + [("sd", n) for n in range(budget - 2 * pairs - slow_left)]
    rng.shuffle(fill)
    out, slow_n = [], 0
    for need, group in zip(needs, split_evenly(fill, len(needs))):
        take = min(need, slow_left - slow_n)
        out.append([("slow", slow_n + j) for j in range(take)] + group)
        slow_n += take
    return out


# -- faults -----------------------------------------------------------------------------------
class Chaos:
    """Injects one fault at a time and records what it affected."""

    def __init__(self, inst: Installation, rng: random.Random, started: datetime) -> None:
        self.inst, self.rng, self.started = inst, rng, started
        self.faults: list[Fault] = []
        self.submissions: list[Submission] = []  # the killed clients' jobs
        self.client_kills = 0

    def inject(self, kind: str) -> Fault:
        fault = getattr(self, kind.replace("-", "_"))()
        self.faults.append(fault)
        when = (fault.at - self.started).total_seconds()
        say(f"{kind} at +{when:.1f}s: {fault.detail} (affected {len(fault.affected)})", self.started)
        return fault

    def kill(self) -> Fault:
        worker, jobs = self.inst.busy_worker(self.rng)
        if worker is None:
            return Fault("kill", utc_now(), f"skipped: no busy worker within {PRECONDITION_WAIT_S} s", injected=False)
        fault = Fault("kill", utc_now(), f"SIGKILL worker {worker.index} (pid {worker.pid})", jobs)
        with self.inst.lock:
            self.inst.workers.kill(worker)
        self.inst.keep_workers()
        return fault

    def stop(self) -> Fault:
        freeze_s = self.inst.cfg.lease + 4
        worker, jobs = self.inst.busy_worker(self.rng)
        if worker is None:
            return Fault("stop", utc_now(), f"skipped: no busy worker within {PRECONDITION_WAIT_S} s", injected=False)
        fault = Fault("stop", utc_now(), f"SIGSTOP worker {worker.index} (pid {worker.pid}) for {freeze_s:.0f} s", jobs)
        with self.inst.lock:
            self.inst.workers.freeze(worker)
        time.sleep(freeze_s)
        with self.inst.lock:
            self.inst.workers.thaw(worker)
        fault.took_s = freeze_s
        return fault

    def redis_wipe(self) -> Fault:
        deadline = time.monotonic() + PRECONDITION_WAIT_S
        while not self.inst.ready_queued() and time.monotonic() < deadline:
            time.sleep(0.2)
        at = utc_now()
        queued = self.inst.ready_queued()
        self.inst.redis.restart(wipe=True)
        return Fault("redis-wipe", at, f"killed Redis and started it empty ({len(queued)} queued)", queued,
                     (utc_now() - at).total_seconds())

    def postgres_restart(self) -> Fault:
        at = utc_now()
        affected = self.inst.ready_queued() | {job_id for job_id, _ in self.inst.running_jobs()}
        self.inst.postgres.restart("fast")
        took = (utc_now() - at).total_seconds()
        return Fault("postgres-restart", at, f"pg_ctl stop -m fast, start ({took:.1f} s down)", affected, took)

    def client_kill(self) -> Fault:
        self.client_kills += 1
        label = f"client-kill #{self.client_kills}"
        args, match = sd_job(self.inst, label)
        marker = self.inst.root / f"pause-{self.client_kills}"
        env = {**self.inst.env, "GENQ_TEST_PAUSE_AT": "after-insert", "GENQ_TEST_PAUSE_FILE": str(marker)}
        process = subprocess.Popen([str(BIN / "client"), "submit", *args], env=env, cwd=self.inst.home,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            at = utc_now()
            kill_group(process)
            process.communicate()
            job_id = marker.read_text().strip()
            self.submissions.append(Submission(label, job_id, None, killed=True, match=match))
            return Fault("client-kill", at, f"SIGKILL client after insert, before send (job {job_id[:8]})", {job_id})
        if process.poll() is None:
            kill_group(process)
        stdout, stderr = process.communicate()
        self.submissions.append(submission_of(label, match, subprocess.CompletedProcess(
            process.args, process.returncode, stdout, stderr)))
        return Fault("client-kill", utc_now(), "hook absent: GENQ_TEST_PAUSE_AT=after-insert was ignored, "
                                               "the client finished", injected=False)


# -- the run ----------------------------------------------------------------------------------
def monitor(inst: Installation, stop: threading.Event) -> None:
    """Keep --workers workers alive (replacing killed ones) and note those that died on their own."""
    while not stop.wait(0.5):
        try:
            inst.keep_workers()
        except Exception as exc:  # a worker that cannot start now may start on the next round
            say(f"could not replace a worker: {exc}")


def run_timeline(inst: Installation, cfg: SoakConfig, rng: random.Random, started: datetime) -> tuple[list, Chaos]:
    """Bursts of submissions, each followed by a pause and one fault; returns (submissions, chaos)."""
    chaos = Chaos(inst, rng, started)
    plan = cfg.fault_plan(rng)
    futures = []
    with ThreadPoolExecutor(max_workers=cfg.submitters) as pool:
        for i, burst in enumerate(plan_bursts(cfg, plan, rng)):
            futures += [pool.submit(submit_unit, inst, unit) for unit in burst]
            say(f"burst {i + 1}: {len(burst)} submissions", started)
            if i < len(plan):
                time.sleep(rng.uniform(1.0, 3.0))
                chaos.inject(plan[i])
                time.sleep(rng.uniform(1.0, 4.0))
    submissions = [s for future in futures for s in future.result()] + chaos.submissions
    return submissions, chaos


def wait_for_terminal(inst: Installation, cfg: SoakConfig, started: datetime) -> str:
    """Until every job is terminal, nothing changed for --quiet seconds, or --timeout; says which."""
    deadline = time.monotonic() + cfg.timeout
    last, changed = None, time.monotonic()
    while True:
        with inst.lock:
            for worker in inst.workers.all:
                inst.workers.thaw(worker)
        left = inst.unfinished()
        if left == 0:
            return "every job is terminal"
        activity = inst.activity()
        if activity != last:
            last, changed = activity, time.monotonic()
        if time.monotonic() - changed > cfg.quiet:
            return f"gave up: {left} unfinished and nothing changed in the store for {cfg.quiet:.0f} s"
        if time.monotonic() > deadline:
            return f"gave up: {left} unfinished after --timeout {cfg.timeout:.0f} s"
        time.sleep(1)


def run_soak(cfg: SoakConfig) -> Report:
    rng = random.Random(cfg.seed)
    with Installation(cfg) as inst:
        started = utc_now()
        say(f"{cfg.workers} workers ready; postgres :{inst.postgres.port}, redis :{inst.redis.port}; seed {cfg.seed}")
        stop = threading.Event()
        watcher = threading.Thread(target=monitor, args=(inst, stop), daemon=True)
        watcher.start()
        try:
            submissions, chaos = run_timeline(inst, cfg, rng, started)
            say("all submitted and every fault injected; waiting for terminal states", started)
            waited = wait_for_terminal(inst, cfg, started)
            say(waited, started)
        finally:
            stop.set()
            watcher.join()
        return audit(inst.snapshot(), submissions, chaos.faults, inst.workers.all, cfg.workers, started, waited)


def parse_args(argv: list[str] | None) -> SoakConfig:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of busy workers")
    parser.add_argument("--stops", type=int, default=1, help="SIGSTOP past the lease, then SIGCONT")
    parser.add_argument("--redis-wipes", type=int, default=1)
    parser.add_argument("--postgres-restarts", type=int, default=1)
    parser.add_argument("--client-kills", type=int, default=1, help="clients killed between insert and send")
    parser.add_argument("--vae-pairs", type=int, default=None, help="train-vae + interpolate pairs (default jobs/15)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600, help="longest wait for terminal states (s)")
    parser.add_argument("--quiet", type=float, default=30, help="stop waiting after this long without any change (s)")
    parser.add_argument("--lease", type=float, default=6, help="GENQ_LEASE / GENQ_STALE_AFTER of the workers (s)")
    parser.add_argument("--submitters", type=int, default=3, help="clients at once within a burst")
    parser.add_argument("--data-root", type=Path, default=None, help="MNIST (default GENQ_DATA_ROOT or ../shared/data)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, artifacts)")
    args = parser.parse_args(argv)
    return SoakConfig(**vars(args))


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (exit stack, atexit) on SIGTERM too
    report = run_soak(parse_args(argv))
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
