"""Console confirmation room: the one confirm-then-revoke page, for the console's every kind and the portal's."""
from flask import flash, redirect, render_template, request

from ..extensions import db
from .forms import ButtonForm


def confirm_then_revoke(*, revoke, count, title: str, message: str, action: str, back: str, done: str,
                        hidden: dict | None = None, extra=None):
    """GET: what goes and how many live credentials (count(), and extra(): how many registrations, when given).
    POST with a valid CSRF token: revoke() in this request's transaction, one commit, done.format(n=…) flashed,
    then back (a path the caller has checked)."""
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        n = revoke()
        db.session.commit()
        flash(done.format(n=n), "success")
        return redirect(back)
    return render_template("console/confirm.html", form=form, title=title, message=message, count=count(),
                           count_label="live credential(s) will stop working",
                           extra=extra() if extra else None, hidden=hidden or {}, action=action,
                           button="Revoke", back=back)
