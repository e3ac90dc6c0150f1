"""Portal room: a signed-in user's pending claims (v0.1's: show code / this wasn't me; the latest protocol's:
Authorize / this wasn't me, as on its /claim page) and their agents."""
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import claims, latest_claims, queries, revocation, scopes, settings, tx
from ..extensions import db
from ..models import Delegation, Registration
from ..util import ProtocolError, printable
from .auth import user_required
from .confirm import confirm_then_revoke
from .forms import ButtonForm

bp = Blueprint("portal", __name__, url_prefix="/portal")


@bp.context_processor
def _ctx():
    return {"service_name": settings.get("service_name"), "layout": "portal/layout.html",
            "logout_form": ButtonForm()}


def _home(code=None, code_for=None, error=None, status=200):
    email = current_user.email
    attempts = queries.pending_claims(email, protocol="v0.1") if email else []
    latest = queries.pending_claims(email, protocol="latest") if email else []
    regs, creds, dels = queries.my_agents(current_user.id)
    resp = Response(render_template(
        "portal/home.html", attempts=attempts, latest=latest, agent=claims.agent_description,
        describe=latest_claims.describe, post_claim=scopes.post_claim(), regs=regs, creds=creds, dels=dels,
        form=ButtonForm(), code=code, code_for=code_for, error=error), status=status)
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


def _deny_page(attempt, about: dict, *, deny, done: str, consequence: str, action: str):
    """"This wasn't me" for a claim waiting for the signed-in person (either protocol): a confirmation page,
    then `deny()` (the domain call) on POST."""
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            deny()
            tx.commit()
            flash(done, "success")
        except ProtocolError as exc:
            tx.rollback()
            flash(exc.message, "error")
        return redirect(url_for("portal.home"))
    said = f"“{about['reported']}” (self-reported, not verified)" if about["reported"] else "(it gave no name)"
    return render_template("console/confirm.html", form=form, title="This wasn't you?",
                           message=f"The agent from {about['ip']} that describes itself as {said} will not be "
                                   f"able to bind itself to {attempt.email}{consequence}",
                           action=action, button="Refuse this agent", back=url_for("portal.home"))


@bp.route("/claims/<attempt_id>/deny", methods=["GET", "POST"])
@user_required
def deny(attempt_id):
    try:
        attempt = claims.attempt_for_email(attempt_id, current_user.email)
    except ProtocolError:
        abort(404)
    return _deny_page(
        attempt, claims.agent_description(attempt.registration, attempt),
        deny=lambda: claims.deny_for_attempt(attempt_id, current_user.email, actor_id=current_user.id,
                                             ip=request.remote_addr, user_agent=printable(request.user_agent.string)),
        done="Refused. That agent cannot bind itself to your address.",
        consequence=". Any key it already holds keeps its current, limited scopes until it expires.",
        action=url_for("portal.deny", attempt_id=attempt.id))


@bp.post("/latest-claims/<attempt_id>/authorize")
@user_required
def authorize(attempt_id):
    """Authorize for a latest claim: the same domain call as the /claim page's button (a fresh user_code shown
    once, or the link made at once for an attempt born at /agent/auth)."""
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        attempt = latest_claims.attempt_for_user(attempt_id, current_user)
        answer = latest_claims.authorize(attempt, current_user._get_current_object(), ip=request.remote_addr,
                                         user_agent=printable(request.user_agent.string))
        tx.commit()
    except ProtocolError as exc:
        tx.rollback()
        return _home(error=exc.message, code_for=attempt_id, status=exc.status)
    if answer.get("linked"):
        flash("Linked: the agent's next sign-in through that provider is accepted.", "success")
        return redirect(url_for("portal.home"))
    return _home(code=answer, code_for=attempt_id)


@bp.route("/latest-claims/<attempt_id>/deny", methods=["GET", "POST"])
@user_required
def deny_latest(attempt_id):
    try:
        attempt = latest_claims.attempt_for_user(attempt_id, current_user)
    except ProtocolError:
        abort(404)
    return _deny_page(
        attempt, latest_claims.describe(attempt),
        deny=lambda: latest_claims.deny(attempt, current_user._get_current_object(), ip=request.remote_addr,
                                        user_agent=printable(request.user_agent.string)),
        done="Refused. That agent cannot bind itself to your address with this request.",
        consequence=" with this request.", action=url_for("portal.deny_latest", attempt_id=attempt.id))


def _revoke_mine(model, target_id, *, count, revoke, title: str, message):
    """The confirm-then-revoke page for one of the signed-in user's own registrations or delegations; 404 for
    anyone else's, as for one that does not exist."""
    row = db.session.get(model, target_id)
    if row is None or row.user_id != current_user.id:
        abort(404)
    return confirm_then_revoke(
        revoke=lambda: revoke(row.id, actor_kind="user", actor_id=current_user.id, ip=request.remote_addr,
                              user_agent=request.user_agent.string),
        count=lambda: count(row.id),
        title=title, message=message(row), action=request.path, back=url_for("portal.home"),
        done="Revoked: {n} credential(s) stopped working.")


@bp.route("/agents/<registration_id>/revoke", methods=["GET", "POST"])
@user_required
def revoke(registration_id):
    return _revoke_mine(Registration, registration_id, count=revocation.count_registration,
                        revoke=revocation.revoke_registration, title=f"Revoke agent {registration_id}?",
                        message=lambda reg: "Its next call fails. The agent must register again to get access.")


@bp.route("/delegations/<int:delegation_id>/revoke", methods=["GET", "POST"])
@user_required
def revoke_delegation(delegation_id):
    return _revoke_mine(Delegation, delegation_id, count=revocation.count_delegation,
                        revoke=revocation.revoke_delegation, title="Revoke this provider delegation?",
                        message=lambda dele: f"Every credential the provider {dele.iss} holds for you through this "
                                             "delegation stops working.")
