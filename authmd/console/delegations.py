"""Console delegations room: every (iss, sub, aud) an issuer vouched for, with its user; revoke goes through
the registrations room's confirmation page."""
from flask import render_template, request

from .. import queries
from .auth import admin_required
from .common import bp, int_arg, next_page, text_arg


@bp.get("/delegations")
@admin_required
def delegations():
    args = request.args
    rows, before = queries.delegations(issuer=text_arg(args, "issuer"), user_id=int_arg(args, "user"),
                                       before=int_arg(args, "before"))
    return render_template("console/delegations.html", rows=rows, next_args=next_page(args, "before", before),
                           args=args)
