"""CLI room: flask commands for operators (init-db, expire, scopes, outbox)."""
import click
from flask import current_app
from flask.cli import AppGroup

from . import lifecycle, scopes as scope_mod
from .extensions import db
from .models import OutboxMail, Scope
from .util import utcnow


def init_db() -> None:
    """Upgrade the schema to the newest migration and seed what a fresh install needs."""
    from flask_migrate import upgrade
    upgrade(directory=current_app.extensions["migrate"].directory)
    scope_mod.seed()
    if current_app.config.get("DEV_PROVIDER"):
        try:
            from .devprovider import ensure_trusted
        except ImportError:
            pass
        else:
            ensure_trusted()  # creates its key and trusts <ISSUER>/dev-provider
    db.session.commit()


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
        from . import audit
        if not _valid_scope(name):
            raise click.BadParameter("a scope name is 1-100 characters of letters, digits and . _ : -", param_hint="NAME")
        if db.session.execute(db.select(Scope).where(Scope.name == name)).scalar():
            raise click.ClickException(f"scope {name} already exists")
        pos = (db.session.execute(db.select(db.func.max(Scope.position))).scalar() or 0) + 1
        db.session.add(Scope(name=name, description=description, position=pos, pre_claim=pre_claim,
                             post_claim=post_claim, enabled=True, created_at=utcnow()))
        audit.record("scope.added", "admin", actor_id="cli", scope=name)
        db.session.commit()
        click.echo(f"added {name}")

    @scopes.command("remove")
    @click.argument("name")
    def scopes_remove(name):
        """Remove scope NAME (a scope held by a live credential can only be disabled)."""
        from . import audit
        row = db.session.execute(db.select(Scope).where(Scope.name == name)).scalar()
        if row is None:
            raise click.ClickException(f"no scope named {name}")
        if scope_mod.in_use(name):
            row.enabled = False
            audit.record("scope.disabled", "admin", actor_id="cli", scope=name)
            db.session.commit()
            click.echo(f"{name} is held by live credentials: disabled instead of removed")
            return
        db.session.delete(row)
        audit.record("scope.removed", "admin", actor_id="cli", scope=name)
        db.session.commit()
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

    from . import ops_cli, trust_cli
    from .console import cli as console_cli
    from .devprovider import cli as devprovider_cli
    for module in (trust_cli, console_cli, devprovider_cli, ops_cli):
        module.register(app)


def _valid_scope(name: str) -> bool:
    import re
    return bool(re.fullmatch(r"[A-Za-z0-9._:\-]{1,100}", name))


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
