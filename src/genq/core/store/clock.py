"""Time in the store: leases and send times come from the database's clock, never a machine's own.

Every worker compares against the same clock, so skew between machines cannot make a live job
look dead. Timestamps are UTC; SQLite hands them back naive, `as_utc` makes them aware.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class db_now_plus(FunctionElement):
    """The database's current UTC time plus `seconds` (negative for the past), as a SQL expression."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now_plus"

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(literal(float(seconds)))


@compiles(db_now_plus)
def _postgresql(element, compiler, **kw) -> str:
    return f"(now() + {compiler.process(element.clauses, **kw)} * interval '1 second')"


@compiles(db_now_plus, "sqlite")
def _sqlite(element, compiler, **kw) -> str:
    # The same text format SQLAlchemy stores datetimes in, so comparisons with stored values hold.
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', {compiler.process(element.clauses, **kw)} || ' seconds')"


class db_clock_now(FunctionElement):
    """The database's wall clock when the statement runs (PostgreSQL's now() is its transaction's
    start): when an event really happened, even if its transaction first waited on a lock."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_clock_now"


@compiles(db_clock_now)
def _postgresql_clock(element, compiler, **kw) -> str:
    return "clock_timestamp()"


@compiles(db_clock_now, "sqlite")
def _sqlite_clock(element, compiler, **kw) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
