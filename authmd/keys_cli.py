"""Signing keys room (CLI): `flask keys list|rotate`."""
import click
from flask.cli import AppGroup

from . import keys
from .extensions import db


def register(app):
    group = AppGroup("keys", help="The service's signing keys (identity assertions of the latest protocol).")

    @group.command("list")
    def list_():
        """Every key: kid, state (active signs; retired stays published until its tokens expire), dates."""
        rows = keys.list_keys()
        if not rows:
            click.echo("no signing key yet (init-db creates one; the first signature would too)")
        for k in rows:
            until = f"published until {k['publish_until']:%Y-%m-%d %H:%M:%S}" if k["publish_until"] else ""
            click.echo("\t".join([k["kid"], k["alg"], k["state"], f"created {k['created_at']:%Y-%m-%d %H:%M:%S}",
                                  until]).rstrip())

    @group.command("rotate")
    def rotate():
        """Make a new active key; the old one keeps verifying (and stays in the JWKS) until its tokens expire."""
        new, retired = keys.rotate(actor_kind="admin", actor_id="cli")
        db.session.commit()
        click.echo(f"new active key {new.kid}" + (f"; retired {', '.join(retired)}" if retired else ""))

    app.cli.add_command(group)
