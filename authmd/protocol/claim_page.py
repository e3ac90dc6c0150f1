"""Claim page room: the page a person opens from the claim email (HTML, works without JavaScript)."""
from flask import Blueprint, render_template, request

from .. import claims, settings, tx
from ..util import ProtocolError, iso, printable

bp = Blueprint("claim_page", __name__)

STATUS = {"open": 200, "claimed": 200, "denied": 200, "superseded": 404, "expired": 410}


def _page(token, attempt, state, code=None, error=None, status=None):
    reg = attempt.registration if attempt else None
    return render_template(
        "claim/view.html", token=token, attempt=attempt, registration=reg, state=state, code=code,
        error=error, agent=claims.agent_description(reg, attempt) if reg else None,
        service_name=settings.get("service_name"),
        link_expires=iso(attempt.link_expires_at) if attempt else None,
    ), status or STATUS.get(state, 200)


PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}  # the URL carries the link token


@bp.get("/agent/auth/claim/view")
def view():
    token = request.args.get("token", "")
    if not token:
        return (*_page(token, None, "missing", status=400), PRIVATE)
    attempt = claims.attempt_by_link_token(token)
    if attempt is None:
        return (*_page(token, None, "unknown", status=404), PRIVATE)
    page = _page(token, attempt, claims.attempt_state(attempt))
    tx.commit()  # attempt_state() may have found the registration past its deadline and expired it
    return (*page, PRIVATE)


@bp.post("/agent/auth/claim/view")
def act():
    """The page's buttons: reveal a code (minted only here, never on GET) or refuse the claim."""
    token = request.form.get("token", "")
    attempt = claims.attempt_by_link_token(token)
    if attempt is None:
        return _page(token, None, "unknown" if token else "missing", status=404 if token else 400)
    action = request.form.get("action", "reveal")
    try:
        if action == "deny":
            claims.deny(token, ip=request.remote_addr, user_agent=printable(request.user_agent.string))
            tx.commit()
            return _page(token, attempt, "denied")
        answer = claims.mint_code(token, ip=request.remote_addr, user_agent=printable(request.user_agent.string))
        tx.commit()
    except ProtocolError as exc:
        tx.rollback()
        attempt = claims.attempt_by_link_token(token)
        state = claims.attempt_state(attempt)
        # an open attempt keeps the failure's status (e.g. 429); otherwise the page's own status, as on GET
        return _page(token, attempt, state, error=exc.message,
                     status=exc.status if state == "open" else STATUS.get(state, exc.status))
    resp = _page(token, attempt, "open", code=answer)
    return resp[0], resp[1], {"Cache-Control": "no-store"}
