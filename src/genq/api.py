"""genq from Python: submit jobs and sweeps, follow them, read what they made.

    from genq import Client

    client = Client()                                   # the settings the CLI uses (GENQ_* variables)
    job = client.submit("train-vae", beta=4, epochs=2)
    group = client.sweep("sd", prompt=["a red bicycle", "a lighthouse"], seed=range(4), negative="blurry")
    group.wait()
    for row in group.table():                           # one dict per job: swept values, status, results
        print(row)

The command line is a layer over this module: the same validation, the same errors (SpecError,
one line naming the parameter), the same rows and wake-ups. A sweep's rows are stored in one
transaction (all or none) and its wake-ups are published over one broker connection.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from genq.core import sweeps
from genq.core.config import DEFAULT_PRIORITY, Settings, check_queue_name, load_settings
from genq.core.kinds import kind_class
from genq.core.params import JobParams, RunOptions, SpecError, parse, spec_error, text_problem
from genq.core.polling import StillWaiting, poll_until
from genq.core.reads import GroupNotFound, JobFilter, JobNotFound, Reads, swept_names
from genq.core.store import models
from genq.core.store.groups import GroupStore, PlannedJob
from genq.core.store.jobs import JobStore
from genq.core.store.states import JobStatus
from genq.core.store.users import OverLimit

__all__ = ["Client", "Job", "Group", "Artifact", "SpecError", "SweepPointError", "NotFound", "OverLimit"]

OPEN_RETRY_S = 10.0  # a database restarting is back within this; a wrong URL should not keep the caller waiting
SWEEPABLE = (list, tuple, range)  # in Client.sweep, a value of these types is swept; anything else is fixed
MAX_GROUP_NAME_CHARS = 200  # what the store keeps of a group's name


class SweepPointError(SpecError):
    """One point of a sweep is invalid (nothing of the sweep was stored); `point` holds its swept values."""

    def __init__(self, error: SpecError, point: Mapping[str, Any]) -> None:
        super().__init__(error.reason, error.field)
        self.point = dict(point)
        where = ", ".join(f"{name}={value}" for name, value in self.point.items())
        self.args = (f"sweep point {where}: {self.args[0]}",)


class NotFound(LookupError):
    """No such job or group."""


class Client:
    """A connection to genq's store and broker, with the settings of `settings` or of the environment.

    Jobs it submits are owned by `owner` (default: GENQ_USER, else "local"). With `sees_all` False it
    finds, lists and cancels only that owner's jobs and groups (another's is NotFound): what the
    server gives a user who is not an admin.
    """

    webhook_hosts_checked_elsewhere = False  # a `notify` URL's host is checked here against GENQ_WEBHOOK_ALLOW

    def __new__(cls, settings: Settings | None = None, owner: str | None = None, sees_all: bool = True, *,
                address: str | None = None, **remote: Any):
        """Client(address=..., token=...), or GENQ_ADDRESS (or `client login`) with no settings given: a
        client of that genq server over HTTP (genq.client.remote), with this same API."""
        if cls is Client and (address is not None or (settings is None and remote_configured())):
            from genq.client.remote import RemoteClient

            return super().__new__(RemoteClient)
        return super().__new__(cls)

    def __init__(self, settings: Settings | None = None, owner: str | None = None, sees_all: bool = True, *,
                 address: str | None = None, token: str | None = None) -> None:
        self._settings = settings
        self._owner = owner
        self.sees_all = sees_all

    @property
    def owner(self) -> str:
        return self._owner or self.settings.user

    @property
    def visible_owner(self) -> str | None:
        """Whose jobs this client may see: None for all of them."""
        return None if self.sees_all else self.owner

    def acting_as(self, owner: str, sees_all: bool) -> "Client":
        """A client over this one's store and engine that submits as `owner` and sees only their jobs
        unless `sees_all`."""
        other = Client(self.settings, owner, sees_all)
        for shared in ("store", "reads", "lifecycle", "artifact_store"):
            other.__dict__[shared] = getattr(self, shared)
        return other

    @cached_property
    def settings(self) -> Settings:
        return self._settings or load_settings()

    @cached_property
    def store(self) -> JobStore:
        from genq.core.retry import retrying
        from genq.core.store.db import check_schema, make_engine, session_factory

        engine = make_engine(self.settings.database_url, self.settings.lease_s)
        retrying(lambda: check_schema(engine), min(self.settings.retry_for_s, OPEN_RETRY_S), "opening the store")
        return JobStore(session_factory(engine), self.settings.queue_for)

    @cached_property
    def artifact_store(self):
        """Where the jobs' files are (GENQ_ARTIFACT_ROOT): a folder or an object store."""
        from genq.core.store.artifacts import open_artifact_store

        return open_artifact_store(self.settings.artifact_root)

    @cached_property
    def reads(self) -> Reads:
        """Every read of the store (jobs, their metrics, logs and artifacts, groups, workers)."""
        return Reads(self.store.sessions)

    @cached_property
    def groups(self) -> GroupStore:
        return self.lifecycle.groups

    @cached_property
    def lifecycle(self):
        """The engine every change of a job goes through (its Celery app is made on the first wake-up)."""
        from genq.core.lifecycle import Lifecycle

        return Lifecycle(self.store, self.settings)

    # -- submitting ----------------------------------------------------------------------
    def submit(self, kind: str | type[JobParams], *, after: str | None = None, time_limit: float | None = None, retries: int = 0,
               idempotency_key: str | None = None, queue: str | None = None, priority: int = DEFAULT_PRIORITY,
               notify: str | None = None, **params: Any) -> "Job":
        """Validate and store one job, then wake a worker (or wait for `after` to succeed first).
        `notify`: a webhook URL the server POSTs to when the job ends (its host in GENQ_WEBHOOK_ALLOW)."""
        options = run_options(time_limit, retries, idempotency_key, queue, priority, notify, self.settings,
                              self.webhook_hosts_checked_elsewhere)
        return self.submit_params(kind, params, after=after, options=options)

    def submit_params(self, kind: str | type[JobParams], params: Mapping[str, Any], *, after: str | None,
                      options: RunOptions) -> "Job":
        """`submit` with the parameters as one mapping (whatever their names) and the run options made."""
        planned = self.plan(kind, params, after)
        row, unsent = self.lifecycle.submit(planned.params, depends_on=planned.depends_on, options=options,
                                            owner=self.owner)
        return Job(self, row.id, unsent=unsent)

    def sweep(self, kind: str | type[JobParams], *, name: str | None = None, after: str | None = None,
              time_limit: float | None = None, retries: int = 0, queue: str | None = None,
              priority: int = DEFAULT_PRIORITY, confirm: bool = False, notify: str | None = None,
              **params: Any) -> "Group":
        """One job per point of the product of the list, tuple and range values (in the order given);
        other values are the same for every job. `confirm` allows more than GENQ_MAX_SWEEP jobs. `notify`:
        a webhook URL POSTed when each job ends, and when the last one has."""
        fixed = {key: value for key, value in params.items() if not isinstance(value, SWEEPABLE)}
        swept = [(key, value) for key, value in params.items() if isinstance(value, SWEEPABLE)]
        try:
            sweep = sweeps.build(fixed, swept)
        except sweeps.SweepError as exc:
            raise SpecError(str(exc)) from None
        return self.submit_sweep(kind, sweep, name=name, after=after, confirm=confirm,
                                 options=run_options(time_limit, retries, None, queue, priority, notify, self.settings,
                                                     self.webhook_hosts_checked_elsewhere))

    def submit_sweep(self, kind: str | type[JobParams], sweep: sweeps.Sweep, *, name: str | None, after: str | None,
                     options: RunOptions, confirm: bool = False) -> "Group":
        """Validate every point, store the group and all its jobs in one transaction, then wake workers."""
        if options.idempotency_key:
            raise SpecError("applies to one job, not to a sweep", "idempotency_key")
        if name is not None and not name.strip():
            raise SpecError("give the group a name, or no --group-name at all", "group_name")
        if name is not None and (problem := text_problem(name)):
            raise SpecError(problem, "group_name")
        if name is not None and len(name.strip()) > MAX_GROUP_NAME_CHARS:
            raise SpecError(f"must be at most {MAX_GROUP_NAME_CHARS} characters, got {len(name.strip())}", "group_name")
        try:
            sweeps.check_size(sweep, self.settings.max_sweep, confirm)
        except sweeps.SweepError as exc:
            raise SpecError(str(exc)) from None
        planned = []
        for point in sweep.points():
            try:
                plan = self.plan(kind, {**sweep.fixed, **point}, after)
            except SpecError as exc:
                raise SweepPointError(exc, point) from None
            planned.append(PlannedJob(plan.params, plan.depends_on, point))
        group, unsent = self.lifecycle.submit_group(kind_of(kind).kind, name.strip() if name else None,
                                                    sweep.definition(), planned, options, self.owner)
        return Group(self, group.id, unsent=unsent)

    def plan(self, kind: str | type[JobParams], values: Mapping[str, Any], after: str | None) -> PlannedJob:
        """One job's validated parameters (job references made full ids, a seed chosen) and the job it waits for.
        The store is read only for job references, once the parameters are valid."""
        cls = kind_of(kind)
        params = parse(cls, {key: value for key, value in values.items() if value is not None}, self.settings)
        waits_for = self._resolve(after, "after") if after is not None else None
        for ref_field, ref_kind in cls.job_refs().items():
            ref = self._resolve(getattr(params, ref_field), ref_field, ref_kind)
            if waits_for is not None and waits_for != ref:
                raise SpecError(f"must be the {ref_field} job for this kind (it already waits for it)", "after")
            params, waits_for = params.replace(**{ref_field: ref}), ref
        return PlannedJob(params, waits_for, {})  # a seed not given is chosen when the job is stored

    def _resolve(self, ref: str, field: str, required_kind: str | None = None) -> str:
        if problem := text_problem(ref):
            raise SpecError(problem, field)
        try:
            job = self.reads.resolve(ref, self.visible_owner)
        except LookupError as exc:
            raise SpecError(exc.args[0], field) from None
        if required_kind and job.kind != required_kind:
            raise SpecError(f"{ref} is a {job.kind} job, not a {required_kind} job", field)
        return job.id

    # -- reading -------------------------------------------------------------------------
    def artifact_path(self, row: models.ArtifactRow) -> Path | None:
        """The artifact's local file when the store is a folder, else None."""
        root = self.settings.artifact_root
        return root / row.relative_path if isinstance(root, Path) else None

    def follow_job(self, job_id: str, timeout: float | None, on_change=None) -> models.JobRow:
        """The job's row once it has finished (StillWaiting after `timeout` seconds); `on_change` sees each change."""
        return poll_until(lambda: self.reads.get(job_id), lambda row: JobStatus(row.status).finished, timeout, on_change)

    def follow_group(self, group: "Group", timeout: float | None, on_change=None) -> dict[str, int]:
        """The group's counts by state once every job has finished (StillWaiting after `timeout` seconds)."""
        return poll_until(group.counts, group.all_finished, timeout, on_change)

    def job(self, ref: str) -> "Job":
        """A job by its id or a unique prefix of it."""
        try:
            return Job(self, self.reads.resolve(ref, self.visible_owner).id)
        except JobNotFound as exc:
            raise NotFound(str(exc)) from None

    def group(self, ref: str) -> "Group":
        """A group by its id, a unique prefix of it, or its name (the latest group of that name)."""
        try:
            return Group(self, self.reads.resolve_group(ref, self.visible_owner).id)
        except GroupNotFound as exc:
            raise NotFound(str(exc)) from None

    def jobs(self, status: str | None = None, kind: str | None = None, limit: int = 20) -> list["Job"]:
        """The latest jobs first (of a state and kind, when given)."""
        where = JobFilter(status=status, kind=kind, owner=self.visible_owner)
        return [Job(self, row.id) for row in self.reads.jobs(where, limit)]


def remote_configured() -> bool:
    """Whether GENQ_ADDRESS, or a `client login`, points this process's clients at a genq server."""
    from genq.client.login import remote_from_environment

    return remote_from_environment() is not None


def kind_of(kind: str | type[JobParams]) -> type[JobParams]:
    """A kind by its name, or its declaration itself (a kind declared outside genq.core.kinds)."""
    return kind if isinstance(kind, type) else kind_class(kind)


def run_options(time_limit: float | None, retries: int, idempotency_key: str | None, queue: str | None,
                priority: int, notify: str | None = None, settings: Settings | None = None,
                allow_checked_elsewhere: bool = False) -> RunOptions:
    """How a job runs (time limit, retries, key, queue, priority, webhook), validated like its parameters
    (the webhook's host against `settings`, else the environment's; not here when `allow_checked_elsewhere`:
    a remote client's server checks it against its own GENQ_WEBHOOK_ALLOW)."""
    from pydantic import ValidationError

    if queue is not None:
        try:
            check_queue_name(queue)
        except ValueError as exc:
            raise SpecError(str(exc), "queue") from None
    try:
        return RunOptions.model_validate({"time_limit_s": time_limit, "retries": retries,
                                          "idempotency_key": idempotency_key, "queue": queue, "priority": priority,
                                          "notify": notify},
                                         context={"settings": settings, "allow_checked_elsewhere": allow_checked_elsewhere})
    except ValidationError as exc:
        error = spec_error(exc)
        raise SpecError(error.reason, {"time_limit_s": "time_limit"}.get(error.field, error.field)) from None


@dataclass(frozen=True)
class Artifact:
    """A file a job wrote, as the store recorded it; read from the artifact store (a folder or an object
    store) by streaming. `url` is where it lies; `path` the local file when the store is a folder, else None."""

    name: str
    url: str
    media_type: str
    size: int
    sha256: str
    path: Path | None = None
    store: Any = field(default=None, repr=False, compare=False)
    relative_path: str = field(default="", repr=False, compare=False)
    job_id: str = field(default="", repr=False, compare=False)

    def open(self):
        """The bytes as a stream, straight from the store (unverified: read() checks them)."""
        self.store.check_recorded(self.job_id, self.name, self.relative_path)
        return self.store.open(self.relative_path)

    def read(self) -> bytes:
        """The whole file, checked against its recorded size and sha256 (ArtifactUnreadable otherwise)."""
        import hashlib

        from genq.core.store.artifacts import ArtifactUnreadable

        with self.open() as source:
            data = source.read()
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise ArtifactUnreadable(f"artifact {self.name} does not match its recorded size and sha256: "
                                     "the file was changed after the job wrote it")
        return data

    def image(self):
        """The artifact as a PIL image (PNG artifacts)."""
        import io

        from PIL import Image

        if not self.media_type.startswith("image/"):
            raise ValueError(f"{self.name} is {self.media_type}, not an image")
        with Image.open(io.BytesIO(self.read())) as image:
            image.load()
            return image


class Job:
    """One job. Its attributes are read from the store each time (SQL is the only truth)."""

    def __init__(self, client: Client, job_id: str, unsent: str | None = None) -> None:
        self.client, self.id = client, job_id
        self.unsent = unsent  # why its wake-up was not sent at submit (a worker sends it later), or None

    def __repr__(self) -> str:
        return f"<genq.Job {self.id} {self.status}>"

    def row(self) -> models.JobRow:
        """The job's row as it is now."""
        return self.client.reads.get(self.id)

    @property
    def kind(self) -> str:
        return self.row().kind

    @property
    def status(self) -> str:
        return self.row().status

    @property
    def params(self) -> dict[str, Any]:
        return self.row().params

    @property
    def result(self) -> dict[str, Any] | None:
        return self.row().result

    @property
    def error(self) -> str | None:
        return self.row().error

    @property
    def finished(self) -> bool:
        return JobStatus(self.status).finished

    def wait(self, timeout: float | None = None) -> "Job":
        """Until the job has finished (any way); TimeoutError after `timeout` seconds."""
        try:
            self.client.follow_job(self.id, timeout)
        except StillWaiting as exc:
            raise TimeoutError(f"job {self.id} is still {exc.last.status} after {timeout:g}s") from None
        return self

    def metrics(self) -> dict[str, list[tuple[int, float]]]:
        """Each metric's (step, value) points, in step order."""
        return self.client.reads.metric_series(self.id)

    def artifacts(self) -> list[Artifact]:
        return [self._artifact(row) for row in self.client.reads.artifacts(self.id)]

    def artifact(self, name: str) -> Artifact:
        row = self.client.reads.artifact(self.id, name)
        if row is None:
            raise NotFound(f"job {self.id} has no artifact {name!r}")
        return self._artifact(row)

    def _artifact(self, row) -> Artifact:
        store = self.client.artifact_store
        return Artifact(row.name, store.url(row.relative_path), row.media_type, row.size, row.sha256,
                        self.client.artifact_path(row),
                        store, row.relative_path, row.job_id)

    def logs(self) -> list[str]:
        """Every log line of the job, oldest first (read a page at a time)."""
        lines, after = [], 0
        while page := self.client.reads.logs(self.id, after_id=after):
            lines += [line.message for line in page]
            after = page[-1].id
        return lines

    def cancel(self) -> str:
        """Ask the job to stop (a queued one never runs, and what waits for it fails); what happened, in words."""
        return self.client.lifecycle.cancel(self.id).message


class Group:
    """The jobs of one sweep."""

    def __init__(self, client: Client, group_id: str, unsent: str | None = None) -> None:
        self.client, self.id = client, group_id
        self.unsent = unsent
        row = client.reads.group(group_id)
        self.name, self.kind, self.size, self.definition = row.name, row.kind, row.size, row.definition
        self.created_at = row.created_at

    def __repr__(self) -> str:
        return f"<genq.Group {self.name or self.id} {self.kind} x{self.size}>"

    @property
    def swept(self) -> list[str]:
        """The swept parameters, in the order of the sweep (a prompt file's axis names prompt and negative)."""
        return swept_names(self.definition)

    @property
    def jobs(self) -> list[Job]:
        return [Job(self.client, row.id) for row in self.rows()]

    def rows(self) -> list[models.JobRow]:
        """The group's jobs as they are now, in the order of the sweep."""
        return self.client.reads.group_jobs(self.id)

    def counts(self) -> dict[str, int]:
        return dict(self.client.reads.group_counts(self.id))

    @property
    def finished(self) -> bool:
        return self.all_finished(self.counts())

    def all_finished(self, counts: Mapping[str, int]) -> bool:
        return sum(count for status, count in counts.items() if JobStatus(status).finished) == self.size

    def wait(self, timeout: float | None = None) -> "Group":
        """Until every job has finished (any way); TimeoutError after `timeout` seconds."""
        try:
            self.client.follow_group(self, timeout)
        except StillWaiting as exc:
            raise TimeoutError(f"group {self.id}: {exc.last} after {timeout:g}s") from None
        return self

    def cancel(self) -> dict[str, str]:
        """Cancel every job not finished yet: job id -> what happened."""
        return {done.job_id: done.message for done in self.client.lifecycle.cancel_group(self.id)}

    def table(self):
        """One dict per job: id, the swept values, status, seconds it ran, and the kind's result
        figures (test loss for train-vae, seed for sd). A pandas DataFrame when pandas is installed."""
        rows = self.client.reads.group_table(self.id)
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

