"""Console first-run room: a one-time setup link, printed by `flask init-db`, that creates the first admin."""
import json
from datetime import datetime, timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import delete

from .. import settings
from ..extensions import db, limiter
from ..models import Setting, User
from ..secrets import digest, new_token, same
from ..util import utcnow
from .auth import PASSWORD, open_session
from .forms import SetupForm

bp = Blueprint("console_setup", __name__)

# a Setting row outside settings.DEFAULTS, so the settings page and all_settings() never see it
SETUP_KEY = "setup_token"
SETUP_TTL = timedelta(hours=24)


@bp.context_processor
def _common():
    from .forms import ButtonForm
    return {"logout_form": ButtonForm()}


def admin_exists() -> bool:
    return db.session.execute(db.select(User.id).where(User.is_admin.is_(True)).limit(1)).first() is not None


def issue_token(now=None) -> str | None:
    """A fresh setup token (replacing any earlier one) while no admin exists, else None. Caller commits."""
    if admin_exists():
        discard()
        return None
    now = now or utcnow()
    token = new_token("setup_", 32)
    value = json.dumps({"digest": digest(token), "expires_at": (now + SETUP_TTL).isoformat()})
    db.session.merge(Setting(key=SETUP_KEY, value=value))
    return token


def discard() -> None:
    """Forget the setup token (an admin now exists). Caller commits."""
    db.session.execute(delete(Setting).where(Setting.key == SETUP_KEY))


def setup_url(token: str) -> str:
    # no request context in the CLI: the public address is the ISSUER
    return current_app.config["ISSUER"] + "/console/setup?token=" + token


def announce() -> str | None:
    """For `flask init-db`: a fresh setup link while no admin exists. Only ever printed to the operator's stdout."""
    token = issue_token()
    db.session.commit()
    if token is None:
        return None
    return (f"No admin yet: open {setup_url(token)} to create one "
            f"(valid {int(SETUP_TTL.total_seconds() // 3600)} h, works once; run init-db again for a new link).")


def _stored(token: str, now) -> Setting | None:
    """The setup row when token matches it and it has not expired."""
    if not token or len(token) > 200:
        return None
    row = db.session.get(Setting, SETUP_KEY)
    if row is None:
        return None
    try:
        value = json.loads(row.value)
        expires = datetime.fromisoformat(value["expires_at"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires <= now or not same(value.get("digest", ""), digest(token)):
        return None
    return row


def _ip_limit():
    return current_app.config.get("RATELIMIT_CONSOLE_SETUP_PER_IP") or "30/hour"


@bp.route("/console/setup", methods=["GET", "POST"])
@limiter.limit(_ip_limit, methods=["POST"])
def setup():
    """GET shows the form; the token is spent only by the POST that creates the admin (link scanners cannot burn it)."""
    now = utcnow()
    token = request.values.get("token", "")
    # one answer for no token, a wrong or expired one, and "an admin already exists": nothing here
    if admin_exists():
        abort(404)
    row = _stored(token, now)
    if row is None:
        abort(404)
    form = SetupForm()
    status = 200
    if form.validate_on_submit():
        # spend the token with a compare-and-delete, so two racing POSTs create one admin
        won = db.session.execute(delete(Setting).where(Setting.key == SETUP_KEY, Setting.value == row.value)
                                 .execution_options(synchronize_session=False)).rowcount
        if not won or admin_exists():
            db.session.rollback()
            abort(404)
        from .cli import create_admin
        user = create_admin(form.email.data, form.password.data, actor_kind="system", actor_id="setup",
                            event="admin.created", ip=request.remote_addr, user_agent=request.user_agent.string)
        db.session.commit()
        open_session(user, PASSWORD, now)  # a password session: the console opens
        flash(f"Welcome. {user.email} is the first admin; sign in with this email and password from now on.",
              "success")
        return redirect(url_for("admin.dashboard"))
    if request.method == "POST":
        status = 400
    # the token is in this page's URL: never cache it, never leak it in a Referer
    return render_template("console/setup.html", form=form, token=token,
                           service_name=settings.get("service_name")), status, {
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
