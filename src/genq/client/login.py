"""Where a remote client finds its server: GENQ_ADDRESS and GENQ_TOKEN, else the file `client login` wrote.

The file is `$XDG_CONFIG_HOME/genq/login.json` (else `~/.config/genq/login.json`), 0600 in a 0700
folder: {"address": ..., "token": ...}. GENQ_ADDRESS wins over the file's address; the file's token is
used for its own address only, so a token never goes to a server it was not given for.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

import click

ADDRESS_VARIABLE = "GENQ_ADDRESS"
TOKEN_VARIABLE = "GENQ_TOKEN"
LOGIN_FILE = "login.json"


class LoginError(ValueError):
    """No usable address or token: one line saying what to set."""


@dataclass(frozen=True)
class Remote:
    """A server and the token a client sends it; `source` says where the address came from, in words."""

    address: str
    token: str
    source: str


def config_folder(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "genq"


def login_file(env: Mapping[str, str] | None = None) -> Path:
    return config_folder(env) / LOGIN_FILE


def checked_address(address: str) -> str:
    """`http(s)://host[:port]` without a trailing slash; LoginError for anything else."""
    address = address.strip().rstrip("/")
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise LoginError(f"{address!r} is not a server address such as http://head:8265")
    return address


def read_login(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    try:
        saved = json.loads(login_file(env).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(key), str) for key in ("address", "token")):
        return None
    return saved


def remote_from_environment(env: Mapping[str, str] | None = None) -> Remote | None:
    """The server this client works through, or None for local mode (no GENQ_ADDRESS, no login file)."""
    env = os.environ if env is None else env
    saved = read_login(env)
    if address := env.get(ADDRESS_VARIABLE, "").strip():
        address = checked_address(address)
        token = env.get(TOKEN_VARIABLE, "").strip()
        if not token and saved is not None and checked_saved(saved, env) == address:
            token = saved["token"]
        if not token:
            raise LoginError(f"{ADDRESS_VARIABLE} is set but there is no token: set {TOKEN_VARIABLE}, "
                             f"or `client login {address}`")
        return Remote(address, token, ADDRESS_VARIABLE)
    if saved is None:
        return None
    return Remote(checked_saved(saved, env), env.get(TOKEN_VARIABLE, "").strip() or saved["token"], str(login_file(env)))


def checked_saved(saved: dict[str, str], env: Mapping[str, str]) -> str:
    try:
        return checked_address(saved["address"])
    except LoginError as exc:
        raise LoginError(f"{login_file(env)}: {exc}; `client logout` removes it") from None


def save_login(address: str, token: str, env: Mapping[str, str] | None = None) -> Path:
    """Write the login file, 0600, in its folder made 0700."""
    from genq.client.local import private_dir, write_private_file

    path = login_file(env)
    private_dir(path.parent)
    write_private_file(path, json.dumps({"address": address, "token": token}) + "\n")
    return path


def forget_login(env: Mapping[str, str] | None = None) -> Path | None:
    """Remove the login file; its path, or None when there was none."""
    path = login_file(env)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


# -- `client login` / `client logout` --------------------------------------------------------------------

@click.command("login")
@click.argument("address")
@click.option("--token", default=None, help="The user's API token (`client users add`); asked for when not given.")
def login_command(address: str, token: str | None) -> None:
    """Check TOKEN against the genq server at ADDRESS (http://head:8265), then keep both in a 0600 file
    under the user's config folder: every later command goes through that server."""
    from genq.client.remote import Connection

    try:
        address = checked_address(address)
    except LoginError as exc:
        raise click.UsageError(str(exc)) from None
    token = (token or click.prompt("token", hide_input=True)).strip()
    if not token:
        raise click.UsageError("the token is empty")
    connection = Connection(address, token)
    answer = connection.get("/api/jobs", limit=1)  # a refused token or no server: one line, exit 1
    if answer.status_code != 200 or not isinstance(connection.json(answer), list):
        raise click.ClickException(f"{address} does not answer as a genq server (GET /api/jobs: {answer.status_code})")
    try:
        path = save_login(address, token)
    except OSError as exc:
        raise click.ClickException(f"cannot keep the login in {login_file()}: {exc.strerror or exc}") from None
    click.echo(f"logged in to {address}; the token is kept in {path}")


@click.command("logout")
def logout_command() -> None:
    """Forget the server and token `client login` kept."""
    path = forget_login()
    click.echo(f"removed {path}" if path is not None else f"not logged in (no {login_file()})")
