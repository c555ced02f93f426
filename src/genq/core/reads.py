"""The read model: every question the CLI, the Python API and the dashboard ask the store.

Jobs (filtered, paged, by id or prefix), a job's history, runs, metrics, logs and artifacts,
groups and their tables, the worker fleet, and the figures `/metrics` exports. Nothing here
writes; the write side (genq.core.store.jobs, groups, workers) keeps its own fenced writes.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import func, or_, select, true
from sqlalchemy.orm import aliased, sessionmaker

from genq.core.kinds import kind_class
from genq.core.params import text_problem
from genq.core.store.clock import as_utc, db_now_plus
from genq.core.store.models import (ArtifactRow, GroupRow, JobRow, JobEvent, JobLog, Metric, WebhookAttempt,
                                    WebhookDelivery)
from genq.core.store.states import JobStatus
from genq.core.store.workers import WorkerView, worker_registry

MIN_ID_PREFIX = 4
LOG_PAGE = 1_000  # log lines read at a time
FINISHED = tuple(s.value for s in JobStatus if s.finished)


class JobNotFound(LookupError):
    pass


class GroupNotFound(LookupError):
    pass


@dataclass(frozen=True)
class JobFilter:
    """Which jobs to list; an empty or None field does not filter. `prompt` matches any part of the prompt."""

    status: str | None = None
    kind: str | None = None
    group_id: str | None = None
    queue: str | None = None
    prompt: str | None = None
    owner: str | None = None  # only this user's jobs


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobRow]
    has_next: bool


@dataclass(frozen=True)
class Run:
    """One attempt of a job: the worker and device that ran it, and how it ended (None while it runs)."""

    attempt: int
    worker: str | None
    device: str | None
    started_at: datetime
    ended_at: datetime | None
    ended: str | None
    batch: str | None  # the claim's reason, when the job ran in one batch with others


@dataclass(frozen=True)
class JobHistory:
    events: list[JobEvent]
    runs: list[Run]


@dataclass(frozen=True)
class QueuePlace:
    """One queued job's place on its queue: 1 is the next to start there."""

    job_id: str
    queue: str
    priority: int
    position: int


@dataclass(frozen=True)
class RunTimes:
    kind: str
    state: str
    count: int
    seconds: float


@dataclass(frozen=True)
class GroupOverview:
    """A group as the list of groups shows it: the row and how many of its jobs are in each state."""

    group: GroupRow
    counts: dict[str, int]


@dataclass(frozen=True)
class FleetHistory:
    """The queue over the last hours, one value per bucket: `times` (unix seconds, each bucket's end),
    jobs queued at that moment, and jobs that finished within it."""

    bucket_s: int
    times: list[float]
    queued: list[int]
    finished: list[int]


@dataclass(frozen=True)
class StoreFigures:
    """What `/metrics` exports, read at one scrape."""

    jobs: dict[tuple[str, str], int]  # (state, kind) -> jobs
    queued: dict[str, int]  # queue -> queued jobs
    run_times: list[RunTimes]  # finished runs by kind and state
    workers: dict[str, int]  # worker state -> workers


class Reads:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self._registry = worker_registry(sessions)

    # -- jobs ---------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRow | None:
        with self.sessions() as session:
            return session.get(JobRow, job_id)

    def resolve(self, ref: str, owner: str | None = None) -> JobRow:
        """A full job id or a unique prefix of at least MIN_ID_PREFIX characters (matched literally);
        with `owner`, only among that user's jobs (another's is not found, as if it did not exist)."""
        ref = ref.strip().lower()
        if text_problem(ref):
            raise JobNotFound(f"no job {ref!r}")
        job = self.get(ref)
        if job is not None and owner in (None, job.owner):
            return job
        if len(ref) < MIN_ID_PREFIX:
            raise no_job(ref)
        query = select(JobRow).where(JobRow.id.startswith(ref, autoescape=True))
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        with self.sessions() as session:
            matches = session.scalars(query.limit(2)).all()
        if not matches:
            raise JobNotFound(f"no job {ref!r}")
        if len(matches) > 1:
            raise JobNotFound(f"{ref!r} matches several jobs: give more of the id")
        return matches[0]

    def jobs(self, where: JobFilter = JobFilter(), limit: int | None = 20, offset: int = 0) -> list[JobRow]:
        """Newest first; a group's jobs (where.group_id) in their sweep's order. `limit` None: all of them."""
        query = _filtered(where)
        if limit is not None:
            query = query.limit(limit)
        with self.sessions() as session:
            return list(session.scalars(query.offset(offset)))

    def page(self, where: JobFilter, limit: int, offset: int) -> JobPage:
        """One page of `jobs`, and whether a next one exists (one row more is read; nothing is counted)."""
        rows = self.jobs(where, limit + 1, offset)
        return JobPage(rows[:limit], len(rows) > limit)

    def jobs_by_id(self, job_ids: Sequence[str]) -> list[JobRow]:
        """These jobs, in the order given (an id that names no job is left out)."""
        with self.sessions() as session:
            found = {row.id: row for row in session.scalars(select(JobRow).where(JobRow.id.in_(list(job_ids))))}
        return [found[job_id] for job_id in job_ids if job_id in found]

    def preview(self, job_id: str) -> bytes | None:
        """The job's latest preview PNG (written by its run with its progress), or None."""
        with self.sessions() as session:
            return session.scalar(select(JobRow.preview_png).where(JobRow.id == job_id))

    def events(self, job_id: str) -> list[JobEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))

    def history(self, job_id: str) -> JobHistory:
        events = self.events(job_id)
        return JobHistory(events, runs_of(events))

    # -- metrics ------------------------------------------------------------------------
    def metrics(self, job_id: str) -> list[Metric]:
        """Every point of every metric, by name then step."""
        with self.sessions() as session:
            return list(session.scalars(select(Metric).where(Metric.job_id == job_id).order_by(Metric.name, Metric.step)))

    def metric_series(self, job_id: str) -> dict[str, list[tuple[int, float]]]:
        """Each metric's (step, value) points, in step order."""
        series: dict[str, list[tuple[int, float]]] = {}
        for metric in self.metrics(job_id):
            series.setdefault(metric.name, []).append((metric.step, metric.value))
        return series

    def metric_names(self, job_id: str) -> list[tuple[str, int]]:
        """(name, number of points) of each metric, by name."""
        with self.sessions() as session:
            return [(name, count) for name, count in session.execute(
                select(Metric.name, func.count()).where(Metric.job_id == job_id)
                .group_by(Metric.name).order_by(Metric.name))]

    def metric_points(self, job_id: str, name: str) -> list[tuple[int, float]]:
        with self.sessions() as session:
            return [(step, value) for step, value in session.execute(
                select(Metric.step, Metric.value).where(Metric.job_id == job_id, Metric.name == name)
                .order_by(Metric.step))]

    # -- logs ---------------------------------------------------------------------------
    def logs(self, job_id: str, after_id: int = 0, limit: int = LOG_PAGE) -> list[JobLog]:
        """The job's log lines after line `after_id`, oldest first, at most `limit` of them (a page:
        the next one starts after the last line's id)."""
        query = select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_id).order_by(JobLog.id).limit(limit)
        with self.sessions() as session:
            return list(session.scalars(query))

    def log_tail(self, job_id: str, count: int) -> list[JobLog]:
        """The job's last `count` log lines, oldest first."""
        with self.sessions() as session:
            newest = session.scalars(select(JobLog).where(JobLog.job_id == job_id)
                                     .order_by(JobLog.id.desc()).limit(count)).all()
        return list(reversed(newest))

    # -- webhooks -----------------------------------------------------------------------
    def webhooks(self, job_id: str | None = None, group_id: str | None = None
                 ) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
        """The webhook delivery of a job's end, or of a group's (none before it ended), with its attempts, oldest first."""
        subject = WebhookDelivery.job_id == job_id if job_id is not None else WebhookDelivery.group_id == group_id
        with self.sessions() as session:
            deliveries = list(session.scalars(select(WebhookDelivery).where(subject)))
            attempts = list(session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_([d.id for d in deliveries])).order_by(WebhookAttempt.id))) if deliveries else []
        return [(d, [a for a in attempts if a.delivery_id == d.id]) for d in deliveries]

    # -- artifacts ----------------------------------------------------------------------
    def artifacts(self, job_id: str) -> list[ArtifactRow]:
        with self.sessions() as session:
            return list(session.scalars(select(ArtifactRow).where(ArtifactRow.job_id == job_id).order_by(ArtifactRow.name)))

    def artifact(self, job_id: str, name: str) -> ArtifactRow | None:
        with self.sessions() as session:
            return session.scalar(select(ArtifactRow).where(ArtifactRow.job_id == job_id, ArtifactRow.name == name))

    # -- groups -------------------------------------------------------------------------
    def group(self, group_id: str) -> GroupRow | None:
        with self.sessions() as session:
            return session.get(GroupRow, group_id)

    def resolve_group(self, ref: str, owner: str | None = None) -> GroupRow:
        """A group by its id, a unique id prefix (MIN_ID_PREFIX characters at least), or its name (the latest
        of that name); with `owner`, only among that user's groups."""
        ref = ref.strip()
        if text_problem(ref):
            raise GroupNotFound(f"no group {ref!r}")
        if (group := self.group(ref.lower())) and owner in (None, group.owner):
            return group
        mine = (GroupRow.owner == owner) if owner is not None else true()
        with self.sessions() as session:
            named = session.scalars(select(GroupRow).where(GroupRow.name == ref, mine)
                                    .order_by(GroupRow.created_at.desc())).first()
            if named is not None:
                return named
            if len(ref) < MIN_ID_PREFIX:
                raise no_group(ref)
            matches = session.scalars(select(GroupRow).where(GroupRow.id.startswith(ref.lower(), autoescape=True), mine)
                                      .limit(2)).all()
        if not matches:
            raise GroupNotFound(f"no group {ref!r}")
        if len(matches) > 1:
            raise GroupNotFound(f"{ref!r} matches several groups: give more of the id")
        return matches[0]

    def groups(self, owner: str | None = None, limit: int = 50, offset: int = 0) -> list[GroupRow]:
        """Groups newest first; with `owner`, only that user's."""
        query = select(GroupRow).order_by(GroupRow.created_at.desc(), GroupRow.id.desc())
        if owner is not None:
            query = query.where(GroupRow.owner == owner)
        with self.sessions() as session:
            return list(session.scalars(query.limit(limit).offset(offset)))

    def group_overviews(self, owner: str | None = None, limit: int = 50, offset: int = 0) -> list[GroupOverview]:
        """`groups`, each with its jobs counted by state (one query for all the counts)."""
        groups = self.groups(owner, limit, offset)
        counts: dict[str, dict[str, int]] = {group.id: {} for group in groups}
        if groups:
            with self.sessions() as session:
                for group_id, status, count in session.execute(
                        select(JobRow.group_id, JobRow.status, func.count()).where(JobRow.group_id.in_(list(counts)))
                        .group_by(JobRow.group_id, JobRow.status)):
                    counts[group_id][status] = count
        return [GroupOverview(group, dict(sorted(counts[group.id].items()))) for group in groups]

    def group_jobs(self, group_id: str) -> list[JobRow]:
        """Every job of the group, in its sweep's order."""
        return self.jobs(JobFilter(group_id=group_id), limit=None)

    def group_counts(self, group_id: str) -> Counter:
        """How many of the group's jobs are in each state."""
        with self.sessions() as session:
            rows = session.execute(select(JobRow.status, func.count()).where(JobRow.group_id == group_id)
                                   .group_by(JobRow.status)).all()
        return Counter({status: count for status, count in rows})

    def group_table(self, group_id: str, rows: Sequence[JobRow] | None = None) -> list[dict[str, Any]]:
        """One dict per job of the group: id, the swept values, status, seconds it ran, and the kind's
        result figures. `rows`: the group's jobs when the caller has read them already."""
        group = self.group(group_id)
        if group is None:
            raise GroupNotFound(f"no group {group_id!r}")
        rows = self.group_jobs(group_id) if rows is None else rows
        return sweep_table(rows, swept_names(group.definition), kind_class(group.kind).summary)

    # -- workers and queues -------------------------------------------------------------
    def workers(self, lease_s: float, include_all: bool = False) -> list[WorkerView]:
        """The fleet: live workers, then lost ones (silent past `lease_s`), then stopped ones; without
        `include_all` only the last day's lost and stopped runs."""
        return self._registry.list(lease_s, include_all=include_all)

    def queue_lengths(self) -> dict[str, int]:
        """Queued jobs per queue."""
        with self.sessions() as session:
            return {queue: count for queue, count in session.execute(
                select(JobRow.queue, func.count()).where(JobRow.status == JobStatus.QUEUED.value).group_by(JobRow.queue))}

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue, how many jobs are queued and running (everyone's: counts only)."""
        counts: dict[str, dict[str, int]] = {}
        with self.sessions() as session:
            for queue, status, count in session.execute(
                    select(JobRow.queue, JobRow.status, func.count())
                    .where(JobRow.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)))
                    .group_by(JobRow.queue, JobRow.status)):
                counts.setdefault(queue, {JobStatus.QUEUED.value: 0, JobStatus.RUNNING.value: 0})[status] = count
        return dict(sorted(counts.items()))

    def queue_positions(self, owner: str, limit: int = 1000) -> list[QueuePlace]:
        """`owner`'s queued jobs with their place on their queue (1: the next to start there): the queued
        jobs of anyone ahead of it (a higher priority, or the same one and submitted earlier), plus one."""
        ahead = aliased(JobRow)
        before = (select(func.count()).select_from(ahead)
                  .where(ahead.queue == JobRow.queue, ahead.status == JobStatus.QUEUED.value,
                         (ahead.priority > JobRow.priority)
                         | ((ahead.priority == JobRow.priority) & (ahead.submitted_at < JobRow.submitted_at)))
                  .scalar_subquery())
        query = (select(JobRow.id, JobRow.queue, JobRow.priority, before + 1)
                 .where(JobRow.owner == owner, JobRow.status == JobStatus.QUEUED.value)
                 .order_by(JobRow.queue, JobRow.priority.desc(), JobRow.submitted_at).limit(limit))
        with self.sessions() as session:
            return [QueuePlace(*row) for row in session.execute(query)]

    def fleet_history(self, hours: float = 3.0, bucket_s: int = 60) -> FleetHistory:
        """Jobs queued at the end of each bucket of the last `hours`, and jobs finished within each, from the
        transitions (database clock): the queue now, walked back through the window's moves in and out of it."""
        queued = JobStatus.QUEUED.value
        with self.sessions() as session:
            now = as_utc(session.scalar(select(db_now_plus(0))))
            if isinstance(now, str):  # SQLite hands the expression back as its text
                now = as_utc(datetime.fromisoformat(now))
            since = db_now_plus(-hours * 3600)
            moves = session.execute(select(JobEvent.at, JobEvent.from_status, JobEvent.to_status)
                                    .where(JobEvent.at >= since, or_(JobEvent.from_status == queued,
                                                                     JobEvent.to_status == queued,
                                                                     JobEvent.to_status.in_(FINISHED)))
                                    .order_by(JobEvent.id)).all()
            depth_now = session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == queued)) or 0
        buckets = max(1, int(hours * 3600 // bucket_s))
        end = now.timestamp()
        start = end - buckets * bucket_s
        net = [0] * buckets  # change of the queue's depth within each bucket
        finished = [0] * buckets
        for at, from_status, to_status in moves:
            index = min(buckets - 1, max(0, int((as_utc(at).timestamp() - start) // bucket_s)))
            net[index] += (to_status == queued) - (from_status == queued)
            finished[index] += to_status in FINISHED
        depth, depths = depth_now, [0] * buckets
        for index in range(buckets - 1, -1, -1):
            depths[index] = max(depth, 0)
            depth -= net[index]
        return FleetHistory(bucket_s, [start + (i + 1) * bucket_s for i in range(buckets)], depths, finished)

    # -- changes, for a stream of them ----------------------------------------------------
    def last_transition_id(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.max(JobEvent.id))) or 0

    def transitions_after(self, after_id: int, owner: str | None = None, job_id: str | None = None,
                          group_id: str | None = None, limit: int = 500) -> list[JobEvent]:
        """Status transitions recorded after event `after_id`, oldest first; only of `owner`'s jobs, of
        one job, or of one group's jobs when given."""
        query = select(JobEvent).where(JobEvent.id > after_id).order_by(JobEvent.id).limit(limit)
        if owner is not None or group_id is not None:
            query = query.join(JobRow, JobRow.id == JobEvent.job_id)
            if owner is not None:
                query = query.where(JobRow.owner == owner)
            if group_id is not None:
                query = query.where(JobRow.group_id == group_id)
        if job_id is not None:
            query = query.where(JobEvent.job_id == job_id)
        with self.sessions() as session:
            return list(session.scalars(query))

    def figures(self, lease_s: float) -> StoreFigures:
        with self.sessions() as session:
            jobs = {(state, kind): count for state, kind, count in session.execute(
                select(JobRow.status, JobRow.kind, func.count()).group_by(JobRow.status, JobRow.kind))}
            seconds = run_seconds(session.get_bind().dialect.name)
            run_times = [RunTimes(kind, state, count, float(total or 0.0)) for kind, state, count, total in session.execute(
                select(JobRow.kind, JobRow.status, func.count(), func.sum(seconds))
                .where(JobRow.status.in_(FINISHED), JobRow.started_at.is_not(None), JobRow.finished_at.is_not(None))
                .group_by(JobRow.kind, JobRow.status))]
        workers = Counter(view.state.value for view in self.workers(lease_s))
        return StoreFigures(jobs, self.queue_lengths(), run_times, dict(sorted(workers.items())))


def no_job(ref: str) -> JobNotFound:
    """No job is `ref` (as resolve normalised it), with a hint when it is too short to be a prefix."""
    hint = f" (give the full id or at least {MIN_ID_PREFIX} characters of it)" if len(ref) < MIN_ID_PREFIX else ""
    return JobNotFound(f"no job {ref!r}{hint}")


def no_group(ref: str) -> GroupNotFound:
    hint = f" (give its name, its id or at least {MIN_ID_PREFIX} characters of it)" if len(ref) < MIN_ID_PREFIX else ""
    return GroupNotFound(f"no group {ref!r}{hint}")


def _filtered(where: JobFilter):
    if where.group_id:
        query = select(JobRow).where(JobRow.group_id == where.group_id).order_by(JobRow.group_index)
    else:
        query = select(JobRow).order_by(JobRow.submitted_at.desc(), JobRow.id.desc())
    if where.status:
        query = query.where(JobRow.status == where.status)
    if where.kind:
        query = query.where(JobRow.kind == where.kind)
    if where.queue:
        query = query.where(JobRow.queue == where.queue)
    if where.owner:
        query = query.where(JobRow.owner == where.owner)
    if where.prompt:
        query = query.where(JobRow.params["prompt"].as_string().icontains(where.prompt, autoescape=True))
    return query


def run_seconds(dialect: str):
    """A finished job's run time in seconds, as SQL."""
    if dialect == "postgresql":
        return func.extract("epoch", JobRow.finished_at - JobRow.started_at)
    return (func.julianday(JobRow.finished_at) - func.julianday(JobRow.started_at)) * 86400.0


def runs_of(events: Iterable[JobEvent]) -> list[Run]:
    """Each attempt of a job, from its transitions."""
    runs: list[Run] = []
    for event in events:
        if event.to_status == JobStatus.RUNNING.value:
            batch = event.reason if event.reason and "batch" in event.reason else None
            runs.append(Run(len(runs) + 1, event.worker, event.device, event.at, None, None, batch))
        elif event.from_status == JobStatus.RUNNING.value and runs:
            runs[-1] = dataclasses.replace(runs[-1], ended_at=event.at, ended=event.to_status)
    return runs


def swept_names(definition: dict[str, Any]) -> list[str]:
    """A group's swept parameters, in the order of its sweep (a prompt file's axis names prompt and negative)."""
    names: list[str] = []
    for name, values in definition["swept"].items():
        keys = [key for value in values if isinstance(value, dict) for key in value] or [name]
        names.extend(key for key in dict.fromkeys(keys) if key not in names)
    return names


def sweep_table(rows: Iterable[JobRow], swept: Sequence[str], summary: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per job: id, its swept values, status, seconds it ran, then the `summary` keys of its
    result (else the parameter of that name: a seed chosen at submit)."""
    table = []
    for row in rows:
        seconds = None
        if row.started_at and row.finished_at:
            seconds = round((row.finished_at - row.started_at).total_seconds(), 2)
        point, result = row.group_point or {}, row.result or {}
        line = {"id": row.id, **{name: point.get(name, row.params.get(name)) for name in swept},
                "status": row.status, "seconds": seconds}
        for key in summary:
            line.setdefault(key, result[key] if key in result else row.params.get(key))
        table.append(line)
    return table
