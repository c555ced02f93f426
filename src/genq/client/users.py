"""`client users`: the server's users, their tokens (shown once), limits and revocation.

These commands act on the store directly: whoever runs them has the database's own access, as an
operator does. A token is printed once, at `add`; the store keeps only its sha256.
"""
from __future__ import annotations

import click

from genq.client.render import echo_json, iso
from genq.client.runtime import Runtime, pass_runtime
from genq.core.config import redact_url
from genq.core.store.users import User, UserError, UserStore
from genq.core.webhooks import NotAllowed, check_url


def user_summary(user: User) -> dict:
    """A user without their secrets (what `list --json` prints)."""
    return {"name": user.name, "admin": user.admin, "max_running": user.max_running, "max_queued": user.max_queued,
            "notify": redact_url(user.notify_url) if user.notify_url else None,
            "created_at": iso(user.created_at), "revoked_at": iso(user.revoked_at)}


def user_store(rt: Runtime) -> UserStore:
    return UserStore(rt.store.sessions)


def refused(exc: UserError) -> click.ClickException:
    error = click.ClickException(str(exc))
    error.exit_code = 2
    return error


@click.group("users")
def users_command() -> None:
    """Users of `client server`: each has an API token, an admin flag and limits.

    With no users the server serves one user, this home's (its token in GENQ_HOME/ui/token), on this
    machine only; once users exist it may listen on other addresses, and each request's
    `Authorization: Bearer TOKEN` says whose it is."""


@users_command.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see and cancel every user's jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print name, token and webhook_secret as a JSON object.")
@pass_runtime
def add(rt: Runtime, name: str, admin: bool, as_json: bool) -> None:
    """Add user NAME and print their API token, once (only its hash is kept)."""
    try:
        user, token = user_store(rt).add(name, admin)
    except UserError as exc:
        raise refused(exc) from None
    if as_json:
        echo_json({"name": user.name, "token": token, "webhook_secret": user.webhook_secret, "admin": user.admin})
        return
    click.echo(f"user {user.name}{' (admin)' if user.admin else ''} added; their token, shown only now:")
    click.echo(token)
    click.echo(f"webhook secret: {user.webhook_secret}")


@users_command.command("revoke")
@click.argument("name")
@pass_runtime
def revoke(rt: Runtime, name: str) -> None:
    """Revoke NAME's token: every request with it is refused (401) from now on. Their jobs stay."""
    try:
        user = user_store(rt).revoke(name)
    except UserError as exc:
        raise refused(exc) from None
    click.echo(f"user {user.name}: token revoked at {iso(user.revoked_at)}")


@users_command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as a JSON list (no tokens, no secrets).")
@pass_runtime
def list_users(rt: Runtime, as_json: bool) -> None:
    """Every user, with their admin flag, limits and whether their token is revoked (never a secret)."""
    users = [user_summary(user) for user in user_store(rt).list()]
    if as_json:
        echo_json(users)
        return
    if not users:
        click.echo("no users: the server serves this home's owner only (`client users add NAME`)")
        return
    click.echo(f"{'NAME':<20} {'ADMIN':<6} {'MAX RUNNING':<12} {'MAX QUEUED':<11} REVOKED")
    for user in users:
        limit = lambda value: "-" if value is None else str(value)  # noqa: E731
        click.echo(f"{user['name']:<20} {'yes' if user['admin'] else 'no':<6} {limit(user['max_running']):<12} "
                   f"{limit(user['max_queued']):<11} {user['revoked_at'] or '-'}")


LIMIT = click.IntRange(min=0)


@users_command.command("set")
@click.argument("name")
@click.option("--max-running", type=LIMIT, default=None,
              help="At most N of NAME's jobs run at once; the others stay queued (enforced at the claim).")
@click.option("--max-queued", type=LIMIT, default=None,
              help="At most M of NAME's jobs waiting or queued; a submit past it is refused (exit 2).")
@click.option("--no-max-running", is_flag=True, help="Remove the running limit.")
@click.option("--no-max-queued", is_flag=True, help="Remove the queued limit.")
@click.option("--notify", metavar="URL", default=None,
              help="The webhook of NAME's jobs submitted without --notify (its host in GENQ_WEBHOOK_ALLOW); "
                   "'' removes it.")
@pass_runtime
def set_user(rt: Runtime, name: str, max_running: int | None, max_queued: int | None, no_max_running: bool,
             no_max_queued: bool, notify: str | None) -> None:
    """Set NAME's limits and default webhook (an option not given keeps its value)."""
    values: dict[str, int | str | None] = {}
    for key, value, remove in (("max_running", max_running, no_max_running), ("max_queued", max_queued, no_max_queued)):
        if value is not None and remove:
            raise click.UsageError(f"give --{key.replace('_', '-')} or --no-{key.replace('_', '-')}, not both")
        if value is not None or remove:
            values[key] = value
    if notify is not None:
        try:
            values["notify_url"] = check_url(notify, rt.settings.webhook_allow) if notify else None
        except NotAllowed as exc:
            raise click.UsageError(f"--notify: {exc}") from None
    if not values:
        raise click.UsageError("give --max-running, --max-queued, --notify (or --no-max-running, --no-max-queued)")
    try:
        user = user_store(rt).set(name, **values)
    except UserError as exc:
        raise refused(exc) from None
    shown = lambda value: "none" if value is None else str(value)  # noqa: E731
    click.echo(f"user {user.name}: max running {shown(user.max_running)}, max queued {shown(user.max_queued)}, "
               f"notify {redact_url(user.notify_url) if user.notify_url else 'none'}")
