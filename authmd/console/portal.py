"""Portal room: a signed-in user's pending claims (show code / this wasn't me) and their agents."""
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import claims, revocation, scopes, settings, tx
from ..extensions import db
from ..models import ClaimAttempt, Credential, Delegation, Registration
from ..util import ProtocolError, utcnow
from .auth import user_required
from .forms import ButtonForm

bp = Blueprint("portal", __name__, url_prefix="/portal")


@bp.context_processor
def _ctx():
    return {"service_name": settings.get("service_name"), "layout": "portal/layout.html",
            "logout_form": ButtonForm()}


def pending_claims(email: str) -> list[ClaimAttempt]:
    now = utcnow()
    return list(db.session.execute(
        db.select(ClaimAttempt).join(Registration, Registration.id == ClaimAttempt.registration_id)
        .where(ClaimAttempt.email == email, ClaimAttempt.status == "initiated",
               ClaimAttempt.link_expires_at > now, Registration.status == "pending")
        .order_by(ClaimAttempt.created_at.desc()).limit(50)).scalars())


def my_agents(user_id: int):
    regs = list(db.session.execute(db.select(Registration).where(Registration.user_id == user_id)
                                   .order_by(Registration.created_at.desc()).limit(200)).scalars())
    creds = {}
    if regs:
        for c in db.session.execute(db.select(Credential).where(
                Credential.registration_id.in_([r.id for r in regs])).order_by(Credential.id)).scalars():
            creds.setdefault(c.registration_id, []).append(c)
    now = utcnow()
    summary = {}
    for reg_id, cs in creds.items():
        live = [c for c in cs if c.revoked_at is None and (c.expires_at is None or c.expires_at > now)]
        used = [c.last_used_at for c in cs if c.last_used_at]
        summary[reg_id] = {"scopes": " ".join(dict.fromkeys(s for c in live for s in c.scope_list)),
                           "last_used": max(used) if used else None}
    dels = list(db.session.execute(db.select(Delegation).where(Delegation.user_id == user_id)
                                   .order_by(Delegation.last_seen.desc()).limit(200)).scalars())
    return regs, summary, dels


def _home(code=None, code_for=None, error=None, status=200):
    email = current_user.email
    attempts = pending_claims(email) if email else []
    regs, creds, dels = my_agents(current_user.id)
    resp = Response(render_template(
        "portal/home.html", attempts=attempts, agent=claims.agent_description, post_claim=scopes.post_claim(),
        regs=regs, creds=creds, dels=dels, form=ButtonForm(), code=code, code_for=code_for, error=error), status=status)
    if code:
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/")
@user_required
def home():
    return _home()


@bp.post("/claims/<attempt_id>/code")
@user_required
def show_code(attempt_id):
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        answer = claims.mint_code_for_attempt(attempt_id, current_user.email, ip=request.remote_addr,
                                              user_agent=request.user_agent.string, actor_id=current_user.id)
        tx.commit()
    except ProtocolError as exc:
        tx.rollback()
        return _home(error=exc.message, code_for=attempt_id, status=exc.status)
    return _home(code=answer, code_for=attempt_id)


@bp.route("/claims/<attempt_id>/deny", methods=["GET", "POST"])
@user_required
def deny(attempt_id):
    try:
        attempt = claims.attempt_for_email(attempt_id, current_user.email)
    except ProtocolError:
        abort(404)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            claims.deny_for_attempt(attempt_id, current_user.email, actor_id=current_user.id)
            tx.commit()
            flash("Refused. That agent cannot bind itself to your address.", "success")
        except ProtocolError as exc:
            tx.rollback()
            flash(exc.message, "error")
        return redirect(url_for("portal.home"))
    agent = claims.agent_description(attempt.registration, attempt)
    said = f"“{agent['reported']}” (self-reported, not verified)" if agent["reported"] else "(it gave no name)"
    return render_template("console/confirm.html", form=form, title="This wasn't you?",
                           message=f"The agent from {agent['ip']} that describes itself as {said} will not be "
                                   f"able to bind itself to {attempt.email}. Any key it already holds keeps its "
                                   "current, limited scopes until it expires.",
                           action=url_for("portal.deny", attempt_id=attempt.id), button="Refuse this agent",
                           back=url_for("portal.home"))


@bp.route("/agents/<registration_id>/revoke", methods=["GET", "POST"])
@user_required
def revoke(registration_id):
    reg = db.session.get(Registration, registration_id)
    if reg is None or reg.user_id != current_user.id:
        abort(404)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        n = revocation.revoke_registration(reg.id, actor_kind="user", actor_id=current_user.id)
        db.session.commit()
        flash(f"Revoked: {n} credential(s) stopped working.", "success")
        return redirect(url_for("portal.home"))
    return render_template("console/confirm.html", form=form, title=f"Revoke agent {reg.id}?",
                           message="Its next call fails. The agent must register again to get access.",
                           count=revocation.count_registration(reg.id),
                           count_label="live credential(s) will stop working",
                           action=url_for("portal.revoke", registration_id=reg.id), button="Revoke",
                           back=url_for("portal.home"))


@bp.route("/delegations/<int:delegation_id>/revoke", methods=["GET", "POST"])
@user_required
def revoke_delegation(delegation_id):
    dele = db.session.get(Delegation, delegation_id)
    if dele is None or dele.user_id != current_user.id:
        abort(404)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        n = revocation.revoke_delegation(dele.id, actor_kind="user", actor_id=current_user.id)
        db.session.commit()
        flash(f"Revoked: {n} credential(s) stopped working.", "success")
        return redirect(url_for("portal.home"))
    return render_template("console/confirm.html", form=form, title="Revoke this provider delegation?",
                           message=f"Every credential the provider {dele.iss} holds for you through this delegation stops working.",
                           count=revocation.count_delegation(dele.id),
                           count_label="live credential(s) will stop working",
                           action=url_for("portal.revoke_delegation", delegation_id=dele.id), button="Revoke",
                           back=url_for("portal.home"))
