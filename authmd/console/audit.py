"""Console audit room: the audit log filtered, a page at a time, and its export as CSV or JSON Lines."""
from flask import Response, abort, render_template, request, stream_with_context

from .. import queries
from ..util import utcnow
from .auth import admin_required
from .common import bp, choice_arg, date_arg, int_arg, next_page, text_arg


def _filters(args, errors: dict) -> dict:
    """The query string's filters as authmd.queries.audit_statement takes them; errors beside their fields."""
    user = text_arg(args, "user")
    if user and not user.isdigit():
        errors["user"] = "A user id is a number."
    return {"event": text_arg(args, "event"), "actor": text_arg(args, "actor"),
            "registration": text_arg(args, "registration"), "user_id": int(user) if user.isdigit() else None,
            "issuer": text_arg(args, "issuer"),
            "protocol": choice_arg(args, "protocol", queries.AUDIT_PROTOCOLS, errors,
                                   "Choose v0.1, latest, or none (the console's and operators' own events)."),
            "since": date_arg(args, "from", errors),
            "until": date_arg(args, "to", errors, end=True)}


@bp.get("/audit")
@admin_required
def audit_log():
    args, errors = request.args, {}
    filters = _filters(args, errors)
    rows, before = ([], None) if errors else queries.audit_events(before=int_arg(args, "before"), **filters)
    shown = {k: v for k, v in args.items() if v and k != "before"}
    return render_template("console/audit.html", rows=rows, next_args=next_page(args, "before", before), args=args,
                           errors=errors, filters=shown, protocols=queries.AUDIT_PROTOCOLS), 400 if errors else 200


@bp.get("/audit/export.<any(csv, jsonl):fmt>")
@admin_required
def audit_export(fmt):
    errors = {}
    filters = _filters(request.args, errors)
    if errors:
        abort(400)
    gen, mimetype = ((queries.export_csv, "text/csv") if fmt == "csv" else
                     (queries.export_jsonl, "application/x-ndjson"))
    resp = Response(stream_with_context(gen(**filters)), mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="authmd-audit-{utcnow():%Y%m%dT%H%M%SZ}.{fmt}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp
