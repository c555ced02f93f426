"""Webhooks' rules and their outbox: the signature (checked by an independent HMAC), the back-off schedule,
the allowed hosts, and the outbox rows each final transition writes in its own transaction (both stores);
a real sender POSTing to a real HTTP receiver on 127.0.0.1 that redirects."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genq.core.config import load_settings
from genq.core.kinds.train_vae import TrainVAE
from genq.core.lifecycle import Lifecycle, Outcome
from genq.core.params import RunOptions, SpecError
from genq.core.store.db import make_engine, session_factory
from genq.core.store.groups import PlannedJob
from genq.core.store.jobs import JobStore
from genq.core.store.outbox import DELIVERED, GIVEN_UP, PENDING, Outbox
from genq.core.store.states import JobStatus, TransitionError
from genq.core.store.users import UserStore
from genq.core.webhooks import GIVE_UP_AFTER_S, RETRY_CAP_S, NotAllowed, check_url, retry_delay, signature
from tests.unit.test_ui import installation  # noqa: F401 (a fixture: a SQLite store and its settings)

HOOK = "http://hooks.example/end"


def test_the_signature_is_an_hmac_sha256_of_time_dot_body_keyed_by_the_secret():
    body = json.dumps({"id": "j1", "status": "succeeded"}).encode()
    header = signature("s3cret", body, at=1_700_000_000)
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert fields == {"t": "1700000000", "v1": expected}
    assert signature("other", body, at=1_700_000_000) != header
    assert signature("s3cret", body + b" ", at=1_700_000_000) != header


def test_the_back_off_doubles_up_to_its_cap_and_gives_up_after_a_day():
    assert [retry_delay(n, 10) for n in (1, 2, 3)] == [10, 20, 40]
    delays, n = [], 1
    while (delay := retry_delay(n, 10)) is not None:
        delays.append(delay)
        n += 1
    assert max(delays) == RETRY_CAP_S
    assert sum(delays) < GIVE_UP_AFTER_S <= sum(delays) + RETRY_CAP_S  # tried for a day, then given up


def test_only_http_urls_whose_host_is_allowed_are_taken():
    assert load_settings({"GENQ_HOME": "/tmp/genq-none"}).webhook_allow == ()  # none by default
    with pytest.raises(NotAllowed, match="not in GENQ_WEBHOOK_ALLOW"):
        check_url(HOOK, ())
    assert check_url(HOOK, ("hooks.example",)) == HOOK
    assert check_url("https://hooks.example:8443/x", ("hooks.example:8443",))
    with pytest.raises(NotAllowed, match="hooks.example:80 is not"):
        check_url(HOOK, ("hooks.example:8443",))  # another port of an allowed host:port
    for bad in ("ftp://hooks.example/x", "http:///x", "hooks.example/x", "http://hooks.example:99999/"):
        with pytest.raises(NotAllowed):
            check_url(bad, ("hooks.example",))
    settings = load_settings({"GENQ_HOME": "/tmp/genq-none", "GENQ_WEBHOOK_ALLOW": "Hooks.Example, 127.0.0.1:9"})
    assert settings.webhook_allow == ("hooks.example", "127.0.0.1:9")
    assert RunOptions.model_validate({"notify": HOOK}, context={"settings": settings}).notify == HOOK
    from genq.api import run_options

    with pytest.raises(SpecError, match="^notify: host evil.example:80 is not in GENQ_WEBHOOK_ALLOW"):
        run_options(None, 0, None, None, 5, "http://evil.example/", settings)


@pytest.fixture
def engine(database_url, monkeypatch):
    monkeypatch.setenv("GENQ_WEBHOOK_ALLOW", "hooks.example")  # what RunOptions checks a webhook against
    settings = load_settings({"GENQ_HOME": "/tmp/genq-none", "GENQ_DATABASE_URL": database_url})
    store = JobStore(session_factory(make_engine(database_url)), settings.queue_for)
    return store, Lifecycle(store, settings), Outbox(store.sessions)


def deliveries(outbox: Outbox):
    from sqlalchemy import select

    from genq.core.store.models import WebhookDelivery

    with outbox.sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at)))


def run_to_end(lifecycle: Lifecycle, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
    claimed = lifecycle.claim(job_id, "w1")
    values = {"result": {"test_loss_per_image": 1.5}} if status is JobStatus.SUCCEEDED else {"error": "boom"}
    assert lifecycle.finish(job_id, claimed.attempts, Outcome(status, values), "w1") is not None


def test_every_final_transition_writes_one_delivery_with_it_and_none_without_a_webhook(engine):
    store, lifecycle, outbox = engine
    # Given jobs with a webhook, one without, and one of a user whose default webhook applies
    UserStore(store.sessions).add("alice")
    UserStore(store.sessions).set("alice", notify_url="http://alice.example/hook")
    hooked = store.create(TrainVAE(epochs=1), options=RunOptions(notify=HOOK), owner="bob")
    silent = store.create(TrainVAE(epochs=1), owner="bob")
    by_default = store.create(TrainVAE(epochs=1), owner="alice")
    waiting = store.create(TrainVAE(epochs=1), depends_on=hooked.id, options=RunOptions(notify=HOOK))
    queued = store.create(TrainVAE(epochs=1), options=RunOptions(notify=HOOK))
    # When they run, fail (and what waits for it fails), end by default, or are cancelled before starting
    run_to_end(lifecycle, silent.id)
    assert deliveries(outbox) == []  # running and ending without a webhook writes nothing
    claimed = lifecycle.claim(hooked.id, "w1")
    assert deliveries(outbox) == []  # claimed: not an end
    lifecycle.finish(hooked.id, claimed.attempts, Outcome(JobStatus.FAILED, {"error": "boom"}), "w1")
    run_to_end(lifecycle, by_default.id)
    lifecycle.cancel(queued.id)
    # Then each end has exactly one delivery, its body the job as it ended
    rows = {row.job_id: row for row in deliveries(outbox)}
    assert set(rows) == {hooked.id, waiting.id, by_default.id, queued.id}
    assert all(row.state == PENDING and row.attempts == 0 and row.group_id is None for row in rows.values())
    body = json.loads(rows[hooked.id].body)
    assert body == {"type": "job", "id": hooked.id, "kind": hooked.kind, "owner": "bob", "status": "failed",
                    "result": None, "error": "boom", "artifacts": [], "group": None}
    assert json.loads(rows[waiting.id].body)["status"] == "failed"  # failed because what it waited for failed
    assert json.loads(rows[queued.id].body)["status"] == "cancelled"
    assert rows[by_default.id].url == "http://alice.example/hook" and rows[by_default.id].owner == "alice"
    # And a transition that loses its race writes nothing
    with pytest.raises(TransitionError):
        store.transition(queued.id, JobStatus.QUEUED, JobStatus.CANCELLED)
    assert len(deliveries(outbox)) == 4


def test_a_group_is_notified_once_with_its_last_job(engine):
    store, lifecycle, outbox = engine
    planned = [PlannedJob(TrainVAE(epochs=1, beta=beta), None, {"beta": beta}) for beta in (1.0, 2.0, 3.0)]
    group, rows = lifecycle.groups.create(TrainVAE.kind, "betas", {}, planned, RunOptions(notify=HOOK), "bob")
    first, second, third = (row["id"] for row in rows)
    run_to_end(lifecycle, first)
    run_to_end(lifecycle, second, JobStatus.FAILED)
    assert {row.job_id for row in deliveries(outbox)} == {first, second}  # each job's, no group's yet
    lifecycle.cancel(third)
    (notice,) = [row for row in deliveries(outbox) if row.group_id == group.id]
    assert json.loads(notice.body) == {"type": "group", "id": group.id, "name": "betas", "kind": TrainVAE.kind,
                                       "owner": "bob", "size": 3,
                                       "counts": {"cancelled": 1, "failed": 1, "succeeded": 1}}
    assert len(deliveries(outbox)) == 4


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_groups_last_two_jobs_ending_at_once_notify_it_once(engine):
    from genq.core.store.states import transition

    store, lifecycle, outbox = engine
    planned = [PlannedJob(TrainVAE(epochs=1, beta=beta), None, {"beta": beta}) for beta in (1.0, 2.0)]
    group, rows = lifecycle.groups.create(TrainVAE.kind, None, {}, planned, RunOptions(notify=HOOK), "bob")
    first, second = (row["id"] for row in rows)
    for job_id in (first, second):
        lifecycle.claim(job_id, "w1")
    # Given the first job's end written but not committed (each sees the other still running)
    session = store.sessions()
    transition(session, first, JobStatus.RUNNING, JobStatus.SUCCEEDED, commit=False)
    # When the second ends meanwhile
    ending = threading.Thread(target=store.transition, args=(second, JobStatus.RUNNING, JobStatus.SUCCEEDED))
    ending.start()
    ending.join(1.0)
    assert ending.is_alive()  # it waits for the group's row, which the first end holds
    session.commit()
    session.close()
    ending.join(30)
    # Then the group is notified once, by the later end, which saw the first's
    assert [row.group_id for row in deliveries(outbox) if row.group_id] == [group.id]


def test_a_claimed_delivery_is_not_claimed_again_until_its_hold_passes_and_each_attempt_is_settled(engine):
    store, lifecycle, outbox = engine
    for _ in range(2):
        lifecycle.cancel(store.create(TrainVAE(epochs=1), options=RunOptions(notify=HOOK)).id)
    first, second = outbox.claim_due(1, hold_s=60), outbox.claim_due(5, hold_s=60)
    assert len(first) == len(second) == 1 and first[0].id != second[0].id
    assert outbox.claim_due(5, hold_s=60) == []  # both held
    outbox.settle(first[0].id, 500, None, delivered=False, retry_in_s=0)
    (again,) = outbox.claim_due(5, hold_s=60)
    assert again.id == first[0].id and again.attempts == 1
    outbox.settle(again.id, 200, None, delivered=True, retry_in_s=None)
    outbox.settle(again.id, None, "timed out", delivered=False, retry_in_s=0)  # a late attempt of an old claim
    outbox.settle(second[0].id, None, "refused", delivered=False, retry_in_s=None)
    states = {row.id: (row.state, row.attempts) for row in deliveries(outbox)}
    assert states == {again.id: (DELIVERED, 2), second[0].id: (GIVEN_UP, 1)}
    assert outbox.claim_due(5, hold_s=0) == []


class Redirecting(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(self.path)
        self.send_response(302)
        self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # where a followed redirect would land
        self.server.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_sender_does_not_follow_a_redirect_and_retries_it(engine, tmp_path):
    from genq.client.server.webhooks import Sender

    store, lifecycle, outbox = engine
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    receiver.seen = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_port}/hook"
        settings = load_settings({"GENQ_HOME": str(tmp_path), "GENQ_WEBHOOK_ALLOW": "127.0.0.1"})
        job = store.create(TrainVAE(epochs=1), options=RunOptions.model_validate({"notify": url},
                                                                                 context={"settings": settings}))
        lifecycle.cancel(job.id)
        (due,) = outbox.claim_due(1, hold_s=60)
        Sender(outbox, settings, "operator-secret").send(due)
    finally:
        receiver.shutdown()
    assert receiver.seen == ["/hook"]
    (row,) = deliveries(outbox)
    assert (row.state, row.attempts) == (PENDING, 1)


def test_the_dashboards_job_page_shows_each_delivery_attempt(installation, monkeypatch):
    from tests.unit.test_ui import browser

    settings, store = installation
    monkeypatch.setenv("GENQ_WEBHOOK_ALLOW", "hooks.example")
    job = store.create(TrainVAE(epochs=1), options=RunOptions(notify="http://hooks.example/h"))
    store.transition(job.id, JobStatus.QUEUED, JobStatus.CANCELLED)
    outbox = Outbox(store.sessions)
    (due,) = outbox.claim_due(1, hold_s=60)
    outbox.settle(due.id, 503, None, delivered=False, retry_in_s=0)
    outbox.settle(due.id, None, "URLError: connection refused", delivered=False, retry_in_s=0)
    page = browser(settings).get(f"/jobs/{job.id}").text
    table = page.split("<h2>Webhooks</h2>", 1)[1].split("</table>", 1)[0]
    assert due.id in table and "http://hooks.example/h" in table and "pending" in table
    assert "503" in table and "URLError: connection refused" in table
