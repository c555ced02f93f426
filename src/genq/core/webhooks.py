"""Webhooks' rules: which URLs may be called, how a body is signed, when a failed delivery is tried again.

A URL is http(s) with a host, and its host (or host:port) is in GENQ_WEBHOOK_ALLOW: none by default, so
nobody can make the server call an address the operator did not name. It is checked when a job is
submitted or a user's default is set, and again before each delivery.

A body is signed as Stripe signs its events: `Genq-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`, keyed by the owner's webhook secret (its text as UTF-8). A receiver recomputes it, compares
in constant time and refuses an old `t`; `Genq-Delivery` stays the same on every retry of one delivery.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

MAX_URL_CHARS = 2000
RETRY_CAP_S = 3600.0  # a failed delivery waits at most this long before its next attempt
GIVE_UP_AFTER_S = 24 * 3600.0  # a delivery still failing after a day of back-off is given up
SIGNATURE_HEADER = "Genq-Signature"
DELIVERY_HEADER = "Genq-Delivery"


class NotAllowed(ValueError):
    """A webhook URL genq will not call; `str()` is one line."""


def host_of(url: str) -> tuple[str, str]:
    """(host, host:port) of an http(s) URL, lowercased, the port the scheme's default when none is given;
    NotAllowed when it is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise NotAllowed(f"{url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotAllowed(f"must be an http:// or https:// URL with a host, got {url!r}")
    host = parts.hostname.lower()
    shown = f"[{host}]" if ":" in host else host
    return host, f"{shown}:{port or (443 if parts.scheme == 'https' else 80)}"


def check_form(url: str) -> str:
    """`url` when it is an http(s) URL with a host, of a sane length and with no white space; else NotAllowed."""
    if len(url) > MAX_URL_CHARS:
        raise NotAllowed(f"must be at most {MAX_URL_CHARS} characters, got {len(url)}")
    if any(c.isspace() for c in url):
        raise NotAllowed("must not contain white space")
    host_of(url)
    return url


def check_url(url: str, allow: tuple[str, ...]) -> str:
    """`url` when genq may call it: `check_form`, and its host (or host:port) in `allow`; else NotAllowed."""
    check_form(url)
    host, host_port = host_of(url)
    if host not in allow and host_port not in allow:
        raise NotAllowed(f"host {host_port} is not in GENQ_WEBHOOK_ALLOW (the hosts the server may call; "
                         f"now: {', '.join(allow) or 'none'})")
    return url


def signature(secret: str, body: bytes, at: int | None = None) -> str:
    """The Genq-Signature header of `body` sent at unix time `at` (now when None)."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode("utf-8"), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def retry_delay(failed_attempts: int, backoff_s: float) -> float | None:
    """Seconds to wait after the `failed_attempts`-th failed attempt: `backoff_s` doubled after each one,
    at most RETRY_CAP_S; None (give up) once the waits so far add up to GIVE_UP_AFTER_S."""
    waits = [min(backoff_s * 2 ** n, RETRY_CAP_S) for n in range(failed_attempts)]
    if sum(waits) >= GIVE_UP_AFTER_S:
        return None
    return waits[-1]
