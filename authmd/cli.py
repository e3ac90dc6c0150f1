"""CLI room: flask commands for operators (init-db, expire, scopes, outbox)."""
import click
from flask import current_app
from flask.cli import AppGroup

from . import lifecycle, scopes as scope_mod
from .extensions import db
from .models import OutboxMail, Scope
from .util import ProtocolError, utcnow

_INIT_DB_SEEDS = "authmd.init_db_seeds"


def init_db() -> None:
    """Upgrade the schema to the newest migration and seed what a fresh install needs."""
    from flask_migrate import upgrade
    upgrade(directory=current_app.extensions["migrate"].directory)
    scope_mod.seed()
    from . import keys
    keys.ensure()  # the first signing key, made here so that workers starting together never race for it
    for seed in current_app.extensions.get(_INIT_DB_SEEDS, ()):
        seed()
    db.session.commit()


def on_init_db(app, seed) -> None:
    """seed() runs in every init-db after the default scopes, before its one commit: an optional room
    (the development provider) seeds what it needs without this module knowing it."""
    app.extensions.setdefault(_INIT_DB_SEEDS, []).append(seed)


def register(app):
    @app.cli.command("init-db")
    def init_db_command():
        """Create or upgrade the database schema (migrations) and seed default scopes."""
        init_db()
        click.echo(f"database ready at {_safe_url(current_app.config['DATABASE_URL'])}")
        try:
            from .console.setup import announce
        except ImportError:  # the console room is optional
            return
        # the one-time first-admin link goes to this command's stdout only, never to a logger
        line = announce()
        if line:
            click.echo(line)

    @app.cli.command("expire")
    def expire_command():
        """Expire unclaimed registrations past their deadline and purge spent one-time data (run from cron)."""
        n = lifecycle.expire_due()
        extra = _purge()
        db.session.commit()
        click.echo(f"expired {n} registration(s)" + "".join(f", {v} {k}" for k, v in extra.items()))

    scopes = AppGroup("scopes", help="List, add and remove the scopes this service grants.")

    @scopes.command("list")
    def scopes_list():
        """List every scope with its flags."""
        rows = db.session.execute(db.select(Scope).order_by(Scope.position, Scope.name)).scalars()
        for s in rows:
            flags = ",".join(f for f, on in (("pre-claim", s.pre_claim), ("post-claim", s.post_claim),
                                             ("disabled", not s.enabled)) if on)
            click.echo(f"{s.name}\t{flags}\t{s.description}")

    @scopes.command("add")
    @click.argument("name")
    @click.option("--description", default="", help="What the scope allows.")
    @click.option("--pre-claim/--no-pre-claim", default=False, help="Granted before a claim.")
    @click.option("--post-claim/--no-post-claim", default=True, help="Granted after a claim.")
    def scopes_add(name, description, pre_claim, post_claim):
        """Add a scope NAME."""
        try:
            scope_mod.add(name, description, pre_claim=pre_claim, post_claim=post_claim, actor_id="cli")
        except ProtocolError as exc:
            db.session.rollback()
            if exc.status == 400:
                raise click.BadParameter(exc.message, param_hint="NAME") from None
            raise click.ClickException(exc.message) from None
        db.session.commit()
        click.echo(f"added {name}")

    @scopes.command("remove")
    @click.argument("name")
    def scopes_remove(name):
        """Remove scope NAME (a scope held by a live credential can only be disabled)."""
        row = scope_mod.by_name(name)
        if row is None:
            raise click.ClickException(f"no scope named {name}")
        outcome = scope_mod.remove(row, actor_id="cli")
        db.session.commit()
        if outcome == "disabled":
            click.echo(f"{name} is held by live credentials: disabled instead of removed")
        else:
            click.echo(f"removed {name}")

    app.cli.add_command(scopes)

    outbox = AppGroup("outbox", help="Read mail held when no mail server is configured.")

    @outbox.command("list")
    @click.option("--limit", default=20, show_default=True)
    def outbox_list(limit):
        """The newest held messages."""
        rows = db.session.execute(db.select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)).scalars()
        for m in rows:
            click.echo(f"{m.id}\t{m.created_at:%Y-%m-%d %H:%M:%S}\t{m.to_addr}\t{m.subject}")

    @outbox.command("show")
    @click.argument("message_id", type=int)
    def outbox_show(message_id):
        """Print one held message (it contains one-time links: treat it as a mailbox)."""
        m = db.session.get(OutboxMail, message_id)
        if m is None:
            raise click.ClickException(f"no message {message_id}")
        click.echo(f"To: {m.to_addr}\nSubject: {m.subject}\n\n{m.body_text}")

    app.cli.add_command(outbox)

    from . import keys_cli, ops_cli, resource_servers_cli
    from .trust import cli as trust_cli
    from .console import cli as console_cli
    from .devprovider import cli as devprovider_cli
    for module in (trust_cli, console_cli, devprovider_cli, ops_cli, resource_servers_cli, keys_cli):
        module.register(app)


def _purge() -> dict:
    """Delete one-time data nobody can use any more."""
    from .models import LoginLink, SeenJti
    now = utcnow()
    out = {}
    out["seen jti(s) purged"] = db.session.execute(
        db.delete(SeenJti).where(SeenJti.expires_at < now)).rowcount or 0
    out["sign-in link(s) purged"] = db.session.execute(
        db.delete(LoginLink).where(LoginLink.expires_at < now)).rowcount or 0
    return out


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<configured database>"
