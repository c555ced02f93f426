"""What the chaos soak counts, read from the SQL store after the run (see bench.soak), and from
the workers' own logs for the deaths of their processes.

Tables read: `jobs` (id, kind, status, error), the audit `job_events` (job_id, at, from_status,
to_status, worker, reason) and, when it has the column, `job_logs.attempt`.

- lost: a job whose row is not in a terminal state (succeeded, failed, cancelled) when the soak
  stopped waiting, or a job id a client printed that has no row at all. Each is shown with its
  status, its last event, and the faults whose affected set held it.
- failed / cancelled: terminal rows in those states (the soak cancels nothing, so any cancelled
  job is unexpected). A failed line names the faults that hit its job. Worn out by faults (expected,
  not a failure): a job failed with "gave up after N attempts" (GENQ_MAX_ATTEMPTS) that N faults
  which end a run (RUN_ENDING) had hit: every one of its runs was taken from it, and giving up is
  the limit doing its work. With fewer hits it is failed: some run was lost to no fault. refused: a `client submit` that exited non-zero without being killed by the
  soak (the user was told "no"; with a retrying client a short outage should not cause this).
  refused during an outage (expected, not a failure): such a client that said the database did not
  answer, ran while a `postgres-down` outage lasted, and exited before the database was back (or
  within OUTAGE_EXIT_GRACE_S after: its last try had failed, exiting took the rest). Its job may have
  been stored all the same (the insert committed, the read-back failed): then it must end like any
  other (else it is lost), and the report names it. A client whose stderr was a Python traceback
  (its error is then `traceback: <the exception's line>`) is counted as it said (refused, or refused
  during an outage) and also listed under "clients that answered with a traceback": `client`
  promises one line.
- duplicated, per job, any of:
  1. more than one terminal event (`-> succeeded|failed|cancelled`) in job_events, or more than
     one `-> succeeded`;
  2. a `running -> succeeded` written by a worker other than the one whose `-> running` event
     opened the current run (a superseded run finished the job);
  3. two runs that overlapped. Runs come from job_events: the k-th `-> running` event starts
     attempt k on its worker; the next event out of `running` ends it. When that end was written
     by another worker (a takeover), attempt k may have gone on running beside attempt k+1:
     - if job_logs has an `attempt` column: a log line of attempt k written after attempt k+1's
       `-> running` event is a duplicate run (the fence let a superseded run write);
     - without it: attempt k's worker process was frozen (SIGSTOP) when attempt k+1 started and
       was resumed (SIGCONT) before it was killed, so its run went on. (A worker that is alive and
       not frozen keeps its lease while its run's heartbeat beats: a takeover from it means that
       run had already stopped, e.g. crashed out on a database error, and is not counted.)
       Worker names in events are matched to the soak's processes by their pid.
  4. a run frozen inside its write transaction (`frozen-in-write`) and taken over: when its worker
     was resumed, the soak counted that attempt's log lines; any more at the end means the
     transaction it was frozen in (whose lines carry their creation time, from before the takeover)
     committed after the takeover;
  5. one `client submit` that stored more than one job (its parameters, unique per submission,
     match several rows: a retried insert whose first try had committed).
- worker crashes: a worker child process that died without the soak killing it (the supervisor's
  "... (pid N) was killed by SIG... / exited with code C after S s; starting it again" lines in the
  worker's log, less the children the soak SIGKILLed), and every "Unrecoverable error" (Celery's
  last word before a worker dies) in a worker's log. A malformed message must be dropped, not kill
  a child; an outage must be waited out, not crash one.
- recovery, per fault: seconds from the fault to the first progress (a `-> running` or terminal
  event) of any job in the fault's affected set that was not already terminal at the fault: the
  job on a killed or stopped worker; the ready queued jobs at a Redis wipe (their messages were
  lost); the ready queued and running jobs at a PostgreSQL restart; the job of a killed client; the
  job frozen inside its write (from the SIGSTOP); the ready queued jobs behind malformed messages
  and the probe job submitted after them.
  For an outage (`postgres-down`, `redis-down`) it is counted from when the service answered again
  (`restored_at`), not from its start: the ready queued and running jobs at its start, the jobs its
  clients stored during it. `never` when none of them progressed; `-` when the set was empty
  (nothing to recover).
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime

TERMINAL = ("succeeded", "failed", "cancelled")
PROGRESS = ("running", *TERMINAL)
DATABASE_OUTAGES = ("postgres-down",)  # faults during which a client may rightly give up
OUTAGE_EXIT_GRACE_S = 5.0  # a client that gave up this soon after the database was back had its last try fail before
DATABASE_SILENT = re.compile(r"did not answer", re.IGNORECASE)  # how `client` says the database is not there
# genq-worker's supervisor on a child that died and is restarted (worker/supervisor.py, Supervisor._reap)
CHILD_RESTART = re.compile(r"(?P<name>\S+) \(pid (?P<pid>\d+)\) (?P<how>was killed by \S+|exited with code -?\d+) "
                           r"after [\d.]+ s; starting it again")
UNRECOVERABLE = "Unrecoverable error"
GAVE_UP = re.compile(r"gave up after (?P<attempts>\d+) attempts")  # genq.core.lifecycle's take_over at the limit
RUN_ENDING = ("kill", "stop", "frozen-in-write", "postgres-restart", "postgres-down")  # faults that can take a run  # Celery's log line when its worker dies of an exception


@dataclass
class Fault:
    kind: str  # one of FAULT_NAMES' kinds: kill, stop, redis-wipe, ..., malformed
    at: datetime  # when it was injected (UTC)
    detail: str = ""
    affected: set[str] = field(default_factory=set)
    took_s: float = 0.0  # how long the injection itself took (a freeze, a restart, an outage)
    injected: bool = True  # False: skipped (nothing to break) or the client ignored the pause hook
    restored_at: datetime | None = None  # an outage: when the service answered again (recovery counts from it)
    fenced: dict[str, tuple[int, int]] = field(default_factory=dict)  # job -> (superseded attempt, its log lines then)
    problem: str = ""  # what the soak saw go wrong while injecting it (a frozen job not taken over...)


@dataclass
class Submission:
    label: str
    job_id: str | None
    returncode: int | None
    error: str = ""
    killed: bool = False  # killed by the soak between insert and send
    match: dict = field(default_factory=dict)  # `kind` and parameters that identify its job's row
    started: datetime | None = None  # when the client was started and when it exited (UTC)
    ended: datetime | None = None

    def stored_jobs(self, jobs: dict[str, dict]) -> list[str]:
        """The ids of the rows this submission wrote, found by its parameters (the client may have
        died or failed before printing the id); the printed id first."""
        wanted = {k: v for k, v in self.match.items() if k != "kind"}
        found = [job_id for job_id, job in jobs.items()
                 if job["kind"] == self.match.get("kind") and wanted
                 and all((job.get("params") or {}).get(k) == v for k, v in wanted.items())]
        if self.job_id in jobs:
            found = [self.job_id, *(job_id for job_id in found if job_id != self.job_id)]
        return found

    def stored_job(self, jobs: dict[str, dict]) -> str | None:
        """The id of the row this submission wrote (the printed one, else one found by its parameters)."""
        found = self.stored_jobs(jobs)
        return found[0] if found else None


@dataclass
class Snapshot:
    jobs: dict[str, dict]  # id -> row (kind, status, error, attempts, ...)
    events: dict[str, list[dict]]  # job id -> its events in id order
    logs: dict[str, list[tuple[int, datetime]]] | None  # job id -> (attempt, at); None: no attempt column


@dataclass
class WorkerLog:
    """What one worker process (a supervisor and its children) wrote to its log, and which of its
    children the soak killed."""

    name: str  # how the report names it ("worker 3")
    text: str
    children_killed: set[int] = field(default_factory=set)


@dataclass
class Run:
    attempt: int
    worker: str | None
    started: datetime
    ended: datetime | None = None
    ended_by: str | None = None


# -- rules ------------------------------------------------------------------------------------
def runs_of(events: list[dict]) -> list[Run]:
    runs: list[Run] = []
    for event in events:
        if event["from_status"] == "running" and runs and runs[-1].ended is None:
            runs[-1].ended, runs[-1].ended_by = event["at"], event["worker"]
        if event["to_status"] == "running":
            runs.append(Run(attempt=len(runs) + 1, worker=event["worker"], started=event["at"]))
    return runs


def worker_of(name: str | None, workers: list) -> object | None:
    """The soak's worker process whose worker registered as `name` (its `name`; else the pid in the name)."""
    if not name:
        return None
    named = next((w for w in workers if getattr(w, "name", None) == name), None)
    if named is not None:
        return named
    numbers = {int(n) for n in re.findall(r"\d+", name)}
    return next((w for w in workers if w.pid in numbers), None)


def resumed_after_freeze(worker, moment: datetime) -> bool:
    """Whether this worker was frozen at `moment` and later resumed (SIGCONT) before it was killed."""
    freeze = worker.frozen_at(moment)
    if freeze is None or freeze[1] is None:
        return False
    return worker.exited_at is None or worker.exited_at > freeze[1]


def overlap_reason(job_logs, earlier: Run, later: Run, workers: list) -> str | None:
    if earlier.ended_by is not None and earlier.ended_by == earlier.worker:
        return None  # the run ended itself
    if job_logs is not None:
        late = [at for attempt, at in job_logs if attempt == earlier.attempt and at > later.started]
        if late:
            return f"attempt {earlier.attempt} wrote {len(late)} log line(s) after attempt {later.attempt} started"
        return None
    process = worker_of(earlier.worker, workers)
    if process is not None and resumed_after_freeze(process, later.started):
        return (f"attempt {later.attempt} started while attempt {earlier.attempt}'s worker {earlier.worker} was "
                f"frozen, and that worker was resumed afterwards (no job_logs.attempt column to show whether it wrote)")
    return None


def duplicate_reasons(events: list[dict], job_logs, workers: list) -> list[str]:
    reasons = []
    terminal = [e["to_status"] for e in events if e["to_status"] in TERMINAL]
    if len(terminal) > 1:
        reasons.append(f"{len(terminal)} terminal events ({', '.join(terminal)})")
    runs = runs_of(events)
    for event in events:
        if event["from_status"] == "running" and event["to_status"] == "succeeded":
            opener = next((r for r in reversed(runs) if r.started <= event["at"]), None)
            if opener is not None and opener.worker != event["worker"]:
                reasons.append(f"succeeded by {event['worker']} while its run was on {opener.worker}")
    for earlier, later in zip(runs, runs[1:]):
        reason = overlap_reason(job_logs, earlier, later, workers)
        if reason:
            reasons.append(reason)
    return reasons


def fenced_reasons(job_id: str, faults: list[Fault], job_logs) -> list[str]:
    """Rule 4: log lines of an attempt frozen inside its write that appeared after it was resumed."""
    reasons = []
    for fault in faults:
        if job_id not in fault.fenced or job_logs is None:
            continue
        attempt, then = fault.fenced[job_id]
        now = sum(1 for a, _ in job_logs if a == attempt)
        if now > then:
            reasons.append(f"attempt {attempt}, frozen inside its write and taken over, had {then} log line(s) when "
                           f"resumed and {now} at the end (its transaction committed after the takeover)")
    return reasons


def recovery_s(fault: Fault, snapshot: Snapshot) -> float | None:
    """Seconds to the first progress of an affected job, from the fault (an outage: from when the
    service was back; progress before that counts as 0); None if nothing was affected; inf: never."""
    affected = [job_id for job_id in fault.affected
                if not any(e["to_status"] in TERMINAL and e["at"] <= fault.at for e in snapshot.events.get(job_id, []))]
    if not affected:
        return None
    firsts = [e["at"] for job_id in affected for e in snapshot.events.get(job_id, [])
              if e["at"] > fault.at and e["to_status"] in PROGRESS]
    if not firsts:
        return math.inf
    return max(0.0, (min(firsts) - (fault.restored_at or fault.at)).total_seconds())


def outage_refusal(submission: Submission, faults: list[Fault]) -> Fault | None:
    """The database outage that explains this client's non-zero exit, if any (see the docstring)."""
    if submission.started is None or submission.ended is None or not DATABASE_SILENT.search(submission.error):
        return None
    for fault in faults:
        if fault.kind not in DATABASE_OUTAGES or not fault.injected or fault.restored_at is None:
            continue
        overlapped = submission.started <= fault.restored_at and submission.ended >= fault.at
        if overlapped and (submission.ended - fault.restored_at).total_seconds() <= OUTAGE_EXIT_GRACE_S:
            return fault
    return None


def crash_lines(logs: list[WorkerLog]) -> list[str]:
    """Worker children that died without the soak killing them, and Celery's "Unrecoverable error"s."""
    lines = []
    for log in logs:
        for match in CHILD_RESTART.finditer(log.text):
            if int(match["pid"]) not in log.children_killed:
                lines.append(f"{log.name}: child {match['name']} (pid {match['pid']}) {match['how']} and was restarted")
        for line in log.text.splitlines():
            if UNRECOVERABLE in line:
                lines.append(f"{log.name}: {line.strip()[:240]}")
    return lines


def child_restarts(logs: list[WorkerLog]) -> int:
    return sum(len(CHILD_RESTART.findall(log.text)) for log in logs)


# -- the report -------------------------------------------------------------------------------
@dataclass
class Report:
    jobs: int
    workers: int
    faults: list[Fault]
    submissions: list[Submission]
    lost: list[str]  # one line per job
    failed: list[str]
    cancelled: list[str]
    duplicated: list[str]
    refused: list[str]
    succeeded: int
    recoveries: list[tuple[Fault, float | None]]
    unexpected_exits: list[str]
    started: datetime
    waited: str  # how the wait for terminal states ended
    refused_in_outage: list[str] = field(default_factory=list)  # expected: see the docstring
    worn_out: list[str] = field(default_factory=list)  # expected: failed at the attempts limit, a fault per run
    crashes: list[str] = field(default_factory=list)  # worker children that died on their own
    restarts: int = 0  # child restarts in the workers' logs, those the soak caused included
    children_killed: int = 0  # worker child processes the soak SIGKILLed

    @property
    def tracebacks(self) -> list[str]:
        return [f"{s.label}: exit {s.returncode}: {s.error}" for s in self.submissions
                if s.error.startswith("traceback: ")]

    @property
    def unmet(self) -> list[str]:
        """Faults whose expected reaction the soak did not see (Fault.problem)."""
        return [f"{f.kind} at {self.rel(f.at)}: {f.problem}" for f in self.faults if f.problem]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.failed or self.cancelled or self.duplicated or self.refused or self.crashes
                    or self.unmet)

    def count(self, kind: str) -> int:
        return sum(1 for f in self.faults if f.kind == kind and f.injected)

    def rel(self, moment: datetime) -> str:
        return f"+{(moment - self.started).total_seconds():.1f}s"

    def recovery_summary(self) -> str:
        finite = [s for _, s in self.recoveries if s is not None and math.isfinite(s)]
        never = sum(1 for _, s in self.recoveries if s is not None and not math.isfinite(s))
        text = (f"recovery median {statistics.median(finite):.1f} s, max {max(finite):.1f} s"
                if finite else "recovery n/a")
        return text + (f" ({never} fault(s) never recovered)" if never else "")

    def longest(self, kind: str) -> str:
        """An outage's length as the last line shows it: " (120 s)", the longest when there were several."""
        took = [(f.restored_at - f.at).total_seconds() if f.restored_at else f.took_s
                for f in self.faults if f.kind == kind and f.injected]
        return f" ({max(took):.0f} s)" if took else ""

    def final_line(self) -> str:
        faults = ", ".join(plural(self.count(kind), name) + (self.longest(kind) if kind.endswith("-down") else "")
                           for kind, name in FAULT_NAMES)
        skipped = sum(1 for f in self.faults if not f.injected)
        faults += f" ({skipped} not injected)" if skipped else ""
        bad = f"{len(self.lost)} lost, {len(self.duplicated)} duplicated, {len(self.failed)} failed"
        extra = "".join(f", {len(items)} {name}" for name, items in
                        (("cancelled", self.cancelled), ("refused", self.refused),
                         ("worn out by faults (expected)", self.worn_out), ("worker crashes", self.crashes),
                         ("faults not recovered as expected", self.unmet)) if items)
        return f"soak: {self.jobs} jobs, {self.workers} workers, {faults} -> {bad}{extra}; {self.recovery_summary()}"

    def fault_table(self) -> list[str]:
        lines = [f"{'when':>8}  {'fault':<17} {'affected':>8}  {'recovery':>9}  detail"]
        for fault, seconds in self.recoveries:
            shown = "-" if seconds is None else ("never" if not math.isfinite(seconds) else f"{seconds:.1f} s")
            lines.append(f"{self.rel(fault.at):>8}  {fault.kind:<17} {len(fault.affected):>8}  {shown:>9}  {fault.detail}")
        return lines

    def render(self) -> str:
        killed = sum(1 for s in self.submissions if s.killed)
        lines = ["faults:", *("  " + line for line in self.fault_table()), "",
                 f"jobs: {self.jobs} in the store ({killed} from killed clients); {self.succeeded} succeeded; "
                 f"waiting ended: {self.waited}"]
        for name, items in (("lost", self.lost), ("duplicated", self.duplicated), ("failed", self.failed),
                            ("cancelled", self.cancelled), ("refused", self.refused),
                            ("refused during a database outage (expected)", self.refused_in_outage),
                            ("worn out: failed at the attempts limit with a fault on every run (expected)",
                             self.worn_out),
                            ("clients that answered with a traceback", self.tracebacks),
                            ("worker crashes (child deaths the soak did not cause, unrecoverable errors)",
                             self.crashes),
                            ("faults not recovered as expected", self.unmet),
                            ("worker exits the soak did not cause", self.unexpected_exits)):
            lines.append(f"  {name}: {len(items)}")
            lines.extend(f"    {item}" for item in items[:20])
            if len(items) > 20:
                lines.append(f"    ... and {len(items) - 20} more")
        lines.append(f"  worker child restarts in the logs: {self.restarts} "
                     f"(the soak killed {self.children_killed} child process(es))")
        lines += ["", self.final_line()]
        return "\n".join(lines)

    def failure_message(self) -> str:
        parts = []
        if self.lost:
            parts.append(f"{len(self.lost)} job(s) LOST (never reached a terminal state): "
                         + "; ".join(self.lost[:8]))
        for name, items in (("DUPLICATED", self.duplicated), ("FAILED", self.failed),
                            ("CANCELLED (nobody cancelled them)", self.cancelled), ("REFUSED at submit", self.refused),
                            ("WORKER CRASHES", self.crashes), ("FAULTS NOT RECOVERED AS EXPECTED", self.unmet)):
            if items:
                parts.append(f"{len(items)} job(s) {name}: " + "; ".join(items[:8]))
        return "\n".join(parts) + "\n\n" + self.render()


def audit(snapshot: Snapshot, submissions: list[Submission], faults: list[Fault], workers: list,
          worker_count: int, started: datetime, waited: str, logs: list[WorkerLog] | None = None) -> Report:
    """Apply the rules above; `workers` are every process the soak started (tests.faults.Worker),
    `logs` what they wrote."""
    jobs = snapshot.jobs
    logs = logs or []
    refused, in_outage = refused_lines(submissions, faults, jobs, started)
    failed, worn_out = failed_lines(jobs, faults, started)
    return Report(
        jobs=len(jobs), workers=worker_count,
        faults=faults, submissions=submissions,
        lost=lost_lines(snapshot, submissions, faults, started),
        failed=failed,
        cancelled=[f"{short(i)} {j['kind']}" for i, j in jobs.items() if j["status"] == "cancelled"],
        duplicated=duplicate_lines(snapshot, workers, faults) + stored_twice_lines(submissions, jobs),
        refused=refused,
        succeeded=sum(1 for j in jobs.values() if j["status"] == "succeeded"),
        recoveries=[(f, recovery_s(f, snapshot)) for f in faults],
        unexpected_exits=[f"worker {w.index} (pid {w.pid}) exited {w.process.returncode} at "
                          f"+{(w.exited_at - started).total_seconds():.1f}s"
                          for w in workers if w.exited_at is not None and w.killed_at is None],
        started=started, waited=waited,
        refused_in_outage=in_outage, worn_out=worn_out,
        crashes=crash_lines(logs),
        restarts=child_restarts(logs),
        children_killed=sum(len(log.children_killed) for log in logs),
    )


FAULT_NAMES = (("kill", "kill"), ("stop", "stop"), ("redis-wipe", "redis wipe"),
               ("postgres-restart", "postgres restart"), ("client-kill", "client kill"), ("postgres-down", "postgres down"),
               ("frozen-in-write", "frozen write"), ("redis-down", "redis down"), ("malformed", "malformed push"))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith(('sh', 'ch', 'x')) else 's'}"


def short(job_id: str) -> str:
    return job_id[:8]


def refused_lines(submissions: list[Submission], faults: list[Fault], jobs: dict[str, dict],
                  started: datetime) -> tuple[list[str], list[str]]:
    """(refused, refused during a database outage): one line per client that exited non-zero."""
    refused, in_outage = [], []
    for s in submissions:
        if s.killed or s.returncode in (0, None):
            continue
        stored = s.stored_job(jobs)
        anyway = f"; its job was stored anyway: {short(stored)}, {jobs[stored]['status']}" if stored else "; not stored"
        outage = outage_refusal(s, faults)
        if outage is None:
            refused.append(f"{s.label}: exit {s.returncode}: {s.error}{anyway}")
        else:
            ran = (f"ran +{(s.started - started).total_seconds():.1f}s..+{(s.ended - started).total_seconds():.1f}s, "
                   f"database down +{(outage.at - started).total_seconds():.1f}s.."
                   f"+{(outage.restored_at - started).total_seconds():.1f}s")
            in_outage.append(f"{s.label}: exit {s.returncode}: {s.error} ({ran}){anyway}")
    return refused, in_outage


def failed_lines(jobs: dict[str, dict], faults: list[Fault], started: datetime) -> tuple[list[str], list[str]]:
    """(failed, worn out by faults): one line per failed job, naming the run-ending faults that hit it."""
    failed, worn_out = [], []
    for job_id, job in jobs.items():
        if job["status"] != "failed":
            continue
        hits = [f for f in faults if f.injected and f.kind in RUN_ENDING and job_id in f.affected]
        named = ", ".join(f"{f.kind} at +{(f.at - started).total_seconds():.1f}s" for f in hits)
        line = f"{short(job_id)} {job['kind']}: {job['error']}; hit by {plural(len(hits), 'fault')}" + (
            f" ({named})" if hits else "")
        gave_up = GAVE_UP.search(job["error"] or "")
        (worn_out if gave_up and len(hits) >= int(gave_up["attempts"]) else failed).append(line)
    return failed, worn_out


def stored_twice_lines(submissions: list[Submission], jobs: dict[str, dict]) -> list[str]:
    """Rule 5: one submission, several rows."""
    lines = []
    for s in submissions:
        found = s.stored_jobs(jobs)
        if len(found) > 1:
            lines.append(f"{s.label}: one submit stored {len(found)} jobs: "
                         + ", ".join(f"{short(i)} {jobs[i]['status']}" for i in found))
    return lines


def lost_lines(snapshot: Snapshot, submissions: list[Submission], faults: list[Fault], started: datetime) -> list[str]:
    lines = []
    clients = {s.stored_job(snapshot.jobs): s for s in submissions}
    for job_id, job in snapshot.jobs.items():
        if job["status"] in TERMINAL:
            continue
        client = clients.get(job_id)
        if client is not None and client.killed:
            told = "; its client was killed after the insert"
        elif client is not None and client.returncode not in (0, None):
            during = " during a database outage" if outage_refusal(client, faults) else ""
            told = f"; its client exited {client.returncode}{during} ({client.label})"
        else:
            told = ""

        events = snapshot.events.get(job_id, [])
        last = events[-1] if events else None
        said = (f"last event {last['from_status']} -> {last['to_status']} ({last['reason']}) at "
                f"+{(last['at'] - started).total_seconds():.1f}s" + (f" by {last['worker']}" if last['worker'] else "")
                if last else "no event")
        hit = [f"{f.kind} at +{(f.at - started).total_seconds():.1f}s" for f in faults if job_id in f.affected]
        lines.append(f"{short(job_id)} {job['kind']} still {job['status']}; {said}"
                     + (f"; affected by {', '.join(hit)}" if hit else "") + told)
    for submission in submissions:
        if submission.job_id and submission.job_id not in snapshot.jobs:
            lines.append(f"{short(submission.job_id)} ({submission.label}): printed by the client but not in the store")
    return lines


def duplicate_lines(snapshot: Snapshot, workers: list, faults: list[Fault] = ()) -> list[str]:
    lines = []
    for job_id, events in snapshot.events.items():
        job_logs = None if snapshot.logs is None else snapshot.logs.get(job_id, [])
        reasons = duplicate_reasons(events, job_logs, workers) + fenced_reasons(job_id, list(faults), job_logs)
        if reasons:
            lines.append(f"{short(job_id)} {snapshot.jobs.get(job_id, {}).get('kind', '?')}: {'; '.join(reasons)}")
    return lines
