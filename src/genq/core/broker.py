"""The broker side of genq: the Celery app, and the wake-up messages sent through it.

A wake-up carries only a job's id: a disposable hint that SQL has work; losing one loses nothing.
Each message's Celery task id starts with the job id, so the reconciler can list which jobs have a
message in the broker (waiting in the queue, or delivered and not yet acknowledged). The app is
configured for long GPU jobs (see GUIDE.md, "Pitfalls").
"""
from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from queue import Empty
from typing import Any, Literal

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.transport import redis as kombu_redis
from pydantic import BaseModel, TypeAdapter, ValidationError, field_validator
from redis.exceptions import RedisError

from genq.core.config import Settings, load_settings, redact_url

log = logging.getLogger("genq.broker")

PRIORITY_SEPARATOR = ":"  # kombu's Redis transport option `sep`: priority lists are `<queue>:<n>`
PRIORITY_STEPS = list(range(10))  # kombu's Redis transport option `priority_steps`: one list per priority

RUN_JOB_TASK = "genq.run_job"
BrokerApp = Celery  # what make_app returns; the engine knows it by this name, never by Celery's


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = Celery("genq", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # status lives in SQL, never in Celery's result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Task events (received, started, succeeded/failed/retried) for Celery's monitors: Flower and
        # `celery -A genq events` show each job's task with its outcome (worker/tasks.py: task_outcome)
        worker_send_task_events=True,
        task_default_queue=settings.queue,  # every send names the job's own queue (publish, below)
        # Priorities on Redis: one list per priority step, the list of step 0 popped first.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  "priority_steps": PRIORITY_STEPS, "sep": PRIORITY_SEPARATOR},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a broker outage of any length is waited out, at start and after
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_transport=f"{__name__}:Transport",  # kombu's Redis transport, dropping malformed messages (below)
    )
    app.genq_settings = settings
    return app


PUBLISH_BATCH = 500  # messages per pipelined round trip
UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged messages
UNACKED_INDEX_KEY = "unacked_index"  # kombu's Redis transport: delivery tag -> when it was delivered (epoch s)


class BrokerUnavailable(RuntimeError):
    pass


# The jobs are stored before their wake-ups go out: past this, a send gives up and a worker's reconciler
# sends them once the broker answers, rather than keeping a submitting user waiting.
SEND_RETRY_S = 10.0


def broker_priority(priority: int) -> int:
    """genq's priority (0..9, higher first) as kombu's on Redis, where the list of 0 is popped first."""
    return max(PRIORITY_STEPS) - priority


def priority_lists(queue: str) -> list[str]:
    """The Redis lists a queue's messages wait in, the first popped first: `gpu`, `gpu:1` ... `gpu:9`."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


def task_message(app: Celery, job_id: str):
    """A job's wake-up as Celery's task protocol has it: task genq.run_job, args [job id], a task id that
    starts with the job id (reprs given: the default repr of the args costs more than the rest)."""
    return app.amqp.create_task_message(f"{job_id}.{uuid.uuid4().hex[:8]}", RUN_JOB_TASK, [job_id], {},
                                        argsrepr=repr([job_id]), kwargsrepr="{}")


def publish(app: Celery, job_ids: list[str], routes: dict[str, tuple[str, int]]) -> None:
    """All the wake-ups over one connection, pipelined (kombu's publish batch: one round trip to
    Redis per PUBLISH_BATCH messages). A retry after a failed flush may send some twice, which costs
    nothing: a second delivery of a job finds it claimed and is dropped."""
    if not job_ids:
        return
    try:
        with app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH):
            declared = set()
            for job_id in job_ids:
                queue, priority = routes[job_id]
                if queue not in declared:  # once per queue, not per message (kombu would bind a copy each time)
                    producer.maybe_declare(app.amqp.queues[queue])
                    declared.add(queue)
                # Buffered until the batch flushes: a failure shows there, and the caller retries the whole
                app.amqp.send_task_message(producer, RUN_JOB_TASK, task_message(app, job_id), queue=queue,
                                           routing_key=queue, priority=broker_priority(priority), retry=False,
                                           declare=[])
    except (OperationalError, OSError, RedisError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {redact_url(app.conf.broker_url)}: {exc}") from exc


def job_ids_in_broker(app: Celery, queue: str, unacked_for_at_most_s: float | None = None) -> set[str]:
    """The ids of the jobs with a message for `queue` in the broker: waiting in the queue (any
    priority), or delivered and not yet acknowledged. With `unacked_for_at_most_s`, a message
    delivered longer ago than that does not count: for a job still queued, its consumer died before
    the claim (Redis hands it back only after the visibility timeout)."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        messages = [message for key in priority_lists(queue) for raw in client.lrange(key, 0, -1)
                    if (message := waiting_message(raw)) is not None]
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


def waiting_message(raw: bytes) -> dict | None:
    """A message waiting in a queue's list, decoded; None for a malformed one (a worker drops it when it pops it)."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return None if envelope_problem(message) else message


def queued_message_count(app: Celery, queue: str) -> int:
    """How many messages wait in `queue` (any priority), not counting delivered ones."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        return sum(client.llen(key) for key in priority_lists(queue))


# -- what a worker takes off its queues ------------------------------------------------------------------
# kombu's Redis transport decodes each message it pops (BRPOP, or RPOP in basic_get) and hands it to
# Celery; a message that is not JSON, or not the envelope both expect, raised out of the worker's loop
# and killed it. Anything can be pushed onto a queue's list, so each is checked first: a malformed one
# is logged and dropped (popping removed it; it was never in the unacknowledged set) and the worker goes on.
MALFORMED_SHOWN = 200  # characters of a dropped message the log shows
# What kombu's JSON decoding raises, its type hooks' (dates, decimals, UUIDs) included.
DECODE_ERRORS = (ValueError, TypeError, ArithmeticError, RecursionError)
TASK_CALL = TypeAdapter(tuple[list, dict, dict])  # Celery's task protocol 2: the body is (args, kwargs, embed)


class _DeliveryInfo(BaseModel):
    exchange: str
    routing_key: str


class _Properties(BaseModel):
    delivery_tag: str
    delivery_info: _DeliveryInfo
    body_encoding: Literal["base64"]


class Envelope(BaseModel):
    """A message as kombu's Redis transport stores it: what kombu needs to hand it over."""

    body: str
    properties: _Properties
    headers: dict[str, Any] | None = None

    @field_validator("body")
    @classmethod
    def _base64(cls, body: str) -> str:
        base64.b64decode(body, validate=True)
        return body


class _TaskHeaders(BaseModel):
    id: str
    task: str
    timelimit: tuple[float | None, float | None] | None = None


class TaskCall(BaseModel):
    """A Celery task call (protocol 2: the message has a `task` header): what Celery needs to take it.
    Celery deals with the rest itself (an unknown task, a message that is no task call)."""

    headers: _TaskHeaders
    body: str

    @field_validator("body")
    @classmethod
    def _args_kwargs_embed(cls, body: str) -> str:
        TASK_CALL.validate_json(base64.b64decode(body))
        return body


def envelope_problem(message: Any) -> str | None:
    """What is wrong with a decoded message, in a few words; None when the worker can take it."""
    try:
        envelope = Envelope.model_validate(message)
        if envelope.headers is not None and "task" in envelope.headers:
            TaskCall.model_validate(message)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        text = error["msg"].removeprefix("Value error, ")
        return f"{where}: {text}" if where else text
    return None


def log_dropped(raw: Any, problem: str) -> None:
    text = raw if isinstance(raw, str) else json.dumps(raw, default=repr)
    shown = repr(text[:MALFORMED_SHOWN]) + (f"... ({len(text):,} characters)" if len(text) > MALFORMED_SHOWN else "")
    log.warning("dropped a malformed message (%s): %s", problem, shown)


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options):
        delivered = self.connection.delivered
        try:
            return super()._brpop_read(**options)
        except DECODE_ERRORS as exc:
            if self.connection.delivered != delivered:  # raised by Celery while it had the message: not ours
                raise
            log_dropped(getattr(exc, "doc", ""), f"not JSON: {exc}")
            return True

    def _get(self, queue):
        try:
            message = super()._get(queue)
        except DECODE_ERRORS as exc:
            log_dropped(getattr(exc, "doc", ""), f"not JSON: {exc}")
            raise Empty() from None
        if problem := envelope_problem(message):
            log_dropped(message, problem)
            raise Empty()
        return message


class Transport(kombu_redis.Transport):
    """kombu's Redis transport (`broker_transport`), whose workers drop malformed messages instead of dying."""

    Channel = Channel
    delivered = 0  # messages handed to Celery: an error raised after this counted up is Celery's, not the decoding's

    def _deliver(self, message, queue):
        if problem := envelope_problem(message):
            log_dropped(message, problem)
            return
        self.delivered += 1
        super()._deliver(message, queue)
