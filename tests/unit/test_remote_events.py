"""A remote client waits by following the server's events stream, not by polling: it resumes a cut stream
with the last event id it saw (Last-Event-ID), shows each progress event, and reads the job once at
the start and once at its end. The server here is a real HTTP server on 127.0.0.1 playing a scripted
stream (the real one is exercised end to end in tests/integration/test_remote.py)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genq.client.remote import RemoteClient, sse_events

JOB = "0b8f7f64-2f7e-4d4b-9a57-5d0c1c3e9f10"


def job_json(status: str, done: int = 0) -> dict:
    return {"id": JOB, "kind": "sd", "status": status, "params": {}, "result": None, "error": None, "attempts": 1,
            "worker": None, "depends_on": None, "submitted_at": "2026-01-01T00:00:00+00:00", "started_at": None,
            "finished_at": None, "heartbeat_at": None, "lease_until": None, "queue": "gpu", "priority": 5,
            "group": None, "group_point": None, "progress": {"done": done, "total": 4, "message": None}}


def event(name: str, data: dict, event_id: int | None = None) -> bytes:
    return ((f"id: {event_id}\n" if event_id else "") + f"event: {name}\ndata: {json.dumps(data)}\n\n").encode()


class ScriptedServer(BaseHTTPRequestHandler):
    """First stream: the job's state now, one transition, progress, then the connection is cut. Second
    stream (it must carry Last-Event-ID 7): the end."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path.split("?")[0], self.headers.get("Last-Event-ID")))
        if self.path.startswith("/api/events"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if self.headers.get("Last-Event-ID") is None:
                self.wfile.write(event("state", {"job": JOB, "from": None, "to": "queued", "reason": "now"}) +
                                 event("state", {"job": JOB, "from": "queued", "to": "running"}, 7) +
                                 event("progress", {"job": JOB, "done": 2, "total": 4, "message": "step 2"}))
            elif self.headers.get("Last-Event-ID") == "7":
                self.wfile.write(event("state", {"job": JOB, "from": "running", "to": "succeeded"}, 8) +
                                 event("end", {"job": JOB, "status": "succeeded"}))
            self.wfile.flush()
            self.close_connection = True
            return
        finished = sum(path.startswith("/api/events") for path, _ in self.seen) > 1
        body = json.dumps(job_json("succeeded", 4) if finished else job_json("queued")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    ScriptedServer.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_waiting_follows_the_events_stream_and_resumes_it_after_the_last_event_id(server):
    client = RemoteClient(address=server, token="t")
    shown = []
    row = client.follow_job(JOB, timeout=30, on_change=lambda job: shown.append((job.status, job.progress_done)))
    assert row.status == "succeeded" and row.progress_done == 4
    assert shown == [("queued", 0), ("running", 0), ("running", 2), ("succeeded", 4)]
    assert ScriptedServer.seen == [("/api/events", None), (f"/api/jobs/{JOB}", None), ("/api/events", "7"),
                                   (f"/api/jobs/{JOB}", None)]  # no polling: one read at the start, one at the end


def test_server_sent_events_are_parsed_with_their_ids_and_comments_skipped():
    lines = [": ping", "id: 3", "event: state", 'data: {"to": "running"}', "", "event: end", "data: {}", ""]
    assert list(sse_events(lines)) == [("state", "3", {"to": "running"}), ("end", None, {})]
