"""What every command needs: settings, the store (after the schema check), the Celery app."""
from __future__ import annotations

from functools import cached_property

import click

from genq.core.config import Settings, load_settings
from genq.core.store.db import SchemaError, check_schema, make_engine, session_factory
from genq.core.store.jobs import JobNotFound, JobStore
from genq.core.store.models import Job


OPEN_RETRY_S = 10.0  # a database restarting is back within this; a wrong URL should not keep the user waiting


class Runtime:
    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @cached_property
    def settings(self) -> Settings:
        try:
            return self._settings or load_settings()
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc

    @cached_property
    def store(self) -> JobStore:
        from genq.worker.retry import retrying

        engine = make_engine(self.settings.database_url)
        try:
            retrying(lambda: check_schema(engine), min(self.settings.retry_for_s, OPEN_RETRY_S), "opening the store")
        except SchemaError as exc:
            raise click.ClickException(str(exc)) from exc
        return JobStore(session_factory(engine))

    @cached_property
    def app(self):
        from genq.worker.app import make_app

        return make_app(self.settings)

    def job(self, ref: str) -> Job:
        try:
            return self.store.resolve(ref)
        except JobNotFound as exc:
            raise click.ClickException(str(exc)) from exc


pass_runtime = click.make_pass_decorator(Runtime, ensure=True)
