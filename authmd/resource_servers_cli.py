"""Resource servers room (CLI): `flask resource-servers add|list|rotate-secret|disable|enable|remove`."""
import json

import click
from flask.cli import AppGroup

from . import resource_servers as rs
from .extensions import db


def _row(name: str):
    row = rs.by_name(name)
    if row is None:
        raise click.ClickException(f"no resource server named {name}")
    return row


def _secret_out(row, secret: str, as_json: bool, verb: str) -> None:
    # the secret goes to this command's stdout only, once; never to a logger
    if as_json:
        click.echo(json.dumps({"name": row.name, "client_id": row.client_id, "client_secret": secret}))
        return
    click.echo(f"{verb} resource server {row.name}")
    click.echo(f"client_id:     {row.client_id}")
    click.echo(f"client_secret: {secret}")
    click.echo("The secret is shown this once: store it in the API's secret store now.")


def register(app):
    group = AppGroup("resource-servers",
                     help="Manage the APIs that may ask authmd about credentials (POST /oauth2/introspect).")

    @group.command("add")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print name, client_id and client_secret as one JSON object.")
    def add(name, as_json):
        """Add resource server NAME; prints its client_id and client_secret (the secret only this once)."""
        try:
            row, secret = rs.add(name, actor_id="cli")
        except rs.Invalid as exc:
            raise click.ClickException(str(exc)) from None
        db.session.commit()
        _secret_out(row, secret, as_json, "added")

    @group.command("list")
    def list_():
        """List resource servers: name, client_id, state, created, last used."""
        rows = rs.all_servers()
        if not rows:
            click.echo("no resource servers")
        for r in rows:
            click.echo("\t".join([r.name, r.client_id, "enabled" if r.enabled else "disabled",
                                  f"created {r.created_at:%Y-%m-%d %H:%M}",
                                  f"last used {r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never used"]))

    @group.command("rotate-secret")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print name, client_id and client_secret as one JSON object.")
    def rotate_secret(name, as_json):
        """Give NAME a new secret (printed once); the old one stops working."""
        row = _row(name)
        secret = rs.rotate(row, actor_id="cli")
        db.session.commit()
        _secret_out(row, secret, as_json, "new secret for")

    def _toggle(name, enabled):
        row = _row(name)
        changed = rs.set_enabled(row, enabled, actor_id="cli")
        db.session.commit()
        state = "enabled" if enabled else "disabled"
        click.echo(f"{state} {name}" if changed else f"{name} was already {state}")

    @group.command("disable")
    @click.argument("name")
    def disable(name):
        """Refuse NAME's introspection calls (within a second on every worker) until enabled again."""
        _toggle(name, False)

    @group.command("enable")
    @click.argument("name")
    def enable(name):
        """Accept NAME's introspection calls again (same client_id and secret)."""
        _toggle(name, True)

    @group.command("remove")
    @click.argument("name")
    def remove(name):
        """Remove NAME for good (its client_id and secret stop working)."""
        row = _row(name)
        rs.remove(row, actor_id="cli")
        db.session.commit()
        click.echo(f"removed {name}")

    app.cli.add_command(group)
