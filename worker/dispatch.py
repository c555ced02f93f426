"""Wake-up messages: only a job's id, a disposable hint that SQL has work; losing one loses nothing.

Each message's Celery task id starts with the job id, so the reconciler can list which jobs have a
message in the broker (waiting in the queue, or delivered and not yet acknowledged).
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from celery import Celery
from kombu.exceptions import OperationalError

from genq.core.config import redact_url
from genq.core.store.jobs import JobStore
from genq.worker.app import RUN_JOB_TASK
from genq.worker.retry import retrying

log = logging.getLogger("genq.dispatch")

PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}
UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged messages
UNACKED_INDEX_KEY = "unacked_index"  # kombu's Redis transport: delivery tag -> when it was delivered (epoch s)
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: priority lists are `<queue>\x06\x16<priority>`


class BrokerUnavailable(RuntimeError):
    pass


def send(app: Celery, job_id: str) -> None:
    try:
        app.send_task(RUN_JOB_TASK, args=[job_id], task_id=f"{job_id}.{uuid.uuid4().hex[:8]}",
                      retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {redact_url(app.conf.broker_url)}: {exc}") from exc


def send_queued(app: Celery, store: JobStore, job_ids: list[str], retry_for_s: float = 0.0) -> None:
    """Wake a worker for each of these queued jobs and record when (the reconciler's clock)."""
    for job_id in job_ids:
        retrying(lambda: send(app, job_id), retry_for_s, f"sending job {job_id}")
    if job_ids:
        retrying(lambda: store.mark_sent(job_ids), retry_for_s, "recording sends")


def job_ids_in_broker(app: Celery, queue: str, unacked_for_at_most_s: float | None = None) -> set[str]:
    """The ids of the jobs with a message for `queue` in the broker: waiting in the queue (any
    priority), or delivered and not yet acknowledged. With `unacked_for_at_most_s`, a message
    delivered longer ago than that does not count: for a job still queued, its consumer died before
    the claim (Redis hands it back only after the visibility timeout)."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        messages = [json.loads(raw) for key in _queue_keys(client, queue) for raw in client.lrange(key, 0, -1)]
        oldest = None if unacked_for_at_most_s is None else time.time() - unacked_for_at_most_s
        for tag, raw in client.hgetall(UNACKED_KEY).items():
            message, _exchange, routing_key = json.loads(raw)
            if routing_key != queue:
                continue
            delivered = client.zscore(UNACKED_INDEX_KEY, tag) if oldest is not None else None
            if delivered is not None and delivered < oldest:
                continue
            messages.append(message)
    return {((message.get("headers") or {}).get("id") or "").split(".")[0] for message in messages}


def queued_message_count(app: Celery, queue: str) -> int:
    """How many messages wait in `queue` (any priority), not counting delivered ones."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        return sum(client.llen(key) for key in _queue_keys(client, queue))


def _queue_keys(client, queue: str) -> list:
    return [queue, *client.scan_iter(match=f"{queue}{PRIORITY_SEPARATOR}*")]
