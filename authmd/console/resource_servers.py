"""Console resource-servers room: /console/resource-servers, the APIs that may introspect credentials
(list, add and rotate with the secret shown once, disable/enable, remove). Domain work: authmd.resource_servers."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from .. import resource_servers as rs
from .. import settings
from ..extensions import db
from ..models import ResourceServer
from .auth import admin_required
from .forms import ButtonForm

bp = Blueprint("resource_servers", __name__, url_prefix="/console/resource-servers")


class ResourceServerForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Name the API, e.g. Billing API."), Length(max=100)],
                       description=f"How this list names the API: {rs.NAME_RULE}.")


@bp.context_processor
def _ctx():
    return {"service_name": settings.get("service_name"), "layout": "console/layout.html",
            "logout_form": ButtonForm()}


def _actor() -> dict:
    return {"actor_id": current_user.email or str(current_user.id), "user_id": current_user.id}


def _row(server_id: int) -> ResourceServer:
    return db.session.get(ResourceServer, server_id) or abort(404)


def _list(form, status=200):
    return render_template("console/resource_servers.html", rows=rs.all_servers(), form=form,
                           button=ButtonForm()), status


def _secret_page(row, secret: str, title: str):
    # the only page that ever shows this secret: no browser or proxy may keep it
    resp = render_template("console/resource_server_secret.html", row=row, secret=secret, title=title)
    return resp, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"}


@bp.route("/", methods=["GET", "POST"])
@admin_required
def index():
    form = ResourceServerForm()
    if request.method == "GET":
        return _list(form)
    if not form.validate_on_submit():
        return _list(form, 400)
    try:
        row, secret = rs.add(form.name.data, **_actor())
    except rs.Invalid as exc:
        form.name.errors.append(str(exc))
        return _list(form, 400)
    db.session.commit()
    return _secret_page(row, secret, f"Added {row.name}")


@bp.route("/<int:server_id>/rotate", methods=["GET", "POST"])
@admin_required
def rotate(server_id):
    row = _row(server_id)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        secret = rs.rotate(row, **_actor())
        db.session.commit()
        return _secret_page(row, secret, f"New secret for {row.name}")
    return render_template("console/confirm.html", form=form, title=f"Rotate the secret of {row.name}?",
                           message="A new secret is made and shown once. The current secret stops working "
                                   "within a second: update the API's configuration right after.",
                           action=url_for("resource_servers.rotate", server_id=row.id), button="Rotate secret",
                           back=url_for("resource_servers.index")), 200 if request.method == "GET" else 400


@bp.post("/<int:server_id>/toggle")
@admin_required
def toggle(server_id):
    row = _row(server_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    rs.set_enabled(row, not row.enabled, **_actor())
    db.session.commit()
    flash(f"{row.name} is now {'enabled' if row.enabled else 'disabled'}.", "success")
    return redirect(url_for("resource_servers.index"))


@bp.route("/<int:server_id>/remove", methods=["GET", "POST"])
@admin_required
def remove(server_id):
    row = _row(server_id)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        name = row.name
        rs.remove(row, **_actor())
        db.session.commit()
        flash(f"Removed {name}. Its client_id and secret no longer work.", "success")
        return redirect(url_for("resource_servers.index"))
    return render_template("console/confirm.html", form=form, title=f"Remove {row.name}?",
                           message="Its client_id and secret stop working within a second; the API can no "
                                   "longer check credentials with them. This cannot be undone (disable it "
                                   "instead to pause it).",
                           action=url_for("resource_servers.remove", server_id=row.id), button="Remove",
                           back=url_for("resource_servers.index")), 200 if request.method == "GET" else 400
