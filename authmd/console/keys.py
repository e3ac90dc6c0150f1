"""Console signing keys room: the service's own signing keys (authmd.keys) and their rotation, the one
keys.rotate() that `flask --app app keys rotate` runs too, behind a confirmation page."""
from flask import current_app, flash, redirect, render_template, request, url_for

from .. import keys, settings
from ..extensions import db
from ..util import utcnow
from .auth import admin_required
from .common import bp, who
from .forms import ButtonForm


def _overlap_seconds() -> int:
    """How long a retired key stays published: what keys.rotate() sets (an assertion's lifetime, plus skew)."""
    return int(settings.get("assertion_ttl")) + int(current_app.config.get("CLOCK_SKEW", 60))


@bp.get("/keys")
@admin_required
def keys_page():
    return render_template("console/keys.html", keys=keys.list_keys(), now=utcnow(), overlap=_overlap_seconds())


@bp.route("/keys/rotate", methods=["GET", "POST"])
@admin_required
def keys_rotate():
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        new, retired = keys.rotate(actor_kind="admin", **who())
        db.session.commit()
        flash(f"Key {new.kid} signs from now on. "
              + (f"{len(retired)} earlier key(s) stay published until the tokens they signed have expired."
                 if retired else "There was no earlier key."), "success")
        return redirect(url_for("admin.keys_page"))
    return render_template("console/confirm.html", form=form, title="Rotate the signing key?",
                           message="A new key signs every identity assertion from now on. The current key retires: "
                                   "it stays in /.well-known/jwks.json, and assertions it signed stay valid, until "
                                   "the last of them has expired (the assertion lifetime plus clock skew). Agents "
                                   "notice nothing.",
                           action=url_for("admin.keys_rotate"), button="Rotate", back=url_for("admin.keys_page"))
