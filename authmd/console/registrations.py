"""Console registrations room: the filtered list, one registration's detail, and the one revoke confirmation
page for every kind (a credential, a registration, a delegation, all of a user's, all of an issuer's)."""
from flask import abort, redirect, render_template, request, url_for

from .. import queries, revocation
from ..users import email_lookup
from ..util import utcnow
from .auth import admin_required
from .common import bp, choice_arg, cursor_arg, date_arg, text_arg, who
from .confirm import confirm_then_revoke
from .redirects import safe_target


@bp.get("/registrations")
@admin_required
def registrations():
    args, errors = request.args, {}
    q = text_arg(args, "q")
    if q:
        if queries.registration_exists(q):
            return redirect(url_for("admin.registration", registration_id=q))
        errors["q"] = "No registration has this id."
    cursor = cursor_arg(args.get("after"))
    rows, after = queries.registrations(
        flow=choice_arg(args, "flow", queries.FLOWS, errors, "Choose a flow from the list."),
        status=choice_arg(args, "status", queries.STATUSES, errors, "Choose a status from the list."),
        email=email_lookup(text_arg(args, "email")), issuer=text_arg(args, "issuer"),
        protocol=choice_arg(args, "protocol", queries.PROTOCOLS, errors, "Choose v0.1 or latest."),
        since=date_arg(args, "from", errors), until=date_arg(args, "to", errors, end=True), after=cursor)
    filters = {k: v for k, v in args.items() if k != "after" and v}
    return render_template("console/registrations.html", rows=rows, errors=errors, args=args,
                           flows=queries.FLOWS, statuses=queries.STATUSES, protocols=queries.PROTOCOLS,
                           flow_label=queries.flow_label, first_page=not cursor,
                           next_args={**filters, "after": after} if after else None, newest_args=filters)


@bp.get("/registrations/<registration_id>")
@admin_required
def registration(registration_id):
    detail = queries.registration_detail(registration_id) or abort(404)
    now = utcnow()
    return render_template("console/registration.html", **detail, now=now, live=lambda c: queries.is_live(c, now),
                           flow_label=queries.flow_label, refresh_state=lambda t: queries.refresh_state(t, now),
                           attempt_state=lambda a: queries.attempt_state(a, now))


# kind → (target type, count, revoke, what the title calls it, how many registrations it ends, if it says)
REVOKE_KINDS = {
    "credential": (int, revocation.count_credential, revocation.revoke_credential, "this credential", None),
    "registration": (str, revocation.count_registration, revocation.revoke_registration, "registration {}", None),
    "delegation": (int, revocation.count_delegation, revocation.revoke_delegation, "delegation #{}", None),
    "user": (int, revocation.count_user, revocation.revoke_user, "every agent of user #{}",
             revocation.count_registrations_of_user),
    "issuer": (str, revocation.count_issuer, revocation.revoke_issuer, "everything issuer {} vouched for",
               revocation.count_registrations_of_issuer),
}


@bp.route("/revoke", methods=["GET", "POST"])
@admin_required
def revoke():
    kind, raw = request.values.get("kind", ""), request.values.get("target", "")
    if kind not in REVOKE_KINDS or not raw:
        abort(404)
    cast, count, do, label, registrations_of = REVOKE_KINDS[kind]
    try:
        target = cast(raw)
    except ValueError:
        abort(404)
    back = safe_target(request.values.get("back"), url_for("admin.registrations"))
    return confirm_then_revoke(
        revoke=lambda: do(target, actor_kind="admin", **who()), count=lambda: count(target),
        extra=(lambda: registrations_of(target)) if registrations_of else None,
        title=f"Revoke {label.format(raw)}?", message="This cannot be undone. The agent must register again.",
        action=url_for("admin.revoke"), back=back, hidden={"kind": kind, "target": raw, "back": back},
        done="Revoked {n} credential(s). Their next API call answers 401.")
