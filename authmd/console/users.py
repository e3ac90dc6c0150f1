"""Console users room: find users, one user's agents and delegations, and disable / enable / promote / demote
(authmd.users does the change and its audit row)."""
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import queries, revocation, users as users_room
from ..extensions import db
from ..models import User
from ..users import email_lookup
from .auth import admin_required
from .common import bp, int_arg, next_page, run, text_arg, who
from .forms import ButtonForm

ACTIONS = {"disable": users_room.disable, "enable": users_room.enable, "promote": users_room.promote,
           "demote": users_room.demote}
# action → (title, what it does, whether the page counts the live credentials that stop)
TEXTS = {
    "disable": ("Disable {}?", "Every credential of this user stops working at once, and the user can no longer "
                               "sign in. You can enable the account again later.", True),
    "enable": ("Enable {}?", "Credentials that were not revoked work again.", False),
    "promote": ("Make {} an admin?", "Admins can change every setting and revoke any agent. They sign in with a "
                                     "password set by `flask create-admin`.", False),
    "demote": ("Remove admin rights from {}?", "The account stays; only the console closes to it.", False),
}


@bp.get("/users")
@admin_required
def users():
    args = request.args
    rows, before = queries.users(email_prefix=email_lookup(text_arg(args, "q")),
                                 admins_only=bool(args.get("admins")),
                                 before=int_arg(args, "before"))
    return render_template("console/users.html", rows=rows, next_args=next_page(args, "before", before), args=args)


@bp.get("/users/<int:user_id>")
@admin_required
def user(user_id):
    detail = queries.user_detail(user_id) or abort(404)
    return render_template("console/user.html", **detail, form=ButtonForm())


@bp.route("/users/<int:user_id>/<any(disable, enable, promote, demote):action>", methods=["GET", "POST"])
@admin_required
def user_action(user_id, action):
    row = db.session.get(User, user_id) or abort(404)
    back = url_for("admin.user", user_id=user_id)
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        _, refused = run(ACTIONS[action], user_id, by_user_id=current_user.id, **who())
        if not refused:
            flash(f"User {row.email}: {action} done.", "success")
            return redirect(back)
        refused = refused.message
    else:  # the page asks only what may be done
        refused = users_room.account_change_refused(action, row.id, current_user.id)
    if refused:
        flash(refused, "error")
        return redirect(back)
    title, message, counted = TEXTS[action]
    return render_template("console/confirm.html", form=form, title=title.format(row.email), message=message,
                           count=revocation.count_user(row.id) if counted else None,
                           count_label="live credential(s) will stop working",
                           action=url_for("admin.user_action", user_id=row.id, action=action),
                           button=action.capitalize(), back=back)
