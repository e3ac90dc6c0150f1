"""Console CLI room: `flask create-admin EMAIL` (password prompted, or read from stdin)."""
import sys

import click

from .. import audit
from ..extensions import db
from ..models import User
from ..users import by_email, end_sessions, normalize_email
from ..util import ProtocolError, utcnow
from .forms import MIN_PASSWORD


def create_admin(email: str, password: str, *, actor_kind: str = "admin", actor_id: str = "cli",
                 event: str | None = None, ip=None, user_agent=None) -> User:
    """Create the admin, or promote an existing user and set the password (which ends every session the
    user holds: a new password shuts out whoever held the old one). Caller commits."""
    from .auth import hash_password
    from .setup import discard
    user = by_email(email)
    created = user is None
    if created:
        user = User(email=email, email_verified=True, created_at=utcnow(), source="admin")
        db.session.add(user)
    user.is_admin, user.is_active = True, True
    user.password_hash = hash_password(password)
    db.session.flush()
    if not created:
        end_sessions(user)
    discard()  # an admin exists now: a pending first-run setup link must never work
    audit.record(event or ("admin.created" if created else "admin.password_set"), actor_kind,
                 actor_id=actor_id, user_id=user.id, ip=ip, user_agent=user_agent,
                 **({} if created else {"existing_user": True}))
    return user


def register(app):
    @app.cli.command("create-admin")
    @click.argument("email")
    @click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
    def create_admin_command(email, password_stdin):
        """Create an admin who signs in at /console/login (or reset an existing one's password)."""
        try:
            email = normalize_email(email)
        except ProtocolError as exc:
            raise click.BadParameter(exc.message, param_hint="EMAIL") from None
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        if len(password) < MIN_PASSWORD:
            raise click.ClickException(f"the password must be at least {MIN_PASSWORD} characters")
        user = create_admin(email, password)
        db.session.commit()
        click.echo(f"admin {user.email} ready: sign in at /console/login")
