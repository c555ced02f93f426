"""Webhooks end to end: a real `client server` (its sender), a real worker, Redis and PostgreSQL, and a real
HTTP receiver on 127.0.0.1 that records what it is sent. Every job's end and its group's arrive signed
with the owner's secret and carrying a delivery id; a failing receiver is retried and the attempts are
shown; a server killed mid-delivery delivers after its restart with the same id; a host not allowed is
refused at submit (CLI: one line, exit 2; HTTP: 422), nothing stored."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.test_remote import client as remote_client
from tests.integration.test_remote import remote_env
from tests.integration.test_server import FAST_SD, job_count, sd_body, start_server, stop

pytestmark = pytest.mark.integration

CLI_SD = ["--width", str(FAST_SD["width"]), "--height", str(FAST_SD["height"]), "--steps", str(FAST_SD["steps"])]
SETTINGS = {"GENQ_WEBHOOK_ALLOW": "127.0.0.1", "GENQ_WEBHOOK_BACKOFF": "0.2", "GENQ_WEBHOOK_TIMEOUT": "2"}


class Receiver(BaseHTTPRequestHandler):
    """Answers 200, except the first POST to /fail (500) and the first to /hold (held until released)."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        with server.lock:
            server.seen.append((self.path, dict(self.headers), body))
            first = [path for path, _, _ in server.seen].count(self.path) == 1
        if first and self.path == "/hold":
            server.held.set()
            server.release.wait(60)
        try:
            self.send_response(500 if first and self.path == "/fail" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the sender is gone (killed while this request was held)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.seen, server.lock, server.held, server.release = [], threading.Lock(), threading.Event(), threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()


def received(receiver, path: str) -> list[tuple[dict, dict, bytes]]:
    """(headers, body as JSON, raw body) of each POST to `path`, in arrival order."""
    with receiver.lock:
        return [(headers, json.loads(body), body) for seen, headers, body in receiver.seen if seen == path]


def signed_by(secret: str, headers: dict, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["Genq-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_end_is_delivered_signed_retried_and_survives_a_server_killed_mid_delivery(genq, receiver, tiny_model,
                                                                                       tmp_path):
    genq.env.update(SETTINGS)
    hook = f"http://127.0.0.1:{receiver.server_port}"
    alice, bob = genq.client_json("users", "add", "alice"), genq.client_json("users", "add", "bob")
    as_alice = {"GENQ_USER": "alice"}
    sd = ["submit", "sd", "--model", str(tiny_model), *CLI_SD]

    # Given a host not in GENQ_WEBHOOK_ALLOW: refused at submit, as a default, and over HTTP; nothing stored
    refused = genq.client(*sd, "--prompt", "x", "--notify", "http://169.254.169.254/latest", env=as_alice, check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "Error: --notify: host 169.254.169.254:80 is not in GENQ_WEBHOOK_ALLOW (the hosts the server may call; "
        "now: 127.0.0.1) (see `client submit sd --help`)"]
    assert genq.client("users", "set", "alice", "--notify", "http://10.1.2.3/", check=False).returncode == 2
    server = start_server(genq)
    try:
        answer = server.call("POST", "/api/jobs", bob["token"], json=sd_body(tiny_model, "x", notify="http://10.1.2.3/"))
        assert answer.status_code == 422 and "GENQ_WEBHOOK_ALLOW" in answer.text
        assert job_count(genq) == 0

        # When alice submits with --notify from a remote client (only the server's address and her token: the
        # server's GENQ_WEBHOOK_ALLOW decides), and by her default (a receiver answering 500 first), and bob a sweep
        genq.client("users", "set", "alice", "--notify", f"{hook}/fail")
        laptop = remote_env(tmp_path, server.url, alice["token"])
        submitted = remote_client(laptop, *sd, "--prompt", "a", "--notify", f"{hook}/alice")
        assert submitted.returncode == 0, submitted.stderr
        own = submitted.stdout.strip()
        assert remote_client(laptop, *sd, "--prompt", "a", "--notify", "http://10.1.2.3/").returncode == 2
        by_default = genq.client(*sd, "--prompt", "b", env=as_alice).stdout.strip()
        group = server.call("POST", "/api/jobs", bob["token"],
                            json=sd_body(tiny_model, "c", sweep={"seed": [1, 2]}, notify=f"{hook}/bob")).json()
        genq.start_worker()
        genq.wait_until(lambda: len(received(receiver, "/alice")) >= 1 and len(received(receiver, "/fail")) >= 2
                        and len(received(receiver, "/bob")) >= 3, timeout=180, what="every delivery")

        # Then each job's end, and the group's after its last job, arrives signed with its owner's secret
        jobs = {body["id"]: (headers, body, raw) for path in ("/alice", "/fail", "/bob")
                for headers, body, raw in received(receiver, path) if body["type"] == "job"}
        bobs = [job["id"] for job in group["jobs"]]
        assert set(jobs) == {own, by_default, *bobs}
        for job_id, (headers, body, raw) in jobs.items():
            owner = bob if job_id in bobs else alice
            assert body["owner"] == owner["name"] and body["status"] == "succeeded" and body["artifacts"]
            assert signed_by(owner["webhook_secret"], headers, raw) and not signed_by(bob["webhook_secret"] if owner is alice
                                                                                      else alice["webhook_secret"], headers, raw)
            assert headers["Genq-Delivery"]
        (group_end,) = [(headers, body, raw) for headers, body, raw in received(receiver, "/bob") if body["type"] == "group"]
        assert group_end[1]["id"] == group["id"] and group_end[1]["counts"] == {"succeeded": 2}
        assert signed_by(bob["webhook_secret"], group_end[0], group_end[2])
        group_hooks = genq.wait_until(lambda: [hook for hook in server.call("GET", f"/api/groups/{group['id']}", bob["token"])
                                               .json()["webhooks"] if hook["state"] == "delivered"], what="the group's")
        assert group_hooks[0]["id"] == group_end[0]["Genq-Delivery"] and group_hooks[0]["attempts"][0]["http_status"] == 200

        # And the receiver that answered 500 got the same delivery again, and `client show` lists both attempts
        first, second = received(receiver, "/fail")[:2]
        assert first[0]["Genq-Delivery"] == second[0]["Genq-Delivery"] and first[2] == second[2]
        shown = genq.wait_until(lambda: (hooks := genq.client_json("show", by_default)["webhooks"])
                                and hooks[0]["state"] == "delivered" and hooks, what="the retry recorded")
        assert shown[0]["id"] == first[0]["Genq-Delivery"] and shown[0]["url"] == f"{hook}/fail"
        assert [attempt["http_status"] for attempt in shown[0]["attempts"]] == [500, 200]
        assert server.call("GET", f"/api/jobs/{by_default}", alice["token"]).json()["webhooks"] == shown
        assert server.call("GET", f"/api/jobs/{by_default}", bob["token"]).status_code == 404

        # When the server is killed while its POST is held by the receiver, then started again
        held = genq.client(*sd, "--prompt", "d", "--notify", f"{hook}/hold", env=as_alice).stdout.strip()
        assert receiver.held.wait(120), "the held delivery never came"
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        receiver.release.set()
    finally:
        stop(server.process)
    restarted = start_server(genq)
    try:
        # Then the same delivery arrives again, from the new server
        genq.wait_until(lambda: len(received(receiver, "/hold")) >= 2, timeout=60, what="the delivery after the restart")
        before, after = received(receiver, "/hold")[:2]
        assert before[0]["Genq-Delivery"] == after[0]["Genq-Delivery"] and after[1]["id"] == held
        assert signed_by(alice["webhook_secret"], after[0], after[2])
        detail = restarted.call("GET", f"/api/jobs/{held}", alice["token"]).json()
        assert detail["webhooks"][0]["id"] == after[0]["Genq-Delivery"]
    finally:
        stop(restarted.process)
