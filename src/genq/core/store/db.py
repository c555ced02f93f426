"""Engines, sessions and the schema check: every command refuses an un-migrated database.

No wait on the database outlives its use. On PostgreSQL every session has a lock timeout, a
statement timeout and an idle-in-transaction timeout, all shorter than a job's lease: a process
paused inside a transaction (SIGSTOP, a stalled VM) has that transaction ended by the server and its
row locks freed, so a takeover is delayed by seconds, not held off for as long as the pause. A
timeout is an OperationalError, retried as a transient failure. On SQLite, writers wait at most the
busy timeout; a paused writer there holds the file's lock until it resumes or dies.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
DEFAULT_LEASE_S = 30.0  # genq.core.config's default lease, when an engine is made without settings
SQLITE_FILE_MODE = 0o600  # the store is private to its user; SQLite gives -wal/-shm the main file's mode
SQLITE_DIR_MODE = 0o700


class SchemaError(RuntimeError):
    """The database is not at the schema this version of genq expects: starting again cannot help."""


class StoreUnreachable(ConnectionError):
    """The database did not answer (down, restarting, unreachable): transient, worth waiting for."""


def session_timeouts_ms(lease_s: float) -> dict[str, int]:
    """PostgreSQL's per-session bounds for a fleet whose leases last `lease_s`: a lock is waited for at
    most a quarter of it, a statement runs at most half of it, and a transaction left idle (its
    process paused) is ended after half of it, so a takeover at lease expiry finds the row free."""
    lease_ms = max(int(lease_s * 1000), 4_000)
    return {"lock_timeout": lease_ms // 4, "statement_timeout": lease_ms // 2,
            "idle_in_transaction_session_timeout": lease_ms // 2}


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default driver is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, lease_s: float | None = DEFAULT_LEASE_S) -> Engine:
    """An engine for `url`; on PostgreSQL its sessions have the timeouts of `lease_s` (None: none, for
    migrations, whose statements may take long on a big table)."""
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
    connect_args = {}
    if lease_s is not None and parsed.get_backend_name() == "postgresql":
        connect_args["options"] = " ".join(f"-c {name}={ms}" for name, ms in session_timeouts_ms(lease_s).items())
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


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
    """SchemaError when the database is not at this version's schema (or cannot be used at all: bad
    credentials, no such database); StoreUnreachable when it did not answer, which may pass."""
    from genq.core.retry import is_transient

    url = engine.url.render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_transient(exc) and not refused_for_good(exc):
            raise StoreUnreachable(f"the database at {url} did not answer: {reason}") from exc
        raise SchemaError(f"cannot open the database at {url}: {reason}") from exc
    head = head_revision(str(engine.url))
    if current is None:
        raise SchemaError(f"the database at {url} is not initialised: run `client db upgrade`")
    if current != head:
        raise SchemaError(f"the database at {url} is at revision {current}, this genq needs {head}: run `client db upgrade`")


def refused_for_good(error: BaseException) -> bool:
    """A database that answered and said no (bad password, no such database or role): not an outage."""
    text = str(error).lower()
    return any(words in text for words in ("password authentication failed", "does not exist",
                                           "no password supplied", "permission denied", "unable to open database"))


def upgrade(url: str) -> tuple[str | None, str]:
    """Apply all migrations; returns (revision before, revision after)."""
    from alembic import command

    engine = make_engine(url, lease_s=None)
    try:
        before = current_revision(engine)
    finally:
        engine.dispose()
    command.upgrade(_alembic_config(url), "head")
    return before, head_revision(url)
