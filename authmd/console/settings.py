"""Console settings room: the runtime settings (names, flows, lifetimes, code limits); authmd.settings writes
them with their audit row."""
from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import settings
from ..extensions import db
from .auth import admin_required
from .common import bp, who
from .forms import SettingsForm


@bp.route("/settings", methods=["GET", "POST"])
@admin_required
def settings_page():
    current = settings.all_settings()
    form = SettingsForm(data=current) if request.method == "GET" else SettingsForm()
    form.describe_lifetimes(current)
    if form.validate_on_submit():
        diff = settings.update(form.values(), actor_kind="admin", user_id=current_user.id, **who())
        db.session.commit()
        if diff:
            flash(f"Saved {len(diff)} change(s): {', '.join(sorted(diff))}.", "success")
        else:
            flash("Nothing changed.", "info")
        return redirect(url_for("admin.settings_page"))
    return render_template("console/settings.html", form=form), 400 if request.method == "POST" else 200
