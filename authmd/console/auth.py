"""Console sign-in room: admin password sign-in, portal sign-in links, sessions (generation, idle and
absolute lifetime, how they were opened), the per-(IP, account) throttle, access guards."""
import functools
import math
from datetime import datetime, timedelta

from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request, session,
                   url_for)
from flask_login import current_user, login_user, logout_user
from sqlalchemy import update
from werkzeug.security import check_password_hash, generate_password_hash

from .. import audit, mail, settings, tx
from ..extensions import db, limiter
from ..models import LoginFailure, LoginLink, User
from ..secrets import digest, new_token
from ..users import by_email, end_sessions, find_or_provision_by_email, may_provision
from ..util import ProtocolError, utcnow
from .forms import ButtonForm, LoginForm, PortalLoginForm
from .redirects import safe_target

bp = Blueprint("console_auth", __name__)

# The throttle, per (client IP, account): a stranger's failures slow down that stranger only, never the
# owner signing in from elsewhere. From one IP, the first THROTTLE_FREE failures for an account cost
# nothing; after that each further try waits 2, 4, 8, … seconds after the last failure, at most
# THROTTLE_CAP. Failures count for THROTTLE_WINDOW; a success from that IP clears them. The per-IP
# ceiling across accounts is the rate limit RATELIMIT_CONSOLE_LOGIN_PER_IP on the POST.
THROTTLE_FREE = 5
THROTTLE_CAP = 15 * 60
THROTTLE_WINDOW = timedelta(hours=24)
LINK_TTL = timedelta(minutes=15)
LINKS_PER_WINDOW = 5
# a real scrypt hash, checked when the account does not exist, so timing does not reveal which emails exist
_DUMMY_HASH = generate_password_hash("not-a-password", method="scrypt")
# how a session was opened: only a password session of an admin opens the console; a sign-in link
# (which anyone who reads the mail, or the outbox table, holds) opens the portal only
PASSWORD, LINK = "password", "link"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


# --- sessions ---------------------------------------------------------------------------------------
def open_session(user: User, method: str, now) -> None:
    """A fresh session for user (nothing of the previous one survives a privilege change), stamped with
    how it was opened, the user's session generation and the sign-in time."""
    session.clear()
    login_user(user)
    session["auth_method"] = method
    session["gen"] = user.session_generation
    session["signed_in_at"] = session["last_active"] = now.isoformat()


def _time(key: str):
    try:
        return datetime.fromisoformat(session.get(key) or "")
    except (TypeError, ValueError):
        return None


def load_user(user_id):
    """Flask-Login's user loader: the session's user while the session is still good. A session is dead
    once the user is disabled, once the user's session generation moved on (sign-out, new password,
    demotion, disabling: users.end_sessions), and SESSION_MAX_HOURS after sign-in, however busy."""
    if not str(user_id).isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.is_active or session.get("gen") != user.session_generation:
        return None
    signed_in = _time("signed_in_at")
    max_age = timedelta(hours=float(current_app.config.get("SESSION_MAX_HOURS") or 12))
    if signed_in is None or utcnow() - signed_in > max_age:
        return None
    return user


def console_session() -> bool:
    """A session that opens the console: an admin's, opened with the admin's password."""
    return bool(current_user.is_authenticated and current_user.is_admin
                and session.get("auth_method") == PASSWORD)


# --- guards -----------------------------------------------------------------------------------------
def touch_session() -> bool:
    """False (and signs out) when the session sat idle longer than SESSION_IDLE_MINUTES."""
    if not current_user.is_authenticated:
        return True
    now = utcnow()
    idle = timedelta(minutes=int(current_app.config.get("SESSION_IDLE_MINUTES") or 30))
    last = _time("last_active")
    if last is None or now - last > idle:
        logout_user()
        session.clear()
        return False
    session["last_active"] = now.isoformat()
    return True


def _to_login():
    return redirect(url_for("console_auth.login", next=request.full_path.rstrip("?")))


def admin_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not touch_session():
            flash("Your session ended after a period of inactivity; sign in again.", "info")
            return _to_login()
        if not current_user.is_authenticated:
            return _to_login()
        if not current_user.is_admin:
            abort(403)
        if not console_session():
            flash("A sign-in link opens the portal only: enter your password to open the console.", "info")
            return _to_login()
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


@bp.context_processor
def _common():
    return {"logout_form": ButtonForm()}


# --- admin sign-in ----------------------------------------------------------------------------------
def _client_ip() -> str:
    return request.remote_addr or "unknown"


def throttle_wait(email: str, ip: str, now) -> int:
    """Seconds this IP must still wait before it may try this account's password again (0: now).
    The same for an account that does not exist, so the answer reveals nothing about it."""
    n, last = db.session.execute(db.select(db.func.count(LoginFailure.id), db.func.max(LoginFailure.created_at))
                                 .where(LoginFailure.email == email, LoginFailure.ip == ip,
                                        LoginFailure.created_at > now - THROTTLE_WINDOW)).one()
    if n < THROTTLE_FREE or last is None:
        return 0
    delay = min(2 ** (n - THROTTLE_FREE + 1), THROTTLE_CAP)
    return max(0, math.ceil((last + timedelta(seconds=delay) - now).total_seconds()))


def _record_failure(email: str, ip: str, now) -> None:
    db.session.execute(db.delete(LoginFailure).where(LoginFailure.created_at <= now - THROTTLE_WINDOW))
    db.session.add(LoginFailure(email=email, ip=ip, created_at=now))


def _ip_limit(key: str, default: str):
    # per-IP ceilings on top of the per-(IP, account) throttle, so one client cannot spray many accounts
    return lambda: current_app.config.get(key) or default


@bp.route("/console/login", methods=["GET", "POST"])
@limiter.limit(_ip_limit("RATELIMIT_CONSOLE_LOGIN_PER_IP", "60/hour"), methods=["POST"])
def login():
    if console_session() and request.method == "GET":
        return redirect(url_for("admin.dashboard"))
    form = LoginForm()
    # an admin signed in by link is in the portal: the page says that the password opens the console
    portal_email = current_user.email if current_user.is_authenticated and current_user.is_admin else None
    if request.method == "GET" and portal_email and not form.email.data:
        form.email.data = portal_email
    status, headers = 200, {}
    if form.validate_on_submit():
        email, ip, now = form.email.data, _client_ip(), utcnow()
        wait = throttle_wait(email, ip, now)
        if wait:
            form.password.errors.append(f"Too many failed sign-ins for this account from your address. "
                                        f"Wait {wait} seconds and try again.")
            audit.record("admin.login_failed", "admin", actor_id=email, email=email, reason="throttled",
                         ip=request.remote_addr, user_agent=request.user_agent.string)
            db.session.commit()
            status, headers = 429, {"Retry-After": str(wait)}
        else:
            user = by_email(email)
            ok = check_password_hash(user.password_hash if user is not None and user.password_hash
                                     else _DUMMY_HASH, form.password.data)
            if ok and user.is_admin and user.is_active:
                db.session.execute(db.delete(LoginFailure).where(LoginFailure.email == email,
                                                                 LoginFailure.ip == ip))
                audit.record("admin.login", "admin", actor_id=user.id, user_id=user.id,
                             ip=request.remote_addr, user_agent=request.user_agent.string)
                db.session.commit()
                open_session(user, PASSWORD, now)
                return redirect(safe_target(request.args.get("next"), url_for("admin.dashboard")))
            _record_failure(email, ip, now)
            audit.record("admin.login_failed", "admin", actor_id=email, email=email, reason="bad credentials",
                         user_id=user.id if user is not None else None,
                         ip=request.remote_addr, user_agent=request.user_agent.string)
            db.session.commit()
            form.password.errors.append("The email or password is not correct.")
            status = 401
    elif request.method == "POST":
        status = 400
    from .setup import admin_exists
    return render_template("console/login.html", form=form, no_admin=not admin_exists(),
                           portal_email=portal_email, service_name=settings.get("service_name")), status, headers


@bp.post("/logout")
def logout():
    """Sign out everywhere: the user's session generation moves on, so a copy of this cookie (or a
    session on another device) is dead too."""
    form = ButtonForm()
    if not form.validate_on_submit():
        abort(400)
    was_console = console_session()
    if current_user.is_authenticated:
        user = db.session.get(User, current_user.id)
        end_sessions(user)
        audit.record("admin.logout" if was_console else "user.logout", "admin" if was_console else "user",
                     actor_id=user.id, user_id=user.id, ip=request.remote_addr,
                     user_agent=request.user_agent.string)
        db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "success")
    # next: the claim page's "wrong account" sign-out returns there, to sign in as the person it names
    return redirect(safe_target(request.form.get("next"),
                                url_for("console_auth.login" if was_console else "console_auth.portal_login")))


# --- portal sign-in by emailed link -------------------------------------------------------------------
SAME_ANSWER = ("If that address can sign in here, a sign-in link is on its way. "
               "It is valid for 15 minutes and works once.")


def _prefill(value) -> str | None:
    """The address a page that sent the browser here names (?email=), when it is one: shown, never trusted."""
    from ..users import normalize_email
    try:
        return normalize_email(value.strip()) if isinstance(value, str) else None
    except ProtocolError:
        return None


@bp.route("/portal/login", methods=["GET", "POST"])
@limiter.limit(_ip_limit("RATELIMIT_PORTAL_LOGIN_PER_IP", "30/hour"), methods=["POST"])
def portal_login():
    """The form mails a sign-in link. `next` (a query parameter, then the form's hidden field) is where the
    link lands once used: the claim page sends the browser here with its own path and the address to prefill."""
    form = PortalLoginForm()
    next_path = safe_target(request.form.get("next") if request.method == "POST" else request.args.get("next"),
                            None)
    if request.method == "GET" and not form.email.data:
        form.email.data = _prefill(request.args.get("email"))
    page = {"form": form, "next_path": next_path, "service_name": settings.get("service_name")}
    # a next path may carry a claim page's token: never cached, never sent on as a Referer
    private = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"} if next_path else {}
    status = 200
    if form.validate_on_submit():
        email, now = form.email.data, utcnow()
        try:
            send_login_link(email, now, next_path=next_path)
            db.session.commit()
            mail.deliver_queued()
        except ProtocolError as exc:
            tx.rollback()
            form.email.errors.append(exc.message)
            return render_template("portal/login.html", **page), exc.status, {**private, **(exc.headers or {})}
        # one answer whether or not the address is known
        return render_template("portal/login_sent.html", message=SAME_ANSWER,
                               service_name=settings.get("service_name")), 200, private
    if request.method == "POST":
        status = 400
    return render_template("portal/login.html", **page), status, private


def send_login_link(email: str, now, next_path: str | None = None) -> bool:
    """Queue a one-time sign-in link unless the address is disabled or asked too often; once used, the link
    lands on next_path (a path on this site, else the portal). Caller commits, then calls
    mail.deliver_queued() (which withdraws the link and raises 503 if the mail cannot be delivered)."""
    user = by_email(email)
    if user is not None and not user.is_active:
        return False
    if user is None and not may_provision():
        return False  # only existing users are admitted: the same answer, no link, nothing created
    recent = db.session.execute(db.select(db.func.count(LoginLink.id)).where(
        LoginLink.email == email, LoginLink.created_at > now - LINK_TTL)).scalar()
    if recent >= LINKS_PER_WINDOW:
        return False  # quietly: the same answer, no mail flood
    token = new_token("sil_", 32)
    row = LoginLink(email=email, digest=digest(token), created_at=now, expires_at=now + LINK_TTL,
                    next_path=safe_target(next_path, None))
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
        try:
            # (a link mailed before "existing users only" was switched on must not create the user)
            user = find_or_provision_by_email(row.email, source="portal") if won else None
        except ProtocolError:
            user = None
        if user is not None and user.is_active:
            landing = row.next_path
            db.session.flush()
            audit.record("user.login", "user", actor_id=user.id, user_id=user.id,
                         ip=request.remote_addr, user_agent=request.user_agent.string)
            db.session.commit()
            open_session(user, LINK, now)  # the portal only, even for an admin (see admin_required)
            # checked again as it is used: a row is only as safe as whatever wrote it
            return redirect(safe_target(landing, url_for("portal.home")))
        tx.rollback()
        usable = False
    status = 200 if usable else 410
    # the token is in this page's URL: never cache it, never leak it in a Referer
    return render_template("portal/link.html", form=form, token=token, usable=usable,
                           service_name=settings.get("service_name")), status, {
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
