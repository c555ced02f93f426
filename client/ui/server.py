"""`client ui`: bind, print the URL, serve with uvicorn."""
from __future__ import annotations

import socket
import sys

import click

from genq.client.ui.app import TOKEN_VARIABLE, make_app, ui_token
from genq.client.ui.security import LOCAL_NAMES, needs_token
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


def serve(host: str, port: int) -> None:
    import uvicorn

    token = ui_token()
    if needs_token(host) and not token:
        click.echo(f"Error: serving on {host} (not this machine only) needs {TOKEN_VARIABLE} set; "
                   "every request must then carry it", err=True)
        raise SystemExit(EXIT_USAGE)
    try:
        app = make_app(token=token, allowed_hosts=None if needs_token(host) else list(LOCAL_NAMES))
    except (SchemaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    click.echo(f"genq ui: {url_of(host, sock.getsockname()[1])}" + (f" (requests need {TOKEN_VARIABLE})" if token else ""))
    sys.stdout.flush()  # `client up` reads the URL from the log this goes to
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3))
    server.run(sockets=[sock])
