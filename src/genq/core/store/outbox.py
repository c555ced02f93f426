"""The webhook outbox: deliveries written with the ends they tell of, claimed and settled by the server.

`record_end` runs inside the transaction of a job's final transition (core.store.states.transition), so a
job's end and its webhook commit together or not at all: none is lost when a process dies after the
commit, none is sent for an end that rolled back. The job's webhook is its own URL, else its owner's
default; when it was the last unfinished job of its group, the group's webhook is written too (on
PostgreSQL the group's row is locked first, so of two jobs ending at once the later one sees the other).

A server claims due deliveries (`claim_due`: FOR UPDATE SKIP LOCKED on PostgreSQL, so two servers never
take the same one; a conditional UPDATE on SQLite) by pushing their due time past the POST, then records
each attempt (`settle`). A server killed mid-POST leaves the delivery due again once that time passes.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.core.store.clock import db_now_plus
from genq.core.store.models import ArtifactRow, GroupRow, JobRow, UserRow, WebhookAttempt, WebhookDelivery

PENDING, DELIVERED, GIVEN_UP = "pending", "delivered", "given_up"


def body_text(body: dict[str, Any]) -> str:
    """The JSON a delivery sends, fixed once: every attempt signs and sends the same bytes."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_end(session: Session, job: JobRow, ended: frozenset[str]) -> None:
    """`job` (as its final UPDATE returned it) just reached one of the `ended` states in this session's
    transaction: add its webhook delivery, and its group's when no job of the group is unfinished now."""
    default = None
    if (job.notify_url is None or job.group_id is not None) and job.owner is not None:
        default = session.scalar(select(UserRow.notify_url).where(UserRow.name == job.owner))
    if url := job.notify_url or default:
        artifacts = list(session.scalars(select(ArtifactRow.name).where(ArtifactRow.job_id == job.id)
                                         .order_by(ArtifactRow.name)))
        _add(session, url, job.owner, {"type": "job", "id": job.id, "kind": job.kind, "owner": job.owner,
                                       "status": job.status, "result": job.result, "error": job.error,
                                       "artifacts": artifacts, "group": job.group_id}, job_id=job.id)
    if job.group_id is None:
        return
    group_url = session.scalar(select(GroupRow.notify_url).where(GroupRow.id == job.group_id)) or default
    if not group_url:
        return
    locked = select(GroupRow).where(GroupRow.id == job.group_id)
    if session.get_bind().dialect.name == "postgresql":
        locked = locked.with_for_update()
    group = session.scalar(locked)
    counts = dict(session.execute(select(JobRow.status, func.count()).where(JobRow.group_id == group.id)
                                  .group_by(JobRow.status)).all())
    if all(status in ended for status in counts):
        _add(session, group_url, group.owner, {"type": "group", "id": group.id, "name": group.name, "kind": group.kind,
                                               "owner": group.owner, "size": group.size, "counts": dict(sorted(counts.items()))},
             group_id=group.id)


def _add(session: Session, url: str, owner: str | None, body: dict[str, Any], **subject: str) -> None:
    session.add(WebhookDelivery(id=str(uuid.uuid4()), owner=owner, url=url, body=body_text(body), state=PENDING,
                                attempts=0, created_at=db_now_plus(0), next_attempt_at=db_now_plus(0), **subject))


@dataclass(frozen=True)
class Due:
    """A claimed delivery: what to POST where, signed with whose secret, and how often it was tried before."""

    id: str
    url: str
    body: str
    owner: str | None
    attempts: int


class Outbox:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def claim_due(self, limit: int, hold_s: float) -> list[Due]:
        """Up to `limit` pending deliveries that are due, each made due again only `hold_s` from now (past
        its POST): this caller's to send. Never one another caller holds."""
        due = (WebhookDelivery.state == PENDING) & (WebhookDelivery.next_attempt_at <= db_now_plus(0))
        query = select(WebhookDelivery.id).where(due).order_by(WebhookDelivery.next_attempt_at).limit(limit)
        with self.sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if not ids:
                session.rollback()
                return []
            claimed = session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id.in_(ids), due)
                .values(next_attempt_at=db_now_plus(hold_s))
                .returning(WebhookDelivery.id, WebhookDelivery.url, WebhookDelivery.body, WebhookDelivery.owner,
                           WebhookDelivery.attempts)).all()
            session.commit()
        return [Due(*row) for row in claimed]

    def settle(self, delivery_id: str, http_status: int | None, error: str | None, delivered: bool,
               retry_in_s: float | None) -> None:
        """Record one attempt; the delivery is then delivered, due again in `retry_in_s`, or (None) given up.
        A delivery already delivered stays so (a late attempt of an earlier claim is only recorded)."""
        state = DELIVERED if delivered else PENDING if retry_in_s is not None else GIVEN_UP
        with self.sessions() as session:
            session.add(WebhookAttempt(delivery_id=delivery_id, at=db_now_plus(0), http_status=http_status, error=error))
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                          WebhookDelivery.state == PENDING)
                            .values(attempts=WebhookDelivery.attempts + 1, state=state,
                                    next_attempt_at=db_now_plus(retry_in_s or 0),
                                    delivered_at=db_now_plus(0) if delivered else None))
            session.commit()

    def secret_of(self, owner: str | None) -> str | None:
        """The webhook secret of `owner` when they are a user; None otherwise (the operator's secret signs)."""
        if owner is None:
            return None
        with self.sessions() as session:
            return session.scalar(select(UserRow.webhook_secret).where(UserRow.name == owner))


__all__ = ["DELIVERED", "GIVEN_UP", "PENDING", "Due", "Outbox", "body_text", "record_end"]
