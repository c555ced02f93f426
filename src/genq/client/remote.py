"""genq over HTTP: what the CLI and genq.api read and do, answered by a genq server (`client server`).

A RemoteClient is genq.api's Client with its three parts replaced: the read model (RemoteReads:
rows built from the JSON the server answers, as transient ORM objects, so the render code is the
local one), the engine's verbs (RemoteLifecycle: submit and cancel), and the artifact store
(RemoteArtifactStore: each file streamed from the server into the local checked, staged download).
No database, broker or artifact folder is touched. Waiting follows the server's events stream
(`GET /api/events`), resumed with Last-Event-ID when the connection drops.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

from genq.api import Client, Group, Job, SweepPointError, kind_of
from genq.client.login import Remote, TOKEN_VARIABLE, read_login, remote_from_environment
from genq.core import sweeps
from genq.core.params import JobParams, RunOptions, SpecError
from genq.core.polling import StillWaiting
from genq.core.reads import GroupNotFound, JobFilter, JobNotFound, no_group, no_job
from genq.core.store.artifacts import ArtifactUnreadable
from genq.core.store.models import ArtifactRow, GroupRow, JobLog, JobRow
from genq.core.store.states import JobStatus
from genq.core.store.users import OverLimit

CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0  # a sweep of thousands of jobs is validated and stored within one request
STREAM_READ_S = 20.0  # the events stream is opened again (Last-Event-ID) after this long without a byte
PAGE_SIZE = 200  # the server's largest page of jobs
DOWNLOAD_CHUNK_BYTES = 1 << 20
HANDLED_ERRORS = (404, 422, 429)  # not found, invalid, over a limit: each said as local mode says it


class RemoteError(Exception):
    """The server cannot be reached, refuses the token, or fails: one line, exit 1."""


class ServerUnreachable(RemoteError, ConnectionError):
    pass


class ServerRefused(RemoteError, PermissionError):
    pass


class ServerFailed(RemoteError):
    pass


class NoStoreHere(RemoteError):
    """A remote client has no store, broker or artifact folder of its own."""


def detail_of(response) -> str:
    """The server's one-line reason (FastAPI's `detail`), else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = response.text.strip()[:200] or response.reason_phrase
    return detail.splitlines()[0] if detail else str(response.status_code)


class Connection:
    """One HTTP client for one server and token; every answer checked for the errors that are no one's input."""

    def __init__(self, address: str, token: str) -> None:
        import httpx

        from genq import __version__

        self.address = address
        self.http = httpx.Client(base_url=address, timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                                 headers={"Authorization": f"Bearer {token}", "User-Agent": f"genq/{__version__}"})

    def request(self, method: str, path: str, **kwargs):
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None
        return self.checked(response)

    def get(self, path: str, **params):
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    @contextmanager
    def stream(self, path: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
               read_s: float | None = None):
        """A streamed GET; an error answer is read whole and checked before it is given."""
        import httpx

        timeout = httpx.Timeout(REQUEST_TIMEOUT_S if read_s is None else read_s, connect=CONNECT_TIMEOUT_S)
        try:
            with self.http.stream("GET", path, params=params, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                yield self.checked(response)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self.unreachable(exc) from None

    def checked(self, response):
        """The answer, unless it is one no caller handles: 401 (the token), 5xx, or another 4xx than 404,
        422 and 429 (a proxy's, or no genq server's)."""
        if response.status_code == 401:
            raise ServerRefused(f"the genq server at {self.address} refused the token: {detail_of(response)}")
        if response.status_code >= 500:
            raise ServerFailed(f"the genq server at {self.address} failed ({response.status_code}): {detail_of(response)}")
        if response.status_code >= 400 and response.status_code not in HANDLED_ERRORS:
            raise ServerFailed(f"the server at {self.address} answered {response.status_code}: {detail_of(response)}")
        return response

    def json(self, response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServerFailed(f"the server at {self.address} did not answer JSON: is it a genq server?") from None

    def unreachable(self, exc: Exception) -> ServerUnreachable:
        reason = (str(exc) or type(exc).__name__).strip().splitlines()[0]
        return ServerUnreachable(f"cannot reach the genq server at {self.address}: {reason}")


# -- rows from the server's JSON (the shapes `--json` prints) -------------------------------------------
def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def job_row(data: Mapping[str, Any]) -> JobRow:
    progress = data["progress"]
    return JobRow(id=data["id"], kind=data["kind"], status=data["status"], params=data["params"], result=data["result"],
                  error=data["error"], attempts=data["attempts"], worker_host=data["worker"],
                  depends_on=data["depends_on"], submitted_at=moment(data["submitted_at"]),
                  started_at=moment(data["started_at"]), finished_at=moment(data["finished_at"]),
                  heartbeat_at=moment(data["heartbeat_at"]), lease_until=moment(data["lease_until"]),
                  queue=data["queue"], priority=data["priority"], group_id=data["group"],
                  group_point=data["group_point"], progress_done=progress["done"], progress_total=progress["total"],
                  progress_message=progress["message"])


def group_row(data: Mapping[str, Any]) -> GroupRow:
    return GroupRow(id=data["id"], name=data["name"], kind=data["kind"], size=data["size"],
                    definition=data["definition"], created_at=moment(data["created_at"]))


def artifact_row(job_id: str, data: Mapping[str, Any]) -> ArtifactRow:
    """`relative_path` holds where the server says the file lies (what listings show)."""
    return ArtifactRow(job_id=job_id, name=data["name"], relative_path=data["path"], media_type=data["media_type"],
                       size=data["bytes"], sha256=data["sha256"])


def log_row(job_id: str, data: Mapping[str, Any]) -> JobLog:
    return JobLog(id=data["id"], job_id=job_id, at=moment(data["at"]), level=data["level"], message=data["message"],
                  attempt=data["attempt"])


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str | None, Any]]:
    """(event, id, data) of each server-sent event."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield fields.get("event", "message"), fields.get("id"), json.loads("\n".join(data))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


def path_part(ref: str) -> str:
    return quote(ref, safe="")


# -- the read model ------------------------------------------------------------------------------------------
class RemoteReads:
    """The reads of genq.core.reads.Reads that the CLI and genq.api use, over HTTP. The server scopes
    every answer to the token's user, so an `owner` argument is not needed here."""

    def __init__(self, connection: Connection, artifact_store: "RemoteArtifactStore") -> None:
        self.connection = connection
        self.artifact_store = artifact_store
        self._groups: dict[str, GroupRow] = {}  # a group's row never changes once stored

    # jobs
    def details(self, ref: str) -> dict[str, Any]:
        """`client show --json` of a job; JobNotFound with the line local mode says (the server's 404 names nothing)."""
        ref = ref.strip().lower()
        response = self.connection.get(f"/api/jobs/{path_part(ref)}")
        if response.status_code == 404:
            raise no_job(ref)
        return self.connection.json(response)

    def get(self, job_id: str) -> JobRow | None:
        try:
            return job_row(self.details(job_id))
        except JobNotFound:
            return None

    def resolve(self, ref: str, owner: str | None = None) -> JobRow:
        return job_row(self.details(ref))

    def jobs(self, where: JobFilter = JobFilter(), limit: int | None = 20, offset: int = 0) -> list[JobRow]:
        """Newest first (a group's in sweep order), a page of the server's at a time."""
        size = PAGE_SIZE if limit is None else min(limit, PAGE_SIZE)
        if offset % size:
            raise ValueError(f"offset {offset} is not a whole number of pages of {size}")
        found: list[JobRow] = []
        page = offset // size + 1
        while limit is None or len(found) < limit:
            answer = self.connection.json(self.connection.get(
                "/api/jobs", status=where.status, kind=where.kind, group=where.group_id, queue=where.queue,
                prompt=where.prompt, limit=size, page=page))
            found += [job_row(data) for data in answer]
            if len(answer) < size:
                break
            page += 1
        return found if limit is None else found[:limit]

    def logs(self, job_id: str, after_id: int = 0, limit: int | None = None) -> list[JobLog]:
        response = self.connection.get(f"/api/jobs/{path_part(job_id)}/logs", after=after_id)
        if response.status_code == 404:
            raise no_job(job_id)
        lines = [log_row(job_id, data) for data in self.connection.json(response)]
        return lines if limit is None else lines[:limit]

    def metric_series(self, job_id: str) -> dict[str, list[tuple[int, float]]]:
        series = self.connection.json(self.connection.get(f"/api/jobs/{path_part(job_id)}/metrics"))
        return {name: [(point["step"], point["value"]) for point in points] for name, points in series.items()}

    def artifacts(self, job_id: str) -> list[ArtifactRow]:
        response = self.connection.get(f"/api/jobs/{path_part(job_id)}/artifacts")
        if response.status_code == 404:
            raise no_job(job_id)
        rows = [artifact_row(job_id, data) for data in self.connection.json(response)]
        for row in rows:
            self.artifact_store.remember(row)
        return rows

    def artifact(self, job_id: str, name: str) -> ArtifactRow | None:
        return next((row for row in self.artifacts(job_id) if row.name == name), None)

    # groups
    def group_summary(self, ref: str) -> dict[str, Any]:
        """`client group --json` of a group."""
        ref = ref.strip()
        response = self.connection.get(f"/api/groups/{path_part(ref)}")
        if response.status_code == 404:
            raise no_group(ref)
        summary = self.connection.json(response)
        self._groups[summary["id"]] = group_row(summary)
        return summary

    def group(self, group_id: str) -> GroupRow | None:
        if group_id not in self._groups:
            try:
                self.group_summary(group_id)
            except GroupNotFound:
                return None
        return self._groups[group_id]

    def resolve_group(self, ref: str, owner: str | None = None) -> GroupRow:
        return self._groups[self.group_summary(ref)["id"]]

    def remember_group(self, summary: Mapping[str, Any]) -> None:
        self._groups[summary["id"]] = group_row(summary)

    def group_jobs(self, group_id: str) -> list[JobRow]:
        return self.jobs(JobFilter(group_id=group_id), None)

    def group_counts(self, group_id: str) -> Counter:
        return Counter(self.group_summary(group_id)["counts"])

    def group_table(self, group_id: str, rows=None) -> list[dict[str, Any]]:
        return self.group_summary(group_id)["jobs"]

    def webhooks(self, job_id: str | None = None, group_id: str | None = None) -> list[tuple[Any, list[Any]]]:
        """The webhook deliveries of a job's or a group's end, with their attempts, as the server lists them."""
        listed = self.details(job_id)["webhooks"] if job_id is not None else self.group_summary(group_id)["webhooks"]
        return [(SimpleNamespace(**{**hook, "delivered_at": moment(hook["delivered_at"]),
                                    "next_attempt_at": moment(hook["next_attempt_at"])}),
                 [SimpleNamespace(**{**attempt, "at": moment(attempt["at"])}) for attempt in hook["attempts"]])
                for hook in listed]

    # the fleet
    def worker_summaries(self, include_all: bool = False) -> list[dict[str, Any]]:
        """`client workers --json`."""
        return self.connection.json(self.connection.get("/api/workers", all=str(include_all).lower()))

    # the events stream
    def events(self, params: Mapping[str, str], deadline: float | None) -> Iterator[tuple[str, Any]]:
        """(event, data) from GET /api/events, opened again after a silence or a dropped connection with
        the last event id seen (Last-Event-ID); ends after the `end` event, or at the deadline."""
        import httpx

        last_id: str | None = None
        while deadline is None or deadline - time.monotonic() > 0:
            read_s = STREAM_READ_S if deadline is None else max(0.05, min(STREAM_READ_S, deadline - time.monotonic()))
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.connection.stream("/api/events", params, headers, read_s) as response:
                    if response.status_code == 404:
                        raise no_group(params["group"]) if "group" in params else no_job(params["job"])
                    for event, event_id, data in sse_events(response.iter_lines()):
                        last_id = event_id or last_id
                        yield event, data
                        if event == "end":
                            return
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError):
                continue  # silent for read_s, or cut off: open it again


# -- the engine's verbs ---------------------------------------------------------------------------------
class RemoteLifecycle:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def cancel(self, job_id: str) -> SimpleNamespace:
        response = self.connection.request("POST", f"/api/jobs/{path_part(job_id)}/cancel")
        if response.status_code == 404:
            raise no_job(job_id)
        answer = self.connection.json(response)
        return SimpleNamespace(message=answer["message"], failed_dependents=answer["failed_dependents"],
                               status=answer["status"])

    def cancel_group(self, group_id: str) -> list[SimpleNamespace]:
        response = self.connection.request("POST", f"/api/groups/{path_part(group_id)}/cancel")
        if response.status_code == 404:
            raise no_group(group_id)
        return [SimpleNamespace(job_id=job_id, message=message) for job_id, message in self.connection.json(response)["jobs"].items()]

    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /api/jobs: the job's or the group's JSON; the server's refusals as genq.api raises them."""
        response = self.connection.request("POST", "/api/jobs", json=body)
        if response.status_code == 422:
            raise spec_error(self.connection.json(response).get("detail"))
        if response.status_code == 429:
            raise OverLimit(detail_of(response))
        if response.status_code >= 400:
            raise SpecError(detail_of(response))
        return self.connection.json(response)


def spec_error(detail: Any) -> SpecError:
    """A 422's first error as the SpecError the local client raises (so the CLI says the same line)."""
    first = detail[0] if isinstance(detail, list) and detail and isinstance(detail[0], dict) else {"msg": str(detail)}
    context = first.get("ctx") or {}
    if "reason" in context:
        error = SpecError(context["reason"], context.get("field"))
        return SweepPointError(error, context["point"]) if context.get("point") is not None else error
    where = [part for part in first.get("loc", []) if part not in ("body", "params")]
    field = where[-1] if where and isinstance(where[-1], str) and where[-1] != "sweep" else None
    return SpecError(str(first.get("msg", "")), field)


# -- the artifact store ---------------------------------------------------------------------------------
class RemoteArtifactStore:
    """Artifacts as the server streams them. A row's `relative_path` is the server's path for it, which
    listings show; the (job, name) behind each is remembered when the rows are read."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._sources: dict[str, ArtifactRow] = {}

    def remember(self, row: ArtifactRow) -> None:
        self._sources[row.relative_path] = row

    def url(self, relative_path: str) -> str:
        return relative_path

    def check_recorded(self, job_id: str, name: str, relative_path: str) -> None:
        """The server checks its own index rows; the copy is checked here against the sha256 listed."""

    def open(self, relative_path: str) -> "ArtifactStream":
        row = self._sources.get(relative_path)
        if row is None:
            raise ArtifactUnreadable(f"{relative_path} was not listed by the server")
        return ArtifactStream(self.connection, row)


class ArtifactStream:
    """One artifact's bytes from GET /api/jobs/{id}/artifacts/{name}, read like a file."""

    def __init__(self, connection: Connection, row: ArtifactRow) -> None:
        import httpx

        self.name = row.name
        path = f"/api/jobs/{path_part(row.job_id)}/artifacts/{quote(row.name)}"
        try:
            self.response = connection.http.send(connection.http.build_request("GET", path), stream=True)
        except httpx.TransportError as exc:
            raise connection.unreachable(exc) from None
        if self.response.status_code >= 400:
            self.response.read()
            self.response.close()
            connection.checked(self.response)
            raise ArtifactUnreadable(f"the server cannot send it: {detail_of(self.response)}")
        if self.response.headers.get("X-Genq-Sha256", row.sha256) != row.sha256:
            self.response.close()
            raise ArtifactUnreadable("the server sends another sha256 than it listed")
        self.chunks = self.response.iter_bytes(DOWNLOAD_CHUNK_BYTES)

    def read(self, size: int = -1) -> bytes:
        import httpx

        try:
            if size < 0:
                return b"".join(self.chunks)
            return next(self.chunks, b"")
        except httpx.HTTPError as exc:
            raise ArtifactUnreadable(f"the download from the server broke off: {exc or type(exc).__name__}") from None

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> "ArtifactStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- the client ---------------------------------------------------------------------------------------------
class RemoteClient(Client):
    """genq.api's Client through a genq server: `address` and `token`, else GENQ_ADDRESS/GENQ_TOKEN or
    the login file. The server decides whose jobs these are and which it shows."""

    webhook_hosts_checked_elsewhere = True  # by the server, against its own GENQ_WEBHOOK_ALLOW

    def __init__(self, settings=None, owner: str | None = None, sees_all: bool = True, *, address: str | None = None,
                 token: str | None = None, remote: Remote | None = None) -> None:
        super().__init__(settings, owner, sees_all)
        self.remote = remote or chosen_remote(address, token)
        self.connection = Connection(self.remote.address, self.remote.token)

    def __repr__(self) -> str:
        return f"<genq.Client {self.remote.address}>"

    @property
    def store(self):
        raise NoStoreHere(f"a client of the genq server at {self.remote.address} has no store of its own")

    @property
    def visible_owner(self) -> str | None:
        return None  # the server answers only what the token's user may see

    def acting_as(self, owner: str, sees_all: bool) -> Client:
        raise NoStoreHere("acting as another user is the server's, not a remote client's")

    # its parts
    @cached_property
    def artifact_store(self) -> RemoteArtifactStore:
        return RemoteArtifactStore(self.connection)

    @cached_property
    def reads(self) -> RemoteReads:
        return RemoteReads(self.connection, self.artifact_store)

    @cached_property
    def lifecycle(self) -> RemoteLifecycle:
        return RemoteLifecycle(self.connection)

    def artifact_path(self, row: ArtifactRow):
        return None  # no local file: read it with Artifact.open / read

    # submitting: the server validates and stores; its refusals are raised as the local client raises them
    def submit_params(self, kind: str | type[JobParams], params: Mapping[str, Any], *, after: str | None,
                      options: RunOptions) -> Job:
        answer = self.lifecycle.submit(submit_body(kind, params, after, options))
        return Job(self, answer["id"])

    def submit_sweep(self, kind: str | type[JobParams], sweep: sweeps.Sweep, *, name: str | None, after: str | None,
                     options: RunOptions, confirm: bool = False) -> Group:
        if options.idempotency_key:
            raise SpecError("applies to one job, not to a sweep", "idempotency_key")
        swept = {axis: list(values) for axis, values in sweep.swept.items()}
        answer = self.lifecycle.submit(submit_body(kind, sweep.fixed, after, options, sweep=swept, group_name=name,
                                                   confirm=confirm))
        self.reads.remember_group(answer)
        return Group(self, answer["id"])

    # waiting: the server's events stream, not polling
    def follow_job(self, job_id: str, timeout: float | None, on_change: Callable[[JobRow], None] | None = None) -> JobRow:
        deadline = None if timeout is None else time.monotonic() + timeout
        row: JobRow | None = None
        for event, data in self.reads.events({"job": job_id}, deadline):
            if event == "progress" and row is not None:
                row.progress_done, row.progress_total, row.progress_message = data["done"], data["total"], data["message"]
            elif event == "state" and row is not None and not JobStatus(data["to"]).finished:
                row.status = data["to"]
            elif event in ("state", "end"):
                row = self.reads.get(job_id)
            if row is None:
                continue
            if on_change is not None:
                on_change(row)
            if JobStatus(row.status).finished:
                return row
        raise StillWaiting(self.reads.get(job_id), timeout)

    def follow_group(self, group: Group, timeout: float | None,
                     on_change: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
        deadline = None if timeout is None else time.monotonic() + timeout
        statuses: dict[str, str] = {}
        counts: dict[str, int] = {}
        for event, data in self.reads.events({"group": group.id}, deadline):
            if event == "state":
                statuses[data["job"]] = data["to"]
                counts = dict(sorted(Counter(statuses.values()).items()))
            elif event == "end":
                counts = data["counts"]
            else:
                continue
            if on_change is not None:
                on_change(counts)
            if group.all_finished(counts):
                return counts
        raise StillWaiting(counts, timeout)


def submit_body(kind: str | type[JobParams], params: Mapping[str, Any], after: str | None, options: RunOptions,
                **more: Any) -> dict[str, Any]:
    """POST /api/jobs's body: the run options as given (every one the server's SubmitOptions has, by
    name; only the time limit is named differently there), the parameters given, and `more`."""
    run = options.model_dump(mode="json", exclude_defaults=True)
    if "time_limit_s" in run:
        run["time_limit"] = run.pop("time_limit_s")
    body = {"kind": kind_of(kind).kind, "params": {key: value for key, value in params.items() if value is not None},
            **run, **{key: value for key, value in more.items() if value not in (None, False)}}
    if after is not None:
        body["after"] = after
    return body


def chosen_remote(address: str | None, token: str | None) -> Remote:
    """The server and token for Client(address=..., token=...): what is given, else the environment's."""
    import os

    from genq.client.login import LoginError, checked_address

    if address is None:
        found = remote_from_environment()
        if found is None:
            raise LoginError("no server: give address=, or set GENQ_ADDRESS (or `client login ADDRESS`)")
        return Remote(found.address, token or found.token, found.source)
    address = checked_address(address)
    saved = read_login()
    token = token or os.environ.get(TOKEN_VARIABLE, "").strip() or (
        saved["token"] if saved is not None and saved["address"].rstrip("/") == address else "")
    if not token:
        raise LoginError(f"no token for {address}: give token=, set {TOKEN_VARIABLE}, or `client login {address}`")
    return Remote(address, token, "address=")
