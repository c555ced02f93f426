"""Anything pushed onto a worker's queue: a malformed message is logged and dropped, and the worker goes on."""
from __future__ import annotations

import base64
import json

import pytest
import redis

from genq.core.broker import RUN_JOB_TASK, job_ids_in_broker, make_app, publish
from genq.core.config import load_settings
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration

LONG_GARBAGE = "not json " + "x" * 1000


def envelope(**changes) -> str:
    """A message as kombu's Redis transport stores it, with some of its parts changed."""
    message = {"body": base64.b64encode(json.dumps([["a-job"], {}, {}]).encode()).decode(),
               "content-encoding": "utf-8", "content-type": "application/json",
               "headers": {"task": RUN_JOB_TASK, "id": "a-job.0"},
               "properties": {"delivery_tag": "tag", "body_encoding": "base64",
                              "delivery_info": {"exchange": "", "routing_key": "gpu"}}}
    return json.dumps({**message, **changes})


MALFORMED = [
    LONG_GARBAGE,
    "[1, 2]",
    "\"just a string\"",
    '{"__type__": "no such type", "__value__": 1}',  # a type hook of kombu's JSON decoding that fails
    json.dumps({"body": "e30="}),  # no properties
    envelope(properties={"delivery_tag": "tag"}),  # no delivery info
    envelope(body="%%% not base64 %%%"),
    envelope(body=base64.b64encode(b"[1, 2]").decode()),  # not (args, kwargs, embed)
    envelope(headers={"task": [RUN_JOB_TASK], "id": "a-job.0"}),  # an unhashable task name
    envelope(headers={"task": RUN_JOB_TASK}),  # no task id
]
NOT_JOB_IDS = [[123], ["x" * 65], ["a\x00b"], [["a-job"]], [], ["a-job", "another"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_malformed_messages_are_dropped_and_the_same_worker_runs_the_next_job(genq, tiny_model):
    genq.client("db", "upgrade")
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    [worker] = genq.client_json("workers")
    queue = genq.env["GENQ_QUEUE"]
    broker = redis.Redis.from_url(REDIS_URL)
    for raw in MALFORMED:
        broker.lpush(queue, raw)
    app = make_app(load_settings(genq.env))
    for args in NOT_JOB_IDS:  # well-formed Celery messages whose arguments are not one job id
        app.send_task(RUN_JOB_TASK, args=args, queue=queue)
    app.close()

    job = genq.client_json("submit", "sd", "--model", str(tiny_model), "--prompt", "a cat", "--steps", "1",
                           "--width", "64", "--height", "64", "--wait", "--timeout", "120", check=False)

    log = genq.workers[0].log_path.read_text(errors="replace")
    assert job["status"] == "succeeded", log[-3000:]
    assert [(w["name"], w["pid"]) for w in genq.client_json("workers", "--all")] == [(worker["name"], worker["pid"])]
    assert "Unrecoverable error" not in log and "Traceback" not in log
    dropped = [line for line in log.splitlines() if "dropped a malformed message" in line]
    assert len(dropped) == len(MALFORMED), "\n".join(dropped)
    assert all(len(line) < 600 for line in dropped)  # the message shown is cut to its first 200 characters
    assert log.count("dropped a message whose arguments are not one job id") == len(NOT_JOB_IDS)
    unacked = lambda: [raw for raw in broker.hvals("unacked") if json.loads(raw)[2] == queue]  # noqa: E731
    genq.wait_until(lambda: not unacked(), 10, what="every message of the queue to be acknowledged")
    assert broker.llen(queue) == 0  # nothing comes back
    broker.close()


def test_the_reconciler_and_basic_get_skip_a_malformed_message(tmp_path):
    queue = f"genq-test-malformed-{tmp_path.name[-12:]}"
    app = make_app(load_settings({"GENQ_QUEUE": queue, "GENQ_BROKER_URL": REDIS_URL, "GENQ_HOME": str(tmp_path)}))
    broker = redis.Redis.from_url(REDIS_URL)
    try:
        broker.lpush(queue, "not json", "[1, 2]")
        publish(app, ["job-1"], {"job-1": (queue, 9)})  # priority 9: the same list, popped after the two
        assert job_ids_in_broker(app, queue) == {"job-1"}
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            assert channel.basic_get(queue) is None and channel.basic_get(queue) is None  # each dropped
            message = channel.basic_get(queue, no_ack=True)
        assert message.headers["task"] == RUN_JOB_TASK and message.payload[0] == ["job-1"]
        assert broker.llen(queue) == 0
    finally:
        leftovers = broker.keys(f"*{queue}*")
        if leftovers:
            broker.delete(*leftovers)
        broker.close()
        app.close()
