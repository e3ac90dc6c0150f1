"""Latest claim page room: the person's side of the latest protocol's claim, GET /claim and POST /claim/confirm
(HTML, CSRF, works without JavaScript).

The agent hands the person a verification_uri carrying the attempt token. The gates, in order: an unknown
token is 404; without a portal session the browser goes to the emailed sign-in and comes back here; a
signed-in person who is not the attempt's login_hint gets 403 "wrong account"; then the attempt's state.
Authorize mints the user_code (shown once, on this POST's page only) or, for an attempt born at v0.1's
/agent/auth, links the provider identity at once.
"""
from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user

from .. import latest_claims, settings, tx
from ..console.auth import touch_session
from ..console.forms import ButtonForm
from ..util import ProtocolError, printable

bp = Blueprint("confirm_page", __name__)

# the page for each state of latest_claims.state(); "denied_now" is the answer to the press of the button
STATUS = {"open": 200, "confirmed": 200, "claimed": 200, "denied_now": 200,
          "denied": 410, "superseded": 410, "expired": 410}


@bp.after_request
def _private(resp):
    # every URL here carries the attempt token (and a POST's page may carry the code): never cached, never
    # sent on as a Referer; error pages (a CSRF refusal, a 500) included
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _page(state: str, *, token="", attempt=None, status=None, **extra):
    return render_template(
        "claim/confirm.html", state=state, token=token, attempt=attempt,
        about=latest_claims.describe(attempt) if attempt is not None else None,
        here=url_for(".show", claim_attempt_token=token) if token else None,
        logout_form=ButtonForm(), service_name=settings.get("service_name"), **extra,
    ), status or STATUS.get(state, 200)


def _gate(token):
    """(attempt, None) when the signed-in person may answer this attempt, else (None, the answer)."""
    if not token:
        return None, _page("missing", status=400)
    attempt = latest_claims.attempt_by_token(token)
    if attempt is None:
        return None, _page("unknown", status=404)
    if not touch_session() or not current_user.is_authenticated:
        # the portal's emailed sign-in, the address prefilled, and back to this page once the link is used
        return None, redirect(url_for("console_auth.portal_login", next=url_for(".show", claim_attempt_token=token),
                                      email=attempt.email))
    if not latest_claims.addressed_to(attempt, current_user):
        return None, _page("wrong_account", token=token, attempt=attempt, status=403)
    return attempt, None


def _who() -> dict:
    return {"ip": request.remote_addr, "user_agent": printable(request.user_agent.string)}


@bp.get("/claim")
def show():
    token = request.args.get("claim_attempt_token", "")
    attempt, stop = _gate(token)
    if stop is not None:
        return stop
    page = _page(latest_claims.state(attempt), token=token, attempt=attempt)
    tx.commit()  # state() may have found the registration past its deadline and expired it
    return page


@bp.post("/claim/confirm")
def confirm():
    token = request.form.get("claim_attempt_token", "")
    attempt, stop = _gate(token)
    if stop is not None:
        return stop
    action = request.form.get("action")
    user = current_user._get_current_object()
    try:
        if action == "deny":
            latest_claims.deny(attempt, user, **_who())
            tx.commit()
            return _page("denied_now", token=token, attempt=attempt)
        if action != "authorize":
            raise ProtocolError(400, "invalid_request", "Press Authorize or This wasn't me.")
        answer = latest_claims.authorize(attempt, user, **_who())
        tx.commit()
    except ProtocolError as exc:
        tx.rollback()
        attempt = latest_claims.attempt_by_token(token)
        state = latest_claims.state(attempt)
        # an attempt still open keeps the failure's status (400, 409, 429); else the state's own page
        page = _page(state, token=token, attempt=attempt, error=exc.message,
                     status=exc.status if state in ("open", "confirmed") else None)
        tx.commit()  # what state() found (an expiry) lands; the refused action wrote nothing
        return page
    if answer.get("linked"):
        return _page("linked", token=token, attempt=attempt)
    return _page("code", token=token, attempt=attempt, code=answer)
