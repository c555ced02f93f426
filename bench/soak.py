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
a few seconds): one for a kill, a stop or a malformed push, one per worker before a Redis wipe or
outage or a PostgreSQL restart or outage (so that a backlog of queued messages builds up behind
them). Faults, in a seeded random order:

- kill: SIGKILL a worker that is running a job (a replacement worker is started);
- stop: SIGSTOP a busy worker for the lease + 4 s, then SIGCONT it (its job must be taken over,
  and the resumed run must not write or finish the job);
- redis-wipe: kill the private Redis and start it empty, after waiting for a backlog of queued jobs;
- postgres-restart: `pg_ctl stop -m fast`, then start;
- client-kill: a `client submit` with GENQ_TEST_PAUSE_AT=after-insert and GENQ_TEST_PAUSE_FILE set
  writes the new job id to that file and sleeps after the job's row is committed and before its
  message is sent; the soak SIGKILLs it once the file exists. A client without that hook just
  finishes (reported as such in the fault's detail);
- postgres-down: `pg_ctl stop -m immediate` (a crash: connections cut, recovery at start) once
  every worker is busy (or after 20 s); PostgreSQL stays down --postgres-down-s seconds (120:
  longer than GENQ_RETRY_FOR, so runs stop without recording a failure and clients may give up);
  --outage-submits `client submit`s are started spread over the outage and one worker child
  process (not its supervisor, which starts it again) is SIGKILLed, then `pg_ctl start`;
- frozen-in-write: an extra worker started with GENQ_TEST_PAUSE_AT=inside-write (and
  GENQ_TEST_PAUSE_FILE, GENQ_TEST_PAUSE_S) pauses at its first run write, after the writes and
  before the commit, holding the job's row lock. It consumes only the queue soak-frozen (which the
  fleet consumes too, so that the job runs again after the takeover) and is started ahead, at the
  start of the run (or after the previous such fault), since a worker takes a while to start. The
  soak submits workers + 1 slow jobs to soak-frozen (each its own batch, so that no worker claims
  them together) so that it gets one, and once the pause file names the job SIGSTOPs the worker
  for the lease + 4 s (longer while its job is not taken over, up to one more lease), notes how many log
  lines that attempt has, SIGCONTs it, lets its commit be tried, then SIGKILLs it. The server must
  end the paused transaction (idle-in-transaction timeout) so that another worker takes the job over;
- redis-down: `SHUTDOWN SAVE` (Redis writes its data to disk and exits) after waiting for a backlog
  of queued jobs, Redis stays down --redis-down-s seconds (180) while --outage-submits clients are
  started over it, then it is started again WITH its data (the queued messages come back; a start
  without data is the redis-wipe fault);
- malformed: messages a worker cannot take are pushed onto every
  priority list of every queue the workers consume: not JSON, JSON that is no message (`[1, 2]`,
  an object without the envelope), each RPUSHed so that it is popped next; and Celery task messages
  for genq.run_job whose args are not a job id (a number, a made-up id, no argument) sent through
  plain Celery; then one quick sd job (a probe, behind them). The soak waits until they are taken
  off and counts the drops the workers logged; a worker child that dies of one is a worker crash in
  the audit. Its recovery (to the first progress of a job queued at the push, or of the probe)
  includes the probe client's own run, a few seconds.

Then it waits for every job to reach a terminal state: at most --timeout seconds, or until nothing
at all changed in the store (events, progress, logs, artifacts) for --quiet seconds. What it counts
from the SQL store, and how (lost, failed, cancelled, refused, duplicated, recovery per fault), is
in bench/soak_audit.py's docstring. Prints the fault table, the counts, and a last line such as

    soak: 200 jobs, 3 workers, 20 kills, 1 stop, 1 redis wipe, 1 postgres restart, 1 client kill,
      1 postgres down (120 s), 1 frozen write, 1 redis down (180 s), 1 malformed push
      -> 0 lost, 0 duplicated, 0 failed; recovery median 4.1 s, max 9.8 s

(one line, listing every kind of fault and the outages' lengths); exits 1 when anything was lost,
duplicated, failed, cancelled or refused (a client that gave up during a database outage is not
refused: see bench/soak_audit.py), when a worker child died on its own, or when a fault's expected
reaction did not happen (a job frozen inside its write not taken over). A fault with nothing to
break within 20 s (no busy worker), or a client that ignored the pause hook, is listed as not
injected. --keep keeps the temp folder (worker logs, artifacts) and prints where it is.
Worker settings: GENQ_HEARTBEAT_INTERVAL 0.5, GENQ_RECONCILE_INTERVAL 1, GENQ_RESEND_AFTER 3,
GENQ_RETRY_FOR --retry-for (60), GENQ_MAX_ATTEMPTS 10 (kills may hit one job more than 3 times),
GENQ_TORCH_THREADS 1.
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

import redis
from celery import Celery
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from bench.soak_audit import Fault, Report, Snapshot, Submission, WorkerLog, audit, worker_of
from genq.core.broker import RUN_JOB_TASK, priority_lists
from genq.core.config import load_settings
from tests.faults import PrivatePostgres, PrivateRedis, Workers, kill_group, utc_now, worker_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
EXCEPTION_LINE = re.compile(r"^([\w.]*(Error|Exception|Exit)|error|Error): ")
TRACEBACK = "Traceback (most recent call last):"
TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*: ")  # `package.module.SomeException: message`, not indented
FAULT_KINDS = ("kill", "stop", "redis-wipe", "postgres-restart", "client-kill", "postgres-down", "frozen-in-write",
               "redis-down", "malformed")
PRECONDITION_WAIT_S = 20  # how long a fault waits for something to break (a busy worker, a backlog)
CLIENT_TIMEOUT_S = 180
WORKER_START_S = 120  # how long an extra worker may take to be ready
FROZEN_RESUME_S = 2  # a worker paused inside its write sleeps this long past its freeze, then tries to commit
FROZEN_WATCH_S = 5  # how long the resumed worker runs before it is killed
FROZEN_QUEUE = "soak-frozen"  # frozen-in-write's jobs: its extra worker consumes only it, the fleet too
# What the malformed fault pushes onto the lists: not JSON; JSON that is no kombu message
MALFORMED_RAW = (b"\x80\x81 genq soak: not JSON \xff", b"[1, 2]", b'{"body": "genq soak: no envelope"}')
MALFORMED_ARGS = ([12345], ["genq-soak-not-a-job-id"], [])  # genq.run_job calls whose args are not a job id
MALFORMED_WINDOW_S = 180  # how long the malformed messages may wait for a free worker to take them off


@dataclass
class SoakConfig:
    jobs: int = 200
    workers: int = 3
    kills: int = 20
    stops: int = 1
    redis_wipes: int = 1
    postgres_restarts: int = 1
    client_kills: int = 1
    postgres_downs: int = 1
    postgres_down_s: float = 120.0  # how long PostgreSQL stays down in each postgres-down
    frozen_writes: int = 1
    redis_downs: int = 1
    redis_down_s: float = 180.0  # how long Redis stays down in each redis-down
    malformed_pushes: int = 1
    outage_submits: int = 3  # `client submit`s started during each postgres-down and redis-down
    retry_for: float = 60.0  # GENQ_RETRY_FOR of the workers and clients
    vae_pairs: int | None = None  # train-vae + interpolate pairs; default jobs // 15, at least 1
    seed: int = 0
    timeout: float = 600.0  # the longest wait for terminal states after the last fault
    quiet: float = 30.0  # stop waiting earlier when nothing changed in the store for this long
    lease: float = 6.0
    submitters: int = 3  # `client submit` processes at once within a burst
    data_root: Path | None = None  # MNIST; default GENQ_DATA_ROOT, else ../shared/data
    keep: bool = False  # keep the temp folder (worker logs, artifacts) for a look afterwards

    def fault_plan(self, rng: random.Random) -> list[str]:
        counts = (self.kills, self.stops, self.redis_wipes, self.postgres_restarts, self.client_kills,
                  self.postgres_downs, self.frozen_writes, self.redis_downs, self.malformed_pushes)
        plan = [kind for kind, count in zip(FAULT_KINDS, counts) for _ in range(count)]
        rng.shuffle(plan)
        return plan

    def frozen_jobs(self) -> int:
        """Slow jobs each frozen-in-write submits: one more than the fleet can run, so the extra worker gets one."""
        return self.workers + 1

    def chaos_jobs(self) -> int:
        """The jobs the faults submit themselves (killed clients, clients during outages, frozen-in-write's,
        a probe after each malformed push)."""
        return (self.client_kills + self.outage_submits * (self.postgres_downs + self.redis_downs)
                + self.frozen_jobs() * self.frozen_writes + self.malformed_pushes)

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
            lease_s=self.cfg.lease, GENQ_RECONCILE_INTERVAL="1", GENQ_RESEND_AFTER="3",
            GENQ_RETRY_FOR=f"{self.cfg.retry_for:g}", GENQ_MAX_ATTEMPTS="10", GENQ_TORCH_THREADS="1",
            **({"GENQ_WORKER_QUEUES": f"soak,{FROZEN_QUEUE}"} if self.cfg.frozen_writes else {}))
        self.queues = load_settings(self.env).worker_queues  # what the workers consume
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
        deadline = time.monotonic() + 120 + self.cfg.postgres_down_s
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
                if worker is not None and worker.alive() and not worker.is_frozen() and not worker.extra:
                    held[worker].add(job_id)
            if held:
                worker = rng.choice(sorted(held, key=lambda w: w.index))
                return worker, held[worker]
            time.sleep(0.1)
        return None, set()


# -- submissions ------------------------------------------------------------------------------
def error_line(stderr: str) -> str:
    """The line of a client's stderr that says what went wrong (not SQLAlchemy's link line); a Python
    traceback's last line (the exception raised), marked `traceback: `."""
    if TRACEBACK in stderr:
        raised = [line for line in stderr.splitlines() if TRACEBACK_END.match(line)]  # not indented: not code
        if raised:
            return f"traceback: {raised[-1].strip()}"[:300]
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("(Background")]
    raised = [line for line in lines if EXCEPTION_LINE.match(line)]
    return (raised or lines or [""])[-1][:300]


def submission_of(label: str, match: dict, result: subprocess.CompletedProcess) -> Submission:
    found = JOB_ID.search(result.stdout)
    return Submission(label, found.group(0) if found else None, result.returncode,
                      error_line(result.stderr) if result.returncode else "", match=match)


def submit(inst: Installation, label: str, args: list[str], match: dict) -> Submission:
    started = utc_now()
    try:
        submission = submission_of(label, match, inst.client("submit", *args))
    except subprocess.TimeoutExpired:
        submission = Submission(label, None, -1, f"no answer in {CLIENT_TIMEOUT_S} s", match=match)
    submission.started, submission.ended = started, utc_now()
    return submission


def sd_job(inst: Installation, label: str, slow: bool = False, steps: int | None = None) -> tuple[list[str], dict]:
    """(args, match) of an sd job whose prompt is its label: 64x64 2 steps, or 256x256 40 steps (or `steps`:
    jobs of different steps never share a batch)."""
    size, default_steps = ("256", 40) if slow else ("64", 2)
    args = ["sd", "--model", str(inst.model), "--prompt", f"soak {label}", "--negative", "blurry",
            "--width", size, "--height", size, "--steps", str(steps or default_steps)]
    return args, {"kind": "sd", "prompt": f"soak {label}"}


def submit_unit(inst: Installation, unit: tuple[str, int]) -> list[Submission]:
    kind, n = unit
    if kind in ("sd", "slow"):
        label = f"{kind} #{n}"
        return [submit(inst, label, *sd_job(inst, label, slow=kind == "slow"))]
    train = submit(inst, f"train-vae #{n}", ["train-vae", "--epochs", "1", "--train-limit", "256", "--capacity", "4",
                                             "--seed", str(n)], {"kind": "train-vae", "seed": n})
    match = {"kind": "interpolate", "model": train.job_id}
    if train.job_id is None:  # its train-vae's refusal is counted; this one was never tried
        return [train, Submission(f"interpolate #{n}", None, None, "not submitted: its train-vae printed no id",
                                  match=match)]
    return [train, submit(inst, f"interpolate #{n}", ["interpolate", "--model", train.job_id, "--steps", "2"], match)]


def slow_jobs_needed(fault: str, workers: int) -> int:
    """Slow jobs to have in flight when this fault strikes: a busy worker to kill or stop, or every
    worker busy so that a backlog of queued messages builds up for a Redis wipe or outage, or a
    PostgreSQL restart or outage; one for malformed messages (a few queued jobs behind them, and
    idle workers to take them). frozen-in-write submits its own."""
    return {"kill": 1, "stop": 1, "redis-wipe": workers, "postgres-restart": workers, "postgres-down": workers,
            "redis-down": workers, "malformed": 1}.get(fault, 0)


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
    The faults' own jobs (killed clients, clients during outages, frozen-in-write's) make up the rest
    of --jobs."""
    budget = max(0, cfg.jobs - cfg.chaos_jobs())
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
        self.chaos_submits = 0  # numbers the faults' own submissions
        self.frozen_writes = 0
        self.spare = None  # (worker, its pause file): the next frozen-in-write's worker, started ahead
        if inst.cfg.frozen_writes:
            self.start_spare()
        # The faults' own clients (during outages, frozen-in-write's jobs) run beside the timeline;
        # (fault or None, future): a job a client stored during an outage joins the fault's affected set.
        self.pool = ThreadPoolExecutor(max_workers=inst.cfg.outage_submits + inst.cfg.frozen_jobs())
        self.pending: list[tuple[Fault | None, object]] = []

    def finish(self) -> list[Submission]:
        """Wait for the faults' own clients (each bounded by CLIENT_TIMEOUT_S); their submissions."""
        done = []
        for fault, future in self.pending:
            submission = future.result()
            done.append(submission)
            if fault is not None and submission.job_id:
                fault.affected.add(submission.job_id)
        self.pool.shutdown(wait=True)
        return self.submissions + done

    def submit_aside(self, fault: Fault | None, label: str, slow: bool = False, steps: int | None = None,
                     queue: str | None = None) -> None:
        """Start one `client submit` of an sd job in the background."""
        args, match = sd_job(self.inst, label, slow, steps)
        args += ["--queue", queue] if queue else []
        self.pending.append((fault, self.pool.submit(submit, self.inst, label, args, match)))

    def start_spare(self) -> None:
        """Start (not waiting for it) the extra worker of the next frozen-in-write: it pauses inside its
        first run write, and takes only the jobs of FROZEN_QUEUE."""
        marker = self.inst.root / f"inside-write-{len(self.inst.workers.all)}"
        hook = {"GENQ_TEST_PAUSE_AT": "inside-write", "GENQ_TEST_PAUSE_FILE": str(marker),
                "GENQ_TEST_PAUSE_S": f"{self.inst.cfg.lease + 4 + FROZEN_RESUME_S:g}",
                "GENQ_WORKER_QUEUES": FROZEN_QUEUE}
        with self.inst.lock:
            [worker] = self.inst.workers.start(1, wait=False, env=hook, extra=True)
        self.spare = (worker, marker)

    def next_label(self, what: str) -> str:
        self.chaos_submits += 1
        return f"{what} #{self.chaos_submits}"

    def wait_for_backlog(self) -> set[str]:
        """Ready queued jobs, waiting a while for some to be there."""
        deadline = time.monotonic() + PRECONDITION_WAIT_S
        while not (queued := self.inst.ready_queued()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return queued

    def outage(self, fault: Fault, down_s: float, extra: list[tuple[float, object]]) -> None:
        """While a service is down for `down_s`: start --outage-submits clients spread over it and run
        the `extra` (offset s, action) at their times; returns when `down_s` have passed."""
        count = self.inst.cfg.outage_submits
        actions = [(down_s * (i + 0.5) / count, lambda: self.submit_aside(fault, self.next_label(f"{fault.kind}")))
                   for i in range(count)] + extra
        start = time.monotonic()
        for offset, action in sorted(actions, key=lambda pair: pair[0]):
            time.sleep(max(0.0, start + offset - time.monotonic()))
            action()
        time.sleep(max(0.0, start + down_s - time.monotonic()))

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

    def all_busy(self) -> list[tuple[str, str]]:
        """The running jobs, once every live worker of the fleet runs one (or after a while)."""
        deadline = time.monotonic() + PRECONDITION_WAIT_S
        while True:
            running = self.inst.running_jobs()
            live = {w.name for w in self.inst.workers.alive() if not w.extra and not w.is_frozen()}
            if live <= {name for _, name in running} or time.monotonic() > deadline:
                return running
            time.sleep(0.2)

    def postgres_down(self) -> Fault:
        cfg = self.inst.cfg
        running = self.all_busy()
        affected = self.inst.ready_queued() | {job_id for job_id, _ in running}
        busy = [w for w in (worker_of(name, self.inst.workers.all) for _, name in running)
                if w is not None and not w.extra and w.alive() and not w.is_frozen()]
        victim = self.rng.choice(busy) if busy else None
        victim = victim or next((w for w in self.inst.workers.alive() if not w.extra and not w.is_frozen()), None)
        killed: list[str] = []

        def kill_child() -> None:
            if victim is None:
                killed.append("no worker to kill a child of")
                return
            with self.inst.lock:
                pid = self.inst.workers.kill_child(victim)
            when = (utc_now() - fault.at).total_seconds()
            killed.append(f"SIGKILL child pid {pid} of worker {victim.index} at +{when:.0f} s" if pid else
                          f"worker {victim.index} had no child to kill at +{when:.0f} s")

        fault = Fault("postgres-down", utc_now(), "", affected)
        self.inst.postgres.stop("immediate")
        self.outage(fault, cfg.postgres_down_s, [(cfg.postgres_down_s * self.rng.uniform(0.2, 0.6), kill_child)])
        self.inst.postgres.start()
        fault.restored_at = utc_now()
        fault.took_s = (fault.restored_at - fault.at).total_seconds()
        fault.detail = (f"pg_ctl stop -m immediate, {fault.took_s:.0f} s down, start; {cfg.outage_submits} submits "
                        f"during it; {'; '.join(killed)}")
        return fault

    def redis_down(self) -> Fault:
        cfg = self.inst.cfg
        self.wait_for_backlog()
        fault = Fault("redis-down", utc_now(), "", self.inst.ready_queued())
        self.inst.redis.stop(save=True)
        self.outage(fault, cfg.redis_down_s, [])
        self.inst.redis.start()
        fault.restored_at = utc_now()
        fault.took_s = (fault.restored_at - fault.at).total_seconds()
        fault.detail = (f"SHUTDOWN SAVE, {fault.took_s:.0f} s down, started with its data "
                        f"({len(fault.affected)} queued; {cfg.outage_submits} submits during it)")
        return fault

    def frozen_in_write(self) -> Fault:
        try:
            return self._frozen_in_write()
        finally:
            self.frozen_writes += 1
            if self.frozen_writes < self.inst.cfg.frozen_writes:
                self.start_spare()

    def _frozen_in_write(self) -> Fault:
        cfg, workers = self.inst.cfg, self.inst.workers
        freeze_s = cfg.lease + 4
        worker, marker = self.spare
        self.spare = None
        try:
            workers.wait_ready(worker, WORKER_START_S)
        except (RuntimeError, TimeoutError) as exc:
            with self.inst.lock:
                workers.kill(worker)
            return Fault("frozen-in-write", utc_now(), f"skipped: the extra worker did not start ({exc})",
                         injected=False)
        for i in range(cfg.frozen_jobs()):  # each its own batch, so that no worker claims them all
            self.submit_aside(None, self.next_label("frozen-in-write"), slow=True, steps=40 + i, queue=FROZEN_QUEUE)
        deadline = time.monotonic() + PRECONDITION_WAIT_S + CLIENT_TIMEOUT_S
        while not marker.exists() and worker.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not marker.exists():
            with self.inst.lock:
                workers.kill(worker)
            why = "it exited" if not worker.alive() else "no pause"
            return Fault("frozen-in-write", utc_now(), f"skipped: the extra worker never paused in a write ({why})",
                         injected=False)
        fault = Fault("frozen-in-write", utc_now())
        with self.inst.lock:
            workers.freeze(worker)
        job_id = marker.read_text().strip()
        fault.affected = {job_id}
        [row] = self.inst.query("SELECT attempts FROM jobs WHERE id = :j", j=job_id)
        attempt = row.attempts

        def taken_over() -> bool:
            [now] = self.inst.query("SELECT attempts, status, worker_host FROM jobs WHERE id = :j", j=job_id)
            return now.attempts != attempt or now.status != "running" or now.worker_host != worker.name

        longest_idle, taken_at = 0.0, None  # the oldest transaction left idle, as PostgreSQL saw it
        frozen_until = time.monotonic() + freeze_s
        bound = frozen_until + cfg.lease  # a job not taken over yet keeps it frozen up to one more lease
        while time.monotonic() < frozen_until or (taken_at is None and time.monotonic() < bound):
            [idle] = self.inst.query("SELECT coalesce(max(extract(epoch FROM now() - state_change)), 0) AS s "
                                     "FROM pg_stat_activity WHERE state = 'idle in transaction'")
            longest_idle = max(longest_idle, float(idle.s))
            if taken_at is None and taken_over():
                taken_at = utc_now()
            time.sleep(0.2)
        if taken_at is not None:
            [lines] = self.inst.query("SELECT count(*) AS n FROM job_logs WHERE job_id = :j AND attempt = :a",
                                      j=job_id, a=attempt)
            fault.fenced[job_id] = (attempt, lines.n)
        else:
            fault.problem = (f"job {job_id[:8]} was not taken over while its worker was frozen inside its write "
                             f"({(utc_now() - fault.at).total_seconds():.0f} s)")
        with self.inst.lock:
            workers.thaw(worker)
        frozen = (utc_now() - fault.at).total_seconds()
        time.sleep(FROZEN_RESUME_S + FROZEN_WATCH_S)  # its sleep ends and its commit is tried
        held = {j for j, name in self.inst.running_jobs() if name == worker.name}
        with self.inst.lock:
            workers.kill(worker)
        fault.affected |= held
        fault.took_s = frozen
        taken = (f"taken over after {(taken_at - fault.at).total_seconds():.1f} s" if taken_at else "NOT taken over")
        fault.detail = (f"extra worker {worker.index} (pid {worker.pid}) paused inside job {job_id[:8]}'s write "
                        f"(attempt {attempt}): SIGSTOP {frozen:.0f} s, {taken}, longest idle transaction "
                        f"{longest_idle:.1f} s; SIGCONT, SIGKILL {FROZEN_RESUME_S + FROZEN_WATCH_S} s later"
                        + (f" ({len(held - {job_id})} other job(s) it held)" if held - {job_id} else ""))
        return fault

    def malformed(self) -> Fault:
        fault = Fault("malformed", utc_now(), "", self.inst.ready_queued())
        sizes = {w: w.log_path.stat().st_size for w in self.inst.workers.all}
        client = redis.Redis.from_url(self.inst.redis.url)
        app = Celery("genq-soak-malformed", broker=self.inst.redis.url, set_as_current=False)
        ids, lists = set(), [key for queue in self.inst.queues for key in priority_lists(queue)]
        try:
            for key in lists:
                client.rpush(key, *MALFORMED_RAW)  # kombu LPUSHes and BRPOPs: these are popped next
            for queue in self.inst.queues:
                for args in MALFORMED_ARGS:
                    task_id = f"genq-soak-malformed-{len(ids)}"
                    app.send_task(RUN_JOB_TASK, args=args, queue=queue, task_id=task_id)
                    ids.add(task_id)
            pushed = len(lists) * len(MALFORMED_RAW) + len(ids)
            self.submit_aside(fault, self.next_label("malformed probe"))  # a job behind them, whatever the backlog

            def left_by_queue() -> dict[str, int]:
                return {queue: sum(1 for key in priority_lists(queue) for raw in client.lrange(key, 0, -1)
                                   if raw in MALFORMED_RAW or any(i.encode() in raw for i in ids))
                        for queue in self.inst.queues}

            # A worker busy with a job pops nothing (prefetch 1, acks late), and under the soak's backlog
            # every worker can stay busy for a minute or more (seed 2: 44 s, and over 60 s once): the
            # messages are checked when a worker is free, so the window is a few job lengths long.
            deadline = time.monotonic() + MALFORMED_WINDOW_S
            busy_seen = 0  # the most workers seen running a job at once in the window: a busy worker pops nothing
            while (remaining := sum((by_queue := left_by_queue()).values())) and time.monotonic() < deadline:
                busy_seen = max(busy_seen, len(self.inst.running_jobs()))
                time.sleep(0.2)
        finally:
            app.close()
            client.close()
        took = (utc_now() - fault.at).total_seconds()
        time.sleep(1)  # the last one taken off is logged
        drops = sum(new_log(w, sizes.get(w, 0)).count("dropped a") for w in self.inst.workers.all)
        fault.took_s = took
        fault.detail = (f"{pushed} malformed messages on {len(lists)} lists of {', '.join(self.inst.queues)}: "
                        + (f"all taken off in {took:.1f} s" if not remaining else f"{remaining} still there after "
                           f"{took:.0f} s (by queue: {by_queue}; up to {busy_seen} job(s) running at once)")
                        + f", {drops} drop(s) logged")
        if remaining:
            fault.problem = f"{remaining} malformed message(s) were never taken off their queue"
        return fault

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


def new_log(worker, offset: int) -> str:
    """What a worker wrote to its log after `offset` bytes."""
    with open(worker.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def worker_logs(inst: Installation) -> list[WorkerLog]:
    return [WorkerLog(f"worker {w.index}" + (" (extra)" if w.extra else ""), w.log_path.read_text(errors="replace"),
                      {pid for pid, _ in w.children_killed}) for w in inst.workers.all]


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
    submissions = [s for future in futures for s in future.result()] + chaos.finish()
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
        return audit(inst.snapshot(), submissions, chaos.faults, inst.workers.all, cfg.workers, started, waited,
                     worker_logs(inst))


def parse_args(argv: list[str] | None) -> SoakConfig:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of busy workers")
    parser.add_argument("--stops", type=int, default=1, help="SIGSTOP past the lease, then SIGCONT")
    parser.add_argument("--redis-wipes", type=int, default=1)
    parser.add_argument("--postgres-restarts", type=int, default=1)
    parser.add_argument("--client-kills", type=int, default=1, help="clients killed between insert and send")
    parser.add_argument("--postgres-downs", type=int, default=1, help="PostgreSQL outages (a child killed in each)")
    parser.add_argument("--postgres-down-s", type=float, default=120, help="how long each PostgreSQL outage lasts (s)")
    parser.add_argument("--frozen-writes", type=int, default=1, help="workers SIGSTOPped inside a write transaction")
    parser.add_argument("--redis-downs", type=int, default=1, help="Redis outages (started again with its data)")
    parser.add_argument("--redis-down-s", type=float, default=180, help="how long each Redis outage lasts (s)")
    parser.add_argument("--malformed-pushes", type=int, default=1, help="malformed messages pushed onto every queue")
    parser.add_argument("--outage-submits", type=int, default=3, help="clients started during each outage")
    parser.add_argument("--retry-for", type=float, default=60, help="GENQ_RETRY_FOR of workers and clients (s)")
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
