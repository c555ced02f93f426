"""The server's webhook sender: a background thread of `client server` that POSTs the outbox's due deliveries.

Each pass claims as many due deliveries as it has free senders (genq.core.store.outbox: safe with two
servers), and POSTs each body with `Genq-Signature` (keyed by the owner's webhook secret; for a job
whose owner is no user, the operator's: GENQ_HOME/webhook/secret, made like the home's token) and
`Genq-Delivery`. A 2xx answer delivers it; anything else (another status, a redirect, which is not
followed, a timeout, a refused connection) is recorded and tried again after GENQ_WEBHOOK_BACKOFF
seconds, doubled each time up to an hour, for a day. The URL's host is checked against
GENQ_WEBHOOK_ALLOW again before every POST: one no longer allowed is given up at once.
"""
from __future__ import annotations

import http.client
import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genq import __version__
from genq.core.config import Settings
from genq.core.store.outbox import Due, Outbox
from genq.core.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, NotAllowed, check_url, retry_delay, signature

log = logging.getLogger("genq.webhooks")

OPERATOR_SECRET_FILE = Path("webhook") / "secret"  # under GENQ_HOME: signs webhooks of jobs no user owns
POLL_INTERVAL_S = 0.5
SENDERS = 8  # POSTs in flight at once


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that is not 2xx: recorded and retried, never followed to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Sender:
    def __init__(self, outbox: Outbox, settings: Settings, operator_secret: str) -> None:
        self.outbox, self.settings, self.operator_secret = outbox, settings, operator_secret
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirects())
        # A claimed delivery is due again after this: past its POST (connect, then the answer), unless this process died.
        self.hold_s = 2 * settings.webhook_timeout_s + POLL_INTERVAL_S
        self.stopped = threading.Event()
        self._free = threading.Semaphore(SENDERS)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="genq-webhooks", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        with ThreadPoolExecutor(SENDERS, thread_name_prefix="genq-webhook") as pool:
            while not self.stopped.is_set():
                try:
                    self.pass_once(pool)
                except Exception as exc:  # the store blinked: the outbox keeps everything for the next pass
                    log.warning("webhooks: could not read the outbox (%s: %s)", type(exc).__name__, exc)
                self.stopped.wait(POLL_INTERVAL_S)

    def pass_once(self, pool: ThreadPoolExecutor) -> None:
        free = 0
        while self._free.acquire(blocking=False):
            free += 1
        claimed = self.outbox.claim_due(free, self.hold_s) if free else []
        for _ in range(free - len(claimed)):
            self._free.release()
        for due in claimed:
            pool.submit(self._send_and_release, due)

    def _send_and_release(self, due: Due) -> None:
        try:
            self.send(due)
        except Exception as exc:  # its attempt is not recorded: it is due again once its hold passes
            log.warning("webhooks: delivery %s: %s: %s", due.id, type(exc).__name__, exc)
        finally:
            self._free.release()

    def send(self, due: Due) -> None:
        """POST one delivery and record the attempt."""
        try:
            check_url(due.url, self.settings.webhook_allow)
        except NotAllowed as exc:
            self.outbox.settle(due.id, None, str(exc), delivered=False, retry_in_s=None)
            return
        status, error = self.post(due)
        delivered = status is not None and 200 <= status < 300
        retry_in = None if delivered else retry_delay(due.attempts + 1, self.settings.webhook_backoff_s)
        if not delivered:
            log.info("webhooks: delivery %s to %s: %s", due.id, due.url, error or f"HTTP {status}")
        self.outbox.settle(due.id, status, error, delivered, retry_in)

    def post(self, due: Due) -> tuple[int | None, str | None]:
        """(HTTP status, None) of the answer, or (None, the error) when there was none."""
        body = due.body.encode()
        secret = self.outbox.secret_of(due.owner) or self.operator_secret
        request = urllib.request.Request(due.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"genq-webhooks/{__version__}",
            SIGNATURE_HEADER: signature(secret, body), DELIVERY_HEADER: due.id})
        try:
            with self.opener.open(request, timeout=self.settings.webhook_timeout_s) as answer:
                return answer.status, None
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code, None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return None, f"{type(reason).__name__}: {reason}"[:500]


def start_sender(client, settings: Settings) -> Sender:
    """Start sending the outbox's webhooks from this process (`client server`)."""
    from genq.client.ui.security import home_secret

    sender = Sender(Outbox(client.store.sessions), settings, home_secret(settings, OPERATOR_SECRET_FILE))
    sender.start()
    return sender
