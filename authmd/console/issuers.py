"""Console issuers room: the trusted-issuer pages of /console/ (list, add and edit, enable or disable,
remove, test the JWKS). The views sit on the admin blueprint, so their endpoints stay admin.issuer*;
every rule and audit row is the trust room's (authmd.trust.issuers), shared with `flask issuers`."""
from flask import abort, flash, redirect, render_template, request, url_for

from .. import revocation, tx
from ..extensions import db
from ..models import TrustedIssuer
from ..trust import issuers as trust_list
from ..trust.jwks import probe_jwks
from .common import actor, bp
from .auth import admin_required
from .forms import ButtonForm, IssuerForm

PARSED = ("name", "algorithms", "scopes", "require_amr", "allowed_client_ids", "allow_private_jwks", "enabled")


def _row(issuer_id: int) -> TrustedIssuer:
    return db.session.get(TrustedIssuer, issuer_id) or abort(404)


def _pressed(issuer_id: int) -> TrustedIssuer:
    """The row a button (a form that is only its CSRF token) was pressed for."""
    row = _row(issuer_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    return row


def _who() -> dict:
    return {"ip": request.remote_addr, "user_agent": request.user_agent.string}


def _fields(form: IssuerForm) -> dict:
    """The form's values as trust_list.add / update take them."""
    return {"issuer": (form.issuer.data or "").strip(), "jwks_uri": (form.jwks_uri.data or "").strip() or None,
            **{k: form[k].data for k in PARSED}}


def _list_page(**extra):
    return render_template("console/issuers.html", rows=trust_list.list_all(), form=ButtonForm(), **extra)


@bp.get("/issuers")
@admin_required
def issuers():
    return _list_page()


@bp.route("/issuers/new", methods=["GET", "POST"])
@bp.route("/issuers/<int:issuer_id>/edit", methods=["GET", "POST"])
@admin_required
def issuer_edit(issuer_id=None):
    row = _row(issuer_id) if issuer_id else None
    form = IssuerForm(obj=row) if request.method == "GET" and row else IssuerForm()
    if request.method == "GET":
        return render_template("console/issuer_form.html", form=form, row=row)
    if form.validate_on_submit():
        try:
            if row is None:
                saved = trust_list.add(actor=actor(), **_who(), **_fields(form))
            else:
                saved = trust_list.update(row, actor=actor(), **_who(), **_fields(form))
        except trust_list.IssuerError as exc:
            tx.rollback()
            for name, message in exc.errors.items():
                form[name].errors.append(message)
        else:
            db.session.commit()
            flash(f"Saved {saved.issuer}.", "success")
            return redirect(url_for("admin.issuers"))
    return render_template("console/issuer_form.html", form=form, row=row), 400


@bp.post("/issuers/<int:issuer_id>/toggle")
@admin_required
def issuer_toggle(issuer_id):
    row = _pressed(issuer_id)
    trust_list.set_enabled(row, not row.enabled, actor=actor(), **_who())
    db.session.commit()
    flash(f"{row.issuer} is now {'enabled' if row.enabled else 'disabled'}.", "success")
    return redirect(url_for("admin.issuers"))


@bp.route("/issuers/<int:issuer_id>/remove", methods=["GET", "POST"])
@admin_required
def issuer_remove(issuer_id):
    row = _row(issuer_id)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        iss = trust_list.remove(row, actor=actor(), **_who())
        db.session.commit()
        flash(f"Removed {iss}. Credentials it vouched for keep working until revoked.", "success")
        return redirect(url_for("admin.issuers"))
    return render_template("console/confirm.html", form=form, title=f"Remove {row.issuer}?",
                           message="Agents can no longer register with ID-JAGs from this issuer. Credentials "
                                   "already issued keep working; revoke them separately if needed.",
                           count=revocation.count_issuer(row.issuer), count_label="live credentials it vouched for",
                           action=url_for("admin.issuer_remove", issuer_id=row.id), button="Remove issuer",
                           back=url_for("admin.issuers"))


@bp.post("/issuers/<int:issuer_id>/test")
@admin_required
def issuer_test(issuer_id):
    row = _pressed(issuer_id)
    outcome = probe_jwks(row)
    db.session.rollback()  # nothing to keep: end the read transaction the fetch was waited for in
    return _list_page(tested=row.id, test_keys=outcome["keys"] if outcome["ok"] else None,
                      test_error=outcome["error"])
