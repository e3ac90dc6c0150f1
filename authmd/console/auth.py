"""Console sign-in room: admin password sign-in, portal sign-in links, idle timeout, access guards."""
import functools
from datetime import datetime, timedelta

from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request, session,
                   url_for)
from flask_login import current_user, login_user, logout_user
from sqlalchemy import update
from werkzeug.security import check_password_hash, generate_password_hash

from .. import audit, mail, settings, tx
from ..extensions import db, limiter
from ..models import LoginFailure, LoginLink
from ..secrets import digest, new_token
from ..users import by_email, find_or_provision_by_email
from ..util import ProtocolError, utcnow
from .forms import ButtonForm, LoginForm, PortalLoginForm

bp = Blueprint("console_auth", __name__)

THROTTLE_FAILURES = 5
THROTTLE_WINDOW = timedelta(minutes=15)
LINK_TTL = timedelta(minutes=15)
LINKS_PER_WINDOW = 5
# a real scrypt hash, checked when the account does not exist, so timing does not reveal which emails exist
_DUMMY_HASH = generate_password_hash("not-a-password", method="scrypt")


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


# --- guards -----------------------------------------------------------------------------------------
def touch_session() -> bool:
    """False (and signs out) when the session sat idle longer than SESSION_IDLE_MINUTES."""
    if not current_user.is_authenticated:
        return True
    now = utcnow()
    idle = timedelta(minutes=int(current_app.config.get("SESSION_IDLE_MINUTES") or 30))
    last = session.get("last_active")
    if last:
        try:
            if now - datetime.fromisoformat(last) > idle:
                logout_user()
                session.pop("last_active", None)
                return False
        except ValueError:
            pass
    session["last_active"] = now.isoformat()
    return True


def admin_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not touch_session():
            flash("Your session ended after a period of inactivity; sign in again.", "info")
            return redirect(url_for("console_auth.login", next=request.full_path.rstrip("?")))
        if not current_user.is_authenticated:
            return redirect(url_for("console_auth.login", next=request.full_path.rstrip("?")))
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapper


def user_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not touch_session():
            flash("Your session ended after a period of inactivity; sign in again.", "info")
            return redirect(url_for("console_auth.portal_login"))
        if not current_user.is_authenticated:
            return redirect(url_for("console_auth.portal_login"))
        return view(*args, **kwargs)
    return wrapper


def _safe_next(default: str) -> str:
    target = request.args.get("next") or ""
    # only same-site paths: never //host or a scheme, so the login cannot become an open redirect
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@bp.context_processor
def _common():
    return {"logout_form": ButtonForm()}


# --- admin sign-in ----------------------------------------------------------------------------------
def throttled(email: str, now) -> bool:
    n = db.session.execute(db.select(db.func.count(LoginFailure.id)).where(
        LoginFailure.email == email, LoginFailure.created_at > now - THROTTLE_WINDOW)).scalar()
    return n >= THROTTLE_FAILURES


def _ip_limit(key: str, default: str):
    # per-IP ceilings on top of the per-account throttle, so one client cannot spray many accounts
    return lambda: current_app.config.get(key) or default


@bp.route("/console/login", methods=["GET", "POST"])
@limiter.limit(_ip_limit("RATELIMIT_CONSOLE_LOGIN_PER_IP", "60/hour"), methods=["POST"])
def login():
    if current_user.is_authenticated and current_user.is_admin and request.method == "GET":
        return redirect(url_for("admin.dashboard"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email, now = form.email.data, utcnow()
        if throttled(email, now):
            form.password.errors.append("Too many failed sign-ins for this account. Wait 15 minutes and try again.")
            audit.record("admin.login_failed", "admin", actor_id=email, email=email, reason="throttled")
            db.session.commit()
            status = 429
        else:
            user = by_email(email)
            ok = check_password_hash(user.password_hash if user is not None and user.password_hash
                                     else _DUMMY_HASH, form.password.data)
            if ok and user.is_admin and user.is_active:
                db.session.execute(db.delete(LoginFailure).where(LoginFailure.email == email))
                session.clear()  # a fresh session on privilege change
                login_user(user)
                session["last_active"] = now.isoformat()
                audit.record("admin.login", "admin", actor_id=user.id, user_id=user.id)
                db.session.commit()
                return redirect(_safe_next(url_for("admin.dashboard")))
            db.session.add(LoginFailure(email=email, created_at=now))
            audit.record("admin.login_failed", "admin", actor_id=email, email=email, reason="bad credentials",
                         user_id=user.id if user is not None else None)
            db.session.commit()
            form.password.errors.append("The email or password is not correct.")
            status = 401
    elif request.method == "POST":
        status = 400
    from .setup import admin_exists
    return render_template("console/login.html", form=form, no_admin=not admin_exists(),
                           service_name=settings.get("service_name")), status


@bp.post("/logout")
def logout():
    form = ButtonForm()
    if not form.validate_on_submit():
        abort(400)
    was_admin = current_user.is_authenticated and current_user.is_admin
    logout_user()
    session.clear()
    flash("You are signed out.", "success")
    return redirect(url_for("console_auth.login" if was_admin else "console_auth.portal_login"))


# --- portal sign-in by emailed link -------------------------------------------------------------------
SAME_ANSWER = ("If that address can sign in here, a sign-in link is on its way. "
               "It is valid for 15 minutes and works once.")


@bp.route("/portal/login", methods=["GET", "POST"])
@limiter.limit(_ip_limit("RATELIMIT_PORTAL_LOGIN_PER_IP", "30/hour"), methods=["POST"])
def portal_login():
    form = PortalLoginForm()
    status = 200
    if form.validate_on_submit():
        email, now = form.email.data, utcnow()
        try:
            send_login_link(email, now)
            db.session.commit()
            mail.deliver_queued()
        except ProtocolError as exc:
            tx.rollback()
            form.email.errors.append(exc.message)
            return render_template("portal/login.html", form=form,
                                   service_name=settings.get("service_name")), exc.status, exc.headers or {}
        # one answer whether or not the address is known
        return render_template("portal/login_sent.html", message=SAME_ANSWER,
                               service_name=settings.get("service_name"))
    if request.method == "POST":
        status = 400
    return render_template("portal/login.html", form=form, service_name=settings.get("service_name")), status


def send_login_link(email: str, now) -> bool:
    """Queue a one-time sign-in link unless the address is disabled or asked too often. Caller commits, then
    calls mail.deliver_queued() (which withdraws the link and raises 503 if the mail cannot be delivered)."""
    user = by_email(email)
    if user is not None and not user.is_active:
        return False
    recent = db.session.execute(db.select(db.func.count(LoginLink.id)).where(
        LoginLink.email == email, LoginLink.created_at > now - LINK_TTL)).scalar()
    if recent >= LINKS_PER_WINDOW:
        return False  # quietly: the same answer, no mail flood
    token = new_token("sil_", 32)
    row = LoginLink(email=email, digest=digest(token), created_at=now, expires_at=now + LINK_TTL)
    db.session.add(row)
    db.session.flush()
    link = current_app.config["ISSUER"] + url_for("console_auth.portal_link") + "?token=" + token
    subject, text, html = mail.render("portal_login", link=link, email=email,
                                      service_name=settings.get("service_name"), minutes=15)
    # a link whose mail never left is withdrawn: it does not count toward the window, nobody holds it
    mail.queue(email, subject, text, html,
               on_failure=(lambda link_id: db.session.execute(db.delete(LoginLink).where(LoginLink.id == link_id)),
                           row.id))
    return True


def _link_row(token: str):
    if not token or len(token) > 200:
        return None
    return db.session.execute(db.select(LoginLink).where(LoginLink.digest == digest(token))).scalar()


@bp.route("/portal/login/link", methods=["GET", "POST"])
def portal_link():
    """GET only shows a button; the link is spent on the POST, so mail scanners cannot burn it."""
    form = ButtonForm()
    token = request.values.get("token", "")
    row, now = _link_row(token), utcnow()
    usable = row is not None and row.used_at is None and row.expires_at > now
    if request.method == "POST" and form.validate_on_submit() and usable:
        won = db.session.execute(update(LoginLink).where(
            LoginLink.id == row.id, LoginLink.used_at.is_(None), LoginLink.expires_at > now)
            .values(used_at=now).execution_options(synchronize_session=False)).rowcount
        if won:
            user = find_or_provision_by_email(row.email, source="portal")
            if user.is_active:
                db.session.flush()
                audit.record("user.login", "user", actor_id=user.id, user_id=user.id)
                db.session.commit()
                session.clear()
                login_user(user)
                session["last_active"] = now.isoformat()
                return redirect(url_for("portal.home"))
        db.session.rollback()
        usable = False
    status = 200 if usable else 410
    # the token is in this page's URL: never cache it, never leak it in a Referer
    return render_template("portal/link.html", form=form, token=token, usable=usable,
                           service_name=settings.get("service_name")), status, {
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
