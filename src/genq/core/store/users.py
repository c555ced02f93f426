"""Users of the server: their tokens (kept only as sha256 hashes), admin flag, limits and webhook secret.

A token is `secrets.token_urlsafe(32)`: 256 random bits, so one unsalted sha256 is enough to keep it
(nothing to guess from the hash); a lookup hashes the token given and compares in SQL.

Limits are checked where the jobs are written: `max_queued` inside the submit's own transaction
(`check_queued_limit`), `max_running` inside the claim's UPDATE (`under_running_limit`). On PostgreSQL
both first lock the owner's user row, so two submits or claims of one owner cannot both pass a limit
that only one fits under.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from genq.core.config import LOCAL_USER as LOCAL_OWNER, USER_NAME
from genq.core.store.models import JobRow, UserRow, utcnow
from genq.core.store.states import JobStatus

TOKEN_BYTES = 32
UNFINISHED_NOT_RUNNING = (JobStatus.WAITING.value, JobStatus.QUEUED.value)


class UserError(ValueError):
    """A users command that cannot be done (bad name, taken name, no such user): one line."""


class OverLimit(ValueError):
    """A submit past its owner's max_queued: refused, nothing stored."""


@dataclass(frozen=True)
class User:
    name: str
    admin: bool
    max_running: int | None
    max_queued: int | None
    webhook_secret: str
    created_at: datetime
    revoked_at: datetime | None
    notify_url: str | None = None  # the webhook of their jobs submitted without one

    @classmethod
    def of(cls, row: UserRow) -> "User":
        return cls(row.name, bool(row.admin), row.max_running, row.max_queued, row.webhook_secret, row.created_at,
                   row.revoked_at, row.notify_url)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_user_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise UserError(f"user name {name!r}: 1-64 characters, lowercase letters, digits, '.', '_' or '-', "
                        "starting with a letter")
    return name


class UserStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def add(self, name: str, admin: bool = False) -> tuple[User, str]:
        """A new user and their token (shown once: only its hash is kept)."""
        check_user_name(name)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        row = UserRow(name=name, token_sha256=token_hash(token), admin=admin, max_running=None, max_queued=None,
                      webhook_secret=secrets.token_urlsafe(TOKEN_BYTES), created_at=utcnow(), revoked_at=None)
        try:
            with self.sessions() as session:
                session.add(row)
                session.commit()
        except IntegrityError:
            raise UserError(f"a user named {name!r} exists already") from None
        return User.of(row), token

    def revoke(self, name: str) -> User:
        """The user's token stops working at once; their jobs stay theirs."""
        with self.sessions() as session:
            row = self._row(session, name)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.commit()
            return User.of(row)

    def set(self, name: str, **values: int | str | None) -> User:
        """Set max_running, max_queued and/or notify_url (None removes a limit or the default webhook; a key
        not given keeps its value)."""
        with self.sessions() as session:
            row = self._row(session, name)
            for key, value in values.items():
                setattr(row, key, value)
            session.commit()
            return User.of(row)

    def list(self) -> list[User]:
        with self.sessions() as session:
            return [User.of(row) for row in session.scalars(select(UserRow).order_by(UserRow.name))]

    def get(self, name: str) -> User | None:
        with self.sessions() as session:
            row = session.get(UserRow, name)
            return None if row is None else User.of(row)

    def by_token(self, token: str) -> User | None:
        """The user whose token this is (revoked or not: the caller says 401 either way), else None."""
        with self.sessions() as session:
            row = session.scalar(select(UserRow).where(UserRow.token_sha256 == token_hash(token)))
            return None if row is None else User.of(row)

    def any(self) -> bool:
        """Whether any user exists (revoked ones count: a server once shared stays shared)."""
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(UserRow)) > 0

    @staticmethod
    def _row(session: Session, name: str) -> UserRow:
        row = session.get(UserRow, name)
        if row is None:
            raise UserError(f"no user {name!r}")
        return row


def lock_owner(session: Session, owner: str | None) -> UserRow | None:
    """The owner's user row, locked until this transaction ends on PostgreSQL (SQLite's writers are
    serialised anyway): None when the owner is no user (no limits apply)."""
    if owner is None:
        return None
    query = select(UserRow).where(UserRow.name == owner)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalar(query)


def lock_running_limited_owner_of(session: Session, job_id: str) -> None:
    """On PostgreSQL, before a claim: lock the user row of the job's owner if they have a running limit, so
    claims of their jobs run one after another and each counts the runs the others started. Owners
    without a limit are not locked: their claims never wait on each other."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(select(UserRow.name).join(JobRow, JobRow.owner == UserRow.name)
                    .where(JobRow.id == job_id, UserRow.max_running.is_not(None)).with_for_update(of=UserRow))


def check_queued_limit(session: Session, owner: str | None, adding: int) -> None:
    """OverLimit when `adding` more waiting or queued jobs would take `owner` past their max_queued.
    Call inside the transaction that inserts them, before the insert."""
    user = lock_owner(session, owner)
    if user is None or user.max_queued is None:
        return
    waiting = session.scalar(select(func.count()).select_from(JobRow)
                             .where(JobRow.owner == owner, JobRow.status.in_(UNFINISHED_NOT_RUNNING)))
    if waiting + adding > user.max_queued:
        what = "1 more job" if adding == 1 else f"{adding} more jobs"
        raise OverLimit(f"user {owner} may have at most {user.max_queued} jobs waiting or queued and has {waiting}: "
                        f"{what} would pass that limit (wait for some to start, or ask an admin for "
                        "`client users set --max-queued`)")


def under_running_limit():
    """A condition on a job's row, for the claim's UPDATE: its owner has no max_running, or fewer of
    their jobs than that are running. (The claim locks the owner's row first on PostgreSQL.) Written
    so that the running jobs are counted only for an owner who has a limit."""
    running = aliased(JobRow)
    running_count = (select(func.count()).select_from(running)
                     .where(running.owner == UserRow.name, running.status == JobStatus.RUNNING.value)
                     .scalar_subquery())
    return ~exists().where(UserRow.name == JobRow.owner, UserRow.max_running.is_not(None),
                           UserRow.max_running <= running_count)


def running_slots(session: Session, owner: str) -> int | None:
    """How many more of `owner`'s jobs may start now; None when they have no running limit."""
    user = session.get(UserRow, owner)
    if user is None or user.max_running is None:
        return None
    running = session.scalar(select(func.count()).select_from(JobRow)
                             .where(JobRow.owner == owner, JobRow.status == JobStatus.RUNNING.value))
    return max(user.max_running - running, 0)


__all__ = ["LOCAL_OWNER", "OverLimit", "User", "UserError", "UserStore", "check_queued_limit", "lock_owner",
           "lock_running_limited_owner_of", "running_slots", "token_hash", "under_running_limit"]
