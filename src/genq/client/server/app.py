"""The server's app: the JSON API (FastAPI) in front, the dashboard (Starlette) mounted behind it.

A path the API does not serve goes to the dashboard, which keeps its own token check, cookie and
CSRF tokens: it is the operator's view (the home's token), while the API also takes users' tokens.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import HTMLResponse, JSONResponse

from genq import __version__
from genq.client.server import events, routes
from genq.client.server.auth import TokenInAddress
from genq.client.ui.app import make_app as make_dashboard, ui_token
from genq.core.config import Settings, load_settings
from genq.core.store.users import UserStore

DESCRIPTION = """genq's HTTP API: submit jobs and sweeps, follow them, fetch what they made.

Every `/api` request carries `Authorization: Bearer TOKEN`: a user's (`client users add NAME`), who
sees only their own jobs and groups (another's is a 404), or an admin's; with no users, the home's
token (GENQ_HOME/ui/token). The dashboard is served at `/` for the home's owner."""
SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"  # vendored from npm: /docs works offline
DOCS_ASSETS = "/docs-assets"


def make_app(settings: Settings | None = None, allowed_hosts: list[str] | None = None,
             operator_token: str | None = None) -> FastAPI:
    """`allowed_hosts`: the Host headers answered (None: any). `operator_token`: the home's (default
    GENQ_UI_TOKEN, else GENQ_HOME/ui/token)."""
    settings = settings or load_settings()
    token = operator_token or ui_token(settings)
    dashboard = make_dashboard(settings, token=token)  # opens the store: a bad one fails here
    app = FastAPI(title="genq", version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.client = dashboard.state.client
    app.state.users = UserStore(app.state.client.store.sessions)
    app.state.operator_token = token
    app.include_router(routes.router)
    app.include_router(events.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Whether the server and its store answer",
                      responses={503: {"description": "The store does not answer."}})
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    app.add_exception_handler(TokenInAddress, lambda request, exc: exc.response)
    routes.add_kinds_to_openapi(app)
    app.mount("/", dashboard)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    return app


def docs(request: Request) -> HTMLResponse:
    """The interactive API docs (Swagger UI), from the vendored files, not a CDN."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="genq API", swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def healthz(request: Request) -> JSONResponse:
    """No token needed: says only whether the store answers."""
    try:
        request.app.state.client.reads.get("healthz")
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok", "version": __version__})
