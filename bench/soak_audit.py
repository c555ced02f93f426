"""What the chaos soak counts, read only from the SQL store after the run (see bench.soak).

Tables read: `jobs` (id, kind, status, error), the audit `job_events` (job_id, at, from_status,
to_status, worker, reason) and, when it has the column, `job_logs.attempt`.

- lost: a job whose row is not in a terminal state (succeeded, failed, cancelled) when the soak
  stopped waiting, or a job id a client printed that has no row at all. Each is shown with its
  status, its last event, and the faults whose affected set held it.
- failed / cancelled: terminal rows in those states (the soak cancels nothing, so any cancelled
  job is unexpected). refused: a `client submit` that exited non-zero without being killed by the
  soak (the user was told "no"; with a retrying client a short outage should not cause this).
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
- recovery, per fault: seconds from the fault to the first progress (a `-> running` or terminal
  event) of any job in the fault's affected set that was not already terminal at the fault: the job on a killed or stopped worker; the ready
  queued jobs at a Redis wipe (their messages were lost); the ready queued and running jobs at a
  PostgreSQL restart; the job of a killed client. `never` when none of them progressed; `-` when
  the set was empty (nothing to recover).
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime

TERMINAL = ("succeeded", "failed", "cancelled")
PROGRESS = ("running", *TERMINAL)


@dataclass
class Fault:
    kind: str  # kill | stop | redis-wipe | postgres-restart | client-kill
    at: datetime  # when it was injected (UTC)
    detail: str = ""
    affected: set[str] = field(default_factory=set)
    took_s: float = 0.0  # how long the injection itself took (a freeze, a restart)
    injected: bool = True  # False: skipped (nothing to break) or the client ignored the pause hook


@dataclass
class Submission:
    label: str
    job_id: str | None
    returncode: int | None
    error: str = ""
    killed: bool = False  # killed by the soak between insert and send
    match: dict = field(default_factory=dict)  # `kind` and parameters that identify its job's row

    def stored_job(self, jobs: dict[str, dict]) -> str | None:
        """The id of the row this submission wrote, found by its parameters (the client may have
        died or failed before printing the id)."""
        if self.job_id in jobs:
            return self.job_id
        wanted = {k: v for k, v in self.match.items() if k != "kind"}
        for job_id, job in jobs.items():
            params = job.get("params") or {}
            if job["kind"] == self.match.get("kind") and wanted and all(params.get(k) == v for k, v in wanted.items()):
                return job_id
        return None


@dataclass
class Snapshot:
    jobs: dict[str, dict]  # id -> row (kind, status, error, attempts, ...)
    events: dict[str, list[dict]]  # job id -> its events in id order
    logs: dict[str, list[tuple[int, datetime]]] | None  # job id -> (attempt, at); None: no attempt column


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


def recovery_s(fault: Fault, snapshot: Snapshot) -> float | None:
    """Seconds to the first progress of an affected job; None if nothing was affected; inf: never."""
    affected = [job_id for job_id in fault.affected
                if not any(e["to_status"] in TERMINAL and e["at"] <= fault.at for e in snapshot.events.get(job_id, []))]
    if not affected:
        return None
    firsts = [e["at"] for job_id in affected for e in snapshot.events.get(job_id, [])
              if e["at"] > fault.at and e["to_status"] in PROGRESS]
    return (min(firsts) - fault.at).total_seconds() if firsts else math.inf


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

    @property
    def ok(self) -> bool:
        return not (self.lost or self.failed or self.cancelled or self.duplicated or self.refused)

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

    def final_line(self) -> str:
        faults = ", ".join(plural(self.count(kind), name) for kind, name in (
            ("kill", "kill"), ("stop", "stop"), ("redis-wipe", "redis wipe"), ("postgres-restart", "postgres restart"),
            ("client-kill", "client kill")))
        skipped = sum(1 for f in self.faults if not f.injected)
        faults += f" ({skipped} not injected)" if skipped else ""
        bad = f"{len(self.lost)} lost, {len(self.duplicated)} duplicated, {len(self.failed)} failed"
        extra = "".join(f", {len(items)} {name}" for name, items in
                        (("cancelled", self.cancelled), ("refused", self.refused)) if items)
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
                            ("worker exits the soak did not cause", self.unexpected_exits)):
            lines.append(f"  {name}: {len(items)}")
            lines.extend(f"    {item}" for item in items[:20])
            if len(items) > 20:
                lines.append(f"    ... and {len(items) - 20} more")
        lines += ["", self.final_line()]
        return "\n".join(lines)

    def failure_message(self) -> str:
        parts = []
        if self.lost:
            parts.append(f"{len(self.lost)} job(s) LOST (never reached a terminal state): "
                         + "; ".join(self.lost[:8]))
        for name, items in (("DUPLICATED", self.duplicated), ("FAILED", self.failed),
                            ("CANCELLED (nobody cancelled them)", self.cancelled), ("REFUSED at submit", self.refused)):
            if items:
                parts.append(f"{len(items)} job(s) {name}: " + "; ".join(items[:8]))
        return "\n".join(parts) + "\n\n" + self.render()


def audit(snapshot: Snapshot, submissions: list[Submission], faults: list[Fault], workers: list,
          worker_count: int, started: datetime, waited: str) -> Report:
    """Apply the rules above; `workers` are every process the soak started (tests.faults.Worker)."""
    jobs = snapshot.jobs
    return Report(
        jobs=len(jobs), workers=worker_count,
        faults=faults, submissions=submissions,
        lost=lost_lines(snapshot, submissions, faults, started),
        failed=[f"{short(i)} {j['kind']}: {j['error']}" for i, j in jobs.items() if j["status"] == "failed"],
        cancelled=[f"{short(i)} {j['kind']}" for i, j in jobs.items() if j["status"] == "cancelled"],
        duplicated=duplicate_lines(snapshot, workers),
        refused=refused_lines(submissions, jobs),
        succeeded=sum(1 for j in jobs.values() if j["status"] == "succeeded"),
        recoveries=[(f, recovery_s(f, snapshot)) for f in faults],
        unexpected_exits=[f"worker {w.index} (pid {w.pid}) exited {w.process.returncode} at "
                          f"+{(w.exited_at - started).total_seconds():.1f}s"
                          for w in workers if w.exited_at is not None and w.killed_at is None],
        started=started, waited=waited,
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def short(job_id: str) -> str:
    return job_id[:8]


def refused_lines(submissions: list[Submission], jobs: dict[str, dict]) -> list[str]:
    lines = []
    for s in submissions:
        if s.killed or s.returncode in (0, None):
            continue
        stored = s.stored_job(jobs)
        anyway = f"; its job was stored anyway: {short(stored)}, {jobs[stored]['status']}" if stored else ""
        lines.append(f"{s.label}: exit {s.returncode}: {s.error}{anyway}")
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
            told = f"; its client exited {client.returncode} ({client.label})"
        else:
            told = ""

        events = snapshot.events.get(job_id, [])
        last = events[-1] if events else None
        said = (f"last event {last['from_status']} -> {last['to_status']} ({last['reason']}) at "
                f"+{(last['at'] - started).total_seconds():.1f}s" if last else "no event")
        hit = [f"{f.kind} at +{(f.at - started).total_seconds():.1f}s" for f in faults if job_id in f.affected]
        lines.append(f"{short(job_id)} {job['kind']} still {job['status']}; {said}"
                     + (f"; affected by {', '.join(hit)}" if hit else "") + told)
    for submission in submissions:
        if submission.job_id and submission.job_id not in snapshot.jobs:
            lines.append(f"{short(submission.job_id)} ({submission.label}): printed by the client but not in the store")
    return lines


def duplicate_lines(snapshot: Snapshot, workers: list) -> list[str]:
    lines = []
    for job_id, events in snapshot.events.items():
        job_logs = None if snapshot.logs is None else snapshot.logs.get(job_id, [])
        reasons = duplicate_reasons(events, job_logs, workers)
        if reasons:
            lines.append(f"{short(job_id)} {snapshot.jobs.get(job_id, {}).get('kind', '?')}: {'; '.join(reasons)}")
    return lines
