"""Console scopes room: list, add, edit and delete-or-disable the scopes this service grants (authmd.scopes
does the work, as it does for `flask scopes`)."""
from flask import abort, flash, redirect, render_template, request, url_for

from .. import scopes
from ..extensions import db
from ..models import Scope
from .auth import admin_required
from .common import bp, run, who
from .forms import ButtonForm, ScopeForm


def _flags(form: ScopeForm) -> dict:
    return {"description": form.description.data or "", "position": form.position.data or 0,
            "pre_claim": bool(form.pre_claim.data), "post_claim": bool(form.post_claim.data),
            "enabled": bool(form.enabled.data)}


@bp.route("/scopes", methods=["GET", "POST"], endpoint="scopes")
@admin_required
def scopes_page():
    form = ScopeForm()
    status = 200
    if request.method == "GET":
        form.position.data = scopes.next_position()
    elif form.validate_on_submit():
        row, refused = run(scopes.add, form.name.data, **_flags(form), **who())
        if not refused:
            flash(f"Added scope {row.name}.", "success")
            return redirect(url_for("admin.scopes"))
        form.name.errors.append(refused.message)
        status = 400
    else:
        status = 400
    rows = list(db.session.execute(db.select(Scope).order_by(Scope.position, Scope.name)).scalars())
    return render_template("console/scopes.html", rows=rows, form=form), status


@bp.route("/scopes/<int:scope_id>/edit", methods=["GET", "POST"])
@admin_required
def scope_edit(scope_id):
    row = db.session.get(Scope, scope_id) or abort(404)
    form = ScopeForm(obj=row) if request.method == "GET" else ScopeForm()
    status = 200
    if request.method == "POST":
        form.name.data = row.name  # a scope's name is its identity in issued credentials: never renamed
        if form.validate_on_submit():
            scopes.update(row, **_flags(form), **who())
            db.session.commit()
            flash(f"Saved scope {row.name}.", "success")
            return redirect(url_for("admin.scopes"))
        status = 400
    return render_template("console/scope_form.html", form=form, row=row, in_use=scopes.in_use(row.name)), status


@bp.route("/scopes/<int:scope_id>/delete", methods=["GET", "POST"])
@admin_required
def scope_delete(scope_id):
    row = db.session.get(Scope, scope_id) or abort(404)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        name = row.name
        outcome = scopes.remove(row, **who())
        db.session.commit()
        if outcome == "disabled":
            flash(f"{name} is held by live credentials: disabled instead of deleted.", "success")
            return redirect(url_for("admin.scope_edit", scope_id=scope_id))
        flash(f"Deleted scope {name}.", "success")
        return redirect(url_for("admin.scopes"))
    back = url_for("admin.scopes")
    if not scopes.in_use(row.name):
        return render_template("console/confirm.html", form=form, title=f"Delete scope {row.name}?",
                               message="No live credential holds it. It disappears from the metadata and auth.md.",
                               action=url_for("admin.scope_delete", scope_id=row.id), button="Delete scope",
                               back=back)
    if not row.enabled:
        return render_template("console/confirm.html", form=None, title=f"{row.name} cannot be deleted",
                               message="Live credentials hold this scope. It is disabled already: no longer "
                                       "granted or advertised.", back=back), 409
    return render_template("console/confirm.html", form=form, title=f"{row.name} cannot be deleted",
                           message="Live credentials hold this scope. Disable it instead: it is then no longer "
                                   "granted or advertised; the credentials that hold it keep it until they end.",
                           action=url_for("admin.scope_delete", scope_id=row.id), button="Disable scope",
                           back=back), 409
