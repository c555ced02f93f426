"""On Kubernetes, a busy worker pod asks not to be the one a scale-down stops.

When the worker Deployment scales down, its ReplicaSet stops the pods with the lowest
`controller.kubernetes.io/pod-deletion-cost` first. The worker sets its own pod's annotation to
BUSY_COST as it takes a job and to IDLE_COST once it is idle again, with one merge PATCH of its pod
through the Kubernetes API (its service-account token may patch pods, nothing else: deploy/k8s).

Enabled only inside a pod that says who it is (GENQ_POD_NAME and GENQ_POD_NAMESPACE, from the downward
API) and carries a service-account token; anywhere else it does nothing. The PATCH is sent by a
thread of its own, so a job never waits for the API server, and a failure is logged, never raised:
the annotation steers a choice, and a busy pod that is stopped anyway still finishes its job within
its grace period.
"""
from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import urllib.request
from pathlib import Path

log = logging.getLogger("genq.pod")
ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
BUSY_COST = 1000
IDLE_COST = 0
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_S = 5.0


class PodDeletionCost:
    def __init__(self, api_url: str, namespace: str, pod: str, token_file: Path, ca_file: Path | None = None,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.url = f"{api_url.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}"
        self.pod = pod
        self.token_file = token_file
        self.context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self.timeout_s = timeout_s
        self._changed = threading.Condition()
        self._wanted: int | None = None
        self._written: int | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> "PodDeletionCost | None":
        """The pod's own, when this process runs in a pod that says who it is; else None."""
        env = dict(os.environ if env is None else env)
        pod, namespace = env.get("GENQ_POD_NAME"), env.get("GENQ_POD_NAMESPACE")
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        token = SERVICE_ACCOUNT / "token"
        if not (pod and namespace and host and token.exists()):
            return None
        host = f"[{host}]" if ":" in host else host  # an IPv6 service address
        return cls(f"https://{host}:{port}", namespace, pod, token, SERVICE_ACCOUNT / "ca.crt")

    def busy(self) -> None:
        self._want(BUSY_COST)

    def idle(self) -> None:
        self._want(IDLE_COST)

    def _want(self, cost: int) -> None:
        with self._changed:
            self._wanted = cost
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pod-deletion-cost", daemon=True)
                self._thread.start()
            self._changed.notify()

    def stop(self, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """Write what is still wanted, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._wanted == self._written and not self._stopping:
                    self._changed.wait()
                if self._wanted == self._written:
                    return
                cost = self._wanted
            self._written = cost  # a failed PATCH is not retried: the next change writes again
            try:
                self.patch(cost)
            except Exception as exc:
                log.warning("could not set %s=%d on pod %s: %s", ANNOTATION, cost, self.pod, exc)

    def patch(self, cost: int) -> None:
        body = json.dumps({"metadata": {"annotations": {ANNOTATION: str(cost)}}}).encode()
        request = urllib.request.Request(self.url, data=body, method="PATCH", headers={
            # read each time: Kubernetes rotates a projected service-account token
            "Authorization": f"Bearer {self.token_file.read_text().strip()}",
            "Content-Type": "application/merge-patch+json",
        })
        with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as answer:
            answer.read()
