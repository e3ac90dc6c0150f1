"""Console outbox room: mail held when no mail server is configured (it holds one-time links: a mailbox)."""
from flask import Response, abort, current_app, render_template, request

from .. import queries
from ..extensions import db
from ..models import OutboxMail
from ..users import email_lookup
from .auth import admin_required
from .common import bp, int_arg, next_page, text_arg


@bp.get("/outbox")
@admin_required
def outbox():
    to = email_lookup(text_arg(request.args, "to"))
    rows, before = queries.outbox(to=to, before=int_arg(request.args, "before"))
    return render_template("console/outbox.html", rows=rows, to=to,
                           next_args=next_page({"to": to}, "before", before),
                           mail_configured=bool(current_app.config.get("MAIL_SERVER")))


@bp.get("/outbox/<int:message_id>")
@admin_required
def outbox_message(message_id):
    row = db.session.get(OutboxMail, message_id) or abort(404)
    resp = Response(render_template("console/outbox_message.html", row=row))
    resp.headers["Cache-Control"] = "no-store"
    return resp
