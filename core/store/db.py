"""Engines, sessions and the schema check: every command refuses an un-migrated database."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_FILE_MODE = 0o600  # the store is private to its user; SQLite gives -wal/-shm the main file's mode
SQLITE_DIR_MODE = 0o700


class SchemaError(RuntimeError):
    """The database is not at the schema this version of genq expects."""


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default driver is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            _create_private_sqlite_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # several processes share the file
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _create_private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (its folder 0700 when genq makes it) before SQLite opens it:
    SQLite would create it with the umask's mode, readable by everyone under the usual 022."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=SQLITE_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(folder, SQLITE_DIR_MODE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), SQLITE_FILE_MODE)
    except FileExistsError:
        return  # an existing store keeps the mode it has
    os.close(fd)  # an empty file is a valid empty SQLite database


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)


def _alembic_config(url: str):
    from alembic.config import Config

    script_location = str(resources.files("genq.migrations"))
    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def head_revision(url: str) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
    except Exception as exc:  # unreachable server, bad credentials, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(f"cannot open the database at {url}: {reason}") from exc
    head = head_revision(str(engine.url))
    if current is None:
        raise SchemaError(f"the database at {url} is not initialised: run `client db upgrade`")
    if current != head:
        raise SchemaError(f"the database at {url} is at revision {current}, this genq needs {head}: run `client db upgrade`")


def upgrade(url: str) -> tuple[str | None, str]:
    """Apply all migrations; returns (revision before, revision after)."""
    from alembic import command

    engine = make_engine(url)
    try:
        before = current_revision(engine)
    finally:
        engine.dispose()
    command.upgrade(_alembic_config(url), "head")
    return before, head_revision(url)
