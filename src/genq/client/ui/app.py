"""The dashboard's Starlette app, built from the settings the CLI uses."""
from __future__ import annotations

import json
import os
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from genq.client.render import iso
from genq.client.ui import api, pages, readable
from genq.client.ui.metrics import metrics_registry
from genq.client.ui.security import CsrfTokens, SecurityHeadersMiddleware, TokenMiddleware, home_token
from genq.client.visible import visible
from genq.core.config import Settings, load_settings

HERE = Path(__file__).parent
TOKEN_VARIABLE = "GENQ_UI_TOKEN"


def ui_token(settings: Settings) -> str:
    """GENQ_UI_TOKEN when set, else the home's own token (GENQ_HOME/ui/token, made on first need)."""
    return os.environ.get(TOKEN_VARIABLE) or home_token(settings)


def shown(value) -> str:
    """A parameter or result value as text: lists and objects as JSON."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
    return "" if text is None else visible(text)


def templates() -> Jinja2Templates:
    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    environment.filters["visible"] = lambda text, multiline=False: "" if text is None else visible(text, multiline)
    environment.filters["shown"] = shown
    environment.filters["iso"] = lambda moment: iso(moment) or "-"
    environment.filters.update(readable.filters())
    return Jinja2Templates(env=environment)


def make_app(settings: Settings | None = None, token: str | None = None,
             allowed_hosts: list[str] | None = None) -> Starlette:
    """Every request must carry `token` (by default `ui_token`'s). `allowed_hosts`: the Host headers
    answered (a page on another site that rebinds its name to 127.0.0.1 is refused); None answers any."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from genq.api import Client

    settings = settings or load_settings()
    client = Client(settings)
    metrics = metrics_registry(client.reads, client.settings.lease_s)  # opens the store: a bad one fails before a token is made
    middleware = [Middleware(SecurityHeadersMiddleware)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    middleware.append(Middleware(TokenMiddleware, token=token or ui_token(settings)))
    app = Starlette(routes=[*pages.routes(), *api.routes(), Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
                    middleware=middleware)
    app.state.client = client
    app.state.templates = templates()
    app.state.csrf = CsrfTokens()
    app.state.metrics = metrics
    return app


