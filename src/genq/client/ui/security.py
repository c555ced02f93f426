"""What guards every request: the access token, CSRF tokens on POSTs, and the response headers."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlencode

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from genq.client.local import PRIVATE_FILE_MODE, ensure_home, private_dir
from genq.core.config import Settings
from genq.core.store.artifacts import stage_file

TOKEN_FILE = Path("ui") / "token"  # under GENQ_HOME
TOKEN_COOKIE = "genq_ui_token"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")  # as a Host header names this machine
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def this_machine_only(host: str) -> bool:
    return host in LOCAL_HOSTS


def token_file(settings: Settings) -> Path:
    return settings.home / TOKEN_FILE


def home_token(settings: Settings) -> str:
    """The home's dashboard token, GENQ_HOME/ui/token: see home_secret."""
    return home_secret(settings, TOKEN_FILE)


def home_secret(settings: Settings, relative: Path) -> str:
    """A secret of the home, GENQ_HOME/`relative` (0600 in a 0700 folder): made on first need, then
    reused. Two processes starting at once in a new home agree on one: only the first file is linked
    into place."""
    path = settings.home / relative
    if token := _read_token(path):
        return token
    ensure_home(settings)
    private_dir(path.parent)
    staged = stage_file(path, f"{secrets.token_urlsafe(32)}\n".encode(), PRIVATE_FILE_MODE)
    try:
        os.link(staged.temp, path)
    except FileExistsError:
        if not _read_token(path):  # an empty file holds no token: replaced
            staged.publish()
    finally:
        staged.discard()
    return _read_token(path)


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def same_page(request: Request) -> str:
    """The page asked for without `token=`, as a path on this server: leading slashes collapse to one,
    so `//evil.example/x` stays here instead of naming another site."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    return "/" + quote(request.scope["path"].lstrip("/"), safe="/") + (f"?{urlencode(rest)}" if rest else "")


class CsrfTokens:
    """A per-process secret: the token is an HMAC of it, so it cannot be guessed from outside."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def token(self) -> str:
        return hmac.new(self._secret, b"genq-ui-csrf", hashlib.sha256).hexdigest()

    def valid(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given, self.token())


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class TokenMiddleware(BaseHTTPMiddleware):
    """Every request carries the token: `Authorization: Bearer`, the cookie, or `?token=` once (which
    sets the cookie and redirects to the same page without it in the address)."""

    def __init__(self, app, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next) -> Response:
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        if same_token(bearer, self.token) or same_token(request.cookies.get(TOKEN_COOKIE), self.token):
            return await call_next(request)
        if same_token(request.query_params.get("token"), self.token):
            response = RedirectResponse(same_page(request), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            return response
        return PlainTextResponse("a valid token is required (GENQ_UI_TOKEN, or GENQ_HOME/ui/token): "
                                 "Authorization: Bearer, or ?token=", status_code=401)


class SecurityHeadersMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
