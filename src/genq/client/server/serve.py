"""`client server` (and its alias `client ui`): bind, print the URL, serve the API and dashboard with uvicorn."""
from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlencode

import click

from genq.client.server.app import make_app
from genq.client.server.webhooks import start_sender
from genq.client.ui.app import TOKEN_VARIABLE
from genq.client.ui.security import LOCAL_NAMES, home_token, this_machine_only, token_file
from genq.core.config import load_settings
from genq.core.store.db import SchemaError

EXIT_USAGE = 2


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


BANNER = "genq server: "


def users_exist(settings) -> bool:
    """Whether the store has users; False when there is no store yet (nothing is created to find out)."""
    from genq.client.runtime import missing_store
    from genq.core.store.db import check_schema, make_engine, session_factory
    from genq.core.store.users import UserStore

    if missing_store(settings) is not None:
        return False
    engine = make_engine(settings.database_url, settings.lease_s)
    try:
        check_schema(engine)
        return UserStore(session_factory(engine)).any()
    except Exception:
        return False
    finally:
        engine.dispose()


def serve(host: str, port: int, banner: str = BANNER) -> None:
    """Every request needs a token, on this machine too: a user's, or the home's own (GENQ_UI_TOKEN,
    else GENQ_HOME/ui/token), which the printed URL carries once. Another address than this
    machine's needs users, or GENQ_UI_TOKEN for a server of one: the token GENQ_HOME keeps is never
    offered beyond this machine unless users exist."""
    import uvicorn

    from_variable = os.environ.get(TOKEN_VARIABLE) or None
    try:
        settings = load_settings()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not this_machine_only(host) and not from_variable and not users_exist(settings):
        click.echo(f"Error: serving on {host} (not this machine only) needs users (`client users add NAME`), or "
                   f"{TOKEN_VARIABLE} set for its one user: this home's own token is for this machine only", err=True)
        raise SystemExit(EXIT_USAGE)
    try:
        app = make_app(settings, operator_token=from_variable,
                       allowed_hosts=list(LOCAL_NAMES) if this_machine_only(host) else None)
        token = from_variable or home_token(settings)  # the one make_app took (made there on first need)
    except (SchemaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot keep the dashboard's token in {token_file(settings)}: "
                                   f"{exc.strerror or exc}") from exc
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    start_sender(app.state.client, settings)  # the outbox's webhooks, sent from this process
    url = url_of(host, sock.getsockname()[1])
    if from_variable:
        click.echo(f"{banner}{url} (requests need {TOKEN_VARIABLE}, or a user's token)")
    else:
        click.echo(f"{banner}{url}?{urlencode({'token': token})} (the token is kept in {token_file(settings)})")
    sys.stdout.flush()  # `client up` reads the URL from the log this goes to
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3))
    server.run(sockets=[sock])
