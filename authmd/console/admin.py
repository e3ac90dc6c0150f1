"""Console admin room: the trusted-issuer pages, until they move to their own room. The `admin` blueprint and
its helpers live in .common; every other page of /console/ is in its feature's module (dashboard, authdoc,
scopes, registrations, delegations, users, audit, settings, outbox), all registered on that one blueprint."""
from flask import abort, flash, redirect, render_template, request, url_for

from .. import audit, revocation
from ..extensions import db
from ..models import TrustedIssuer
from ..util import utcnow
from .auth import admin_required
from .common import _confirm_form_ok, actor, bp  # noqa: F401 - bp is the admin blueprint, also reached from here
from .forms import ButtonForm, IssuerForm


# --- trusted issuers ---------------------------------------------------------------------------------
def _issuer_fields(form: IssuerForm) -> dict:
    return {"issuer": form.issuer.data.rstrip("/") if form.issuer.data.count("/") > 2 else form.issuer.data,
            "name": (form.name.data or "").strip(), "jwks_uri": form.jwks_uri.data or None,
            "algorithms": form.algorithms.data, "scopes": form.scopes.data or None,
            "require_amr": (form.require_amr.data or "").strip() or None,
            "allowed_client_ids": " ".join((form.allowed_client_ids.data or "").split()) or None,
            "allow_private_jwks": bool(form.allow_private_jwks.data), "enabled": bool(form.enabled.data)}


@bp.get("/issuers")
@admin_required
def issuers():
    rows = list(db.session.execute(db.select(TrustedIssuer).order_by(TrustedIssuer.issuer)).scalars())
    return render_template("console/issuers.html", rows=rows, form=ButtonForm())


@bp.route("/issuers/new", methods=["GET", "POST"])
@bp.route("/issuers/<int:issuer_id>/edit", methods=["GET", "POST"])
@admin_required
def issuer_edit(issuer_id=None):
    row = db.session.get(TrustedIssuer, issuer_id) or abort(404) if issuer_id else None
    form = IssuerForm(obj=row) if request.method == "GET" and row else IssuerForm()
    status = 200
    if form.validate_on_submit():
        fields = _issuer_fields(form)
        clash = db.session.execute(db.select(TrustedIssuer.id).where(
            TrustedIssuer.issuer == fields["issuer"], TrustedIssuer.id != (row.id if row else -1))).first()
        if clash:
            form.issuer.errors.append("This issuer is already in the list.")
            status = 400
        else:
            if row is None:
                row = TrustedIssuer(created_at=utcnow(), **fields)
                db.session.add(row)
                event = "issuer.added"
                changes = {k: v for k, v in fields.items()}
            else:
                changes = {k: [getattr(row, k), v] for k, v in fields.items() if getattr(row, k) != v}
                for k, v in fields.items():
                    setattr(row, k, v)
                event = "issuer.updated"
            db.session.flush()
            audit.record(event, "admin", actor_id=actor(), iss=row.issuer, issuer_id=row.id, changes=changes)
            db.session.commit()
            flash(f"Saved {row.issuer}.", "success")
            return redirect(url_for("admin.issuers"))
    elif request.method == "POST":
        status = 400
    return render_template("console/issuer_form.html", form=form, row=row), status


@bp.post("/issuers/<int:issuer_id>/toggle")
@admin_required
def issuer_toggle(issuer_id):
    row = db.session.get(TrustedIssuer, issuer_id) or abort(404)
    if not _confirm_form_ok():
        abort(400)
    row.enabled = not row.enabled
    audit.record("issuer.enabled" if row.enabled else "issuer.disabled", "admin", actor_id=actor(),
                 iss=row.issuer, issuer_id=row.id)
    db.session.commit()
    flash(f"{row.issuer} is now {'enabled' if row.enabled else 'disabled'}.", "success")
    return redirect(url_for("admin.issuers"))


@bp.route("/issuers/<int:issuer_id>/remove", methods=["GET", "POST"])
@admin_required
def issuer_remove(issuer_id):
    row = db.session.get(TrustedIssuer, issuer_id) or abort(404)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        iss = row.issuer
        db.session.delete(row)
        audit.record("issuer.removed", "admin", actor_id=actor(), iss=iss, issuer_id=issuer_id)
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
    row = db.session.get(TrustedIssuer, issuer_id) or abort(404)
    if not _confirm_form_ok():
        abort(400)
    from ..trust import test_issuer
    outcome = test_issuer(row)
    db.session.rollback()
    rows = list(db.session.execute(db.select(TrustedIssuer).order_by(TrustedIssuer.issuer)).scalars())
    return render_template("console/issuers.html", rows=rows, form=ButtonForm(), tested=row.id,
                           test_keys=outcome["keys"] if outcome["ok"] else None, test_error=outcome["error"])
