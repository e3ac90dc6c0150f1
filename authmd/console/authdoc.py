"""Console auth.md room: the template editor with its preview and drift warnings, publishing, history, diffs
and rollback."""
import json

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import authdoc
from ..extensions import db
from ..models import AuthDocVersion, User
from . import docs
from .auth import admin_required
from .common import _confirm_form_ok, bp, run, who
from .forms import AuthDocForm, ButtonForm


def _placeholders() -> list[tuple[str, str]]:
    out = []
    for key, value in authdoc.context().items():
        shown = json.dumps(value, default=str) if not isinstance(value, str) else value
        out.append((key, shown if len(shown) <= 80 else shown[:77] + "…"))
    return out


def _preview(text: str) -> tuple[str | None, list[str], str | None]:
    """(sanitized HTML, drift warnings, None) or (None, [], why the text does not render)."""
    rendered, error = docs.render_text(text)
    if error:
        return None, [], error
    return docs.to_html(rendered), docs.drift(rendered), None


@bp.route("/authmd", methods=["GET", "POST"])
@admin_required
def authmd():
    form = AuthDocForm()
    preview_html, drift, status = None, [], 200
    if request.method == "GET":
        form.body.data = authdoc.current_template()
        preview_html, drift, _ = _preview(form.body.data)
    elif not form.validate_on_submit():
        status = 400
    elif request.form.get("action", "preview") != "publish":
        preview_html, drift, error = _preview(form.body.data)
        if error:
            form.body.errors.append(error)
            status = 400
    else:
        row, refused = run(authdoc.publish, form.body.data, form.note.data, user_id=current_user.id, **who())
        if not refused:
            flash(f"Published version {row.id}. /auth.md serves it now.", "success")
            return redirect(url_for("admin.authmd"))
        form.body.errors.append(refused.message)
        status = 400
    versions = list(db.session.execute(db.select(AuthDocVersion).order_by(AuthDocVersion.id.desc())
                                       .limit(10)).scalars())
    return render_template("console/authmd.html", form=form, preview_html=preview_html, drift=drift,
                           placeholders=_placeholders(), versions=versions), status


@bp.post("/authmd/preview")
@admin_required
def authmd_preview():
    """The live preview's fetch: an HTML fragment (sanitized by nh3), CSRF-checked like every POST."""
    form = AuthDocForm()
    if not form.validate_on_submit():
        return render_template("console/_preview.html", error="; ".join(form.body.errors) or "Invalid form.",
                               preview_html=None, drift=[]), 400
    preview_html, drift, error = _preview(form.body.data)
    return render_template("console/_preview.html", error=error, preview_html=preview_html, drift=drift)


@bp.get("/authmd/history")
@admin_required
def authmd_history():
    versions = list(db.session.execute(db.select(AuthDocVersion, User.email)
                                       .outerjoin(User, User.id == AuthDocVersion.created_by)
                                       .order_by(AuthDocVersion.id.desc()).limit(200)).all())
    return render_template("console/authmd_history.html", versions=versions,
                           current=versions[0][0].id if versions else None, form=ButtonForm())


@bp.get("/authmd/versions/<int:version_id>")
@admin_required
def authmd_version(version_id):
    row = db.session.get(AuthDocVersion, version_id) or abort(404)
    prev = db.session.execute(db.select(AuthDocVersion).where(AuthDocVersion.id < version_id)
                              .order_by(AuthDocVersion.id.desc()).limit(1)).scalar()
    old = prev.body if prev else authdoc.default_template()
    lines = docs.diff_lines(old, row.body, f"version {prev.id}" if prev else "built-in default",
                            f"version {row.id}")
    return render_template("console/authmd_version.html", row=row, prev=prev, lines=lines, form=ButtonForm())


@bp.post("/authmd/versions/<int:version_id>/rollback")
@admin_required
def authmd_rollback(version_id):
    if not _confirm_form_ok():
        abort(400)
    new, refused = run(authdoc.rollback, version_id, user_id=current_user.id, **who())
    if refused:
        if refused.status == 404:
            abort(404)
        flash(refused.message, "error")
        return redirect(url_for("admin.authmd_history"))
    flash(f"Version {version_id} is published again as version {new.id}.", "success")
    return redirect(url_for("admin.authmd_history"))
