"""What every command needs: settings, the store (after the schema check) and its read model."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import click

from genq.core.config import HOME_FOLDER, STORE_FILE, Settings, load_settings
from genq.core.reads import JobNotFound, Reads
from genq.core.store.db import SchemaError, normalize_url
from genq.core.store.jobs import JobStore
from genq.core.store.models import JobRow


class BadSettings(click.ClickException):
    """A GENQ_* value that cannot be used: bad input, one line, exit 2 (no usage hint: it is no option)."""

    exit_code = 2


def missing_store(settings: Settings) -> Path | None:
    """The SQLite file of the store when there is none yet (opening it would create it, and its folder)."""
    from sqlalchemy.engine import make_url

    url = make_url(normalize_url(settings.database_url))
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or url.query.get("uri"):
        return None
    path = Path(url.database).absolute()
    return None if path.exists() else path


def no_store(path: Path) -> str:
    """One line: there is no store at `path`, how to make one, and where an older genq kept its own."""
    line = f"no store at {path} yet: `client up` makes one (`client db upgrade` just the store)"
    older = Path(HOME_FOLDER, STORE_FILE).absolute()  # GENQ_HOME's default was ./.genq before it was ~/.genq
    if older != path and older.is_file():
        line += f"; {older} is an older genq's: GENQ_HOME={older.parent} uses it"
    return line


class LocalOnly(click.ClickException):
    """A command that works on this machine's store, broker or processes, asked for through a server: exit 2."""

    exit_code = 2


class Runtime:
    """Local mode (the store, broker and artifact store of GENQ_*), or remote mode when GENQ_ADDRESS or a
    `client login` names a genq server: then the same commands go over HTTP (genq.client.remote)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @cached_property
    def remote(self):
        """The server this client works through (genq.client.login.Remote), or None in local mode."""
        from genq.client.login import LoginError, remote_from_environment

        try:
            return remote_from_environment()
        except LoginError as exc:
            raise BadSettings(str(exc)) from None

    def local_only(self, command: str) -> None:
        """Refuse `command` in remote mode: it needs this machine's store, broker or processes."""
        if self.remote is not None:
            raise LocalOnly(f"`{command}` works on this machine's store and processes, not through a server "
                            f"({self.remote.address}, from {self.remote.source}): run it where genq runs, "
                            "or unset GENQ_ADDRESS (`client logout`)")

    @cached_property
    def settings(self) -> Settings:
        try:
            return self._settings or load_settings()
        except ValueError as exc:
            raise BadSettings(str(exc)) from None

    @cached_property
    def client(self):
        """The Python API (genq.api) this command line is a layer over."""
        from genq.api import Client

        if self.remote is not None:
            from genq.client.remote import RemoteClient

            return RemoteClient(remote=self.remote)
        return Client(self.settings)

    @cached_property
    def store(self) -> JobStore:
        self.local_only("the store")
        if (path := missing_store(self.settings)) is not None:  # say so; create nothing, not even the folder
            raise click.ClickException(no_store(path))
        try:
            return self.client.store
        except SchemaError as exc:
            raise click.ClickException(str(exc)) from exc

    @cached_property
    def reads(self) -> Reads:
        if self.remote is None:
            self.store  # the schema check, as a one-line error
        return self.client.reads

    def job_details(self, job: JobRow) -> dict:
        """`client show --json` of a job: read here, or the server's."""
        from genq.client.render import job_details

        if self.remote is not None:
            return self.reads.details(job.id)
        return job_details(self.reads, job, self.client.artifact_store)

    def worker_summaries(self, include_all: bool) -> list[dict]:
        """`client workers --json`: read here, or the server's."""
        from genq.client.render import worker_summary

        if self.remote is not None:
            return self.reads.worker_summaries(include_all)
        return [worker_summary(view) for view in self.reads.workers(self.settings.lease_s, include_all=include_all)]

    def job(self, ref: str) -> JobRow:
        try:
            return self.reads.resolve(ref)
        except JobNotFound as exc:
            raise click.ClickException(str(exc)) from exc

    def group(self, ref: str):
        """A genq.api.Group by its name, id or id prefix."""
        from genq.api import NotFound

        if self.remote is None:
            self.store  # the schema check, as a one-line error
        try:
            return self.client.group(ref)
        except NotFound as exc:
            raise click.ClickException(str(exc)) from exc


pass_runtime = click.make_pass_decorator(Runtime, ensure=True)
