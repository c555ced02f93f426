"""A worker pod marks itself busy or idle with controller.kubernetes.io/pod-deletion-cost, through the
Kubernetes API's merge PATCH of its own pod (here: an HTTP server on 127.0.0.1 that answers as the
API server does and records what it was sent)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genq.worker.pod_deletion_cost import ANNOTATION, PodDeletionCost


class ApiServer(BaseHTTPRequestHandler):
    requests: list[dict] = []
    status = 200

    def do_PATCH(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers["Authorization"],
                                    "type": self.headers["Content-Type"], "body": body})
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    ApiServer.requests, ApiServer.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), ApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ApiServer
    server.shutdown()
    server.server_close()


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_busy_then_idle_patches_the_pods_own_annotation(api, tmp_path):
    url, server = api
    token = tmp_path / "token"
    token.write_text("the-token\n")
    cost = PodDeletionCost(url, "genq", "genq-worker-abc", token)
    cost.busy()
    wait_for(lambda: len(server.requests) == 1)
    cost.idle()
    cost.stop()
    assert [r["body"] for r in server.requests] == [{"metadata": {"annotations": {ANNOTATION: "1000"}}},
                                                   {"metadata": {"annotations": {ANNOTATION: "0"}}}]
    for request in server.requests:
        assert request["path"] == "/api/v1/namespaces/genq/pods/genq-worker-abc"
        assert request["auth"] == "Bearer the-token" and request["type"] == "application/merge-patch+json"


def test_a_refusing_api_server_is_logged_not_raised(api, tmp_path, caplog):
    url, server = api
    server.status = 403
    token = tmp_path / "token"
    token.write_text("t")
    cost = PodDeletionCost(url, "genq", "pod-1", token)
    cost.busy()  # never raises into the job
    cost.stop()
    assert len(server.requests) == 1
    assert f"could not set {ANNOTATION}=1000 on pod pod-1" in caplog.text


def test_outside_a_pod_nothing_is_patched():
    assert PodDeletionCost.from_environment({}) is None
    assert PodDeletionCost.from_environment({"GENQ_POD_NAME": "p", "GENQ_POD_NAMESPACE": "genq"}) is None
