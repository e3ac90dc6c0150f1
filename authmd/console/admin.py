"""Console admin room: every page of /console/ (dashboard, auth.md, issuers, scopes, registrations,
delegations, users, audit, settings, outbox). Views are thin; domain work is in authmd.* modules."""
import csv
import io
import json
from datetime import date, datetime, timedelta

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user
from sqlalchemy import and_, or_

from .. import audit, authdoc, revocation, settings
from .. import scopes as scopes_room
from ..extensions import db
from ..models import (AuditEvent, AuthDocVersion, ClaimAttempt, Credential, Delegation, OutboxMail,
                      Registration, Scope, TrustedIssuer, User)
from ..users import email_lookup, end_sessions
from ..util import utcnow
from . import docs
from .auth import admin_required
from .forms import AuthDocForm, ButtonForm, ScopeForm, SettingsForm
from .redirects import safe_target

bp = Blueprint("admin", __name__, url_prefix="/console")
PAGE = 50
FLOWS = ("anonymous", "email-verification", "agent-provider")
STATUSES = ("pending", "claimed", "active", "expired", "revoked")
WEAK_KEYS = {"dev", "secret", "changeme", "change-me", "development", "test", "test-secret", "please-change-me"}
CHART_EVENTS = {"claim.confirmed": "Claims confirmed", "registration.revoked": "Revocations",
                "credential.revoked": "Revocations", "assertion.rejected": "Rejected assertions"}


@bp.context_processor
def _ctx():
    return {"service_name": settings.get("service_name"), "layout": "console/layout.html",
            "logout_form": ButtonForm()}


def actor() -> str:
    return current_user.email or str(current_user.id)


def _confirm_form_ok() -> bool:
    form = ButtonForm()
    return form.validate_on_submit()


# --- dashboard --------------------------------------------------------------------------------------
_DAILY_SQL = {}


def _daily_counts(table: str, column: str, values, starts) -> dict:
    """{value: {day: count}} from one statement of range counts, each an index-only count on
    (column, created_at): far cheaper than grouping by a date() expression over a month of rows.
    The statement text is built once per shape, so no per-request compile of 200 subqueries."""
    key = (table, column, len(values), len(starts))
    stmt = _DAILY_SQL.get(key)
    if stmt is None:
        parts, params = [], []
        for i in range(len(values)):
            for j in range(len(starts)):
                parts.append(f"(SELECT count(*) FROM {table} WHERE {column} = :v{i} "
                             f"AND created_at >= :d{j} AND created_at < :d{j + 1})")
        params = [db.bindparam(f"v{i}", type_=db.String) for i in range(len(values))]
        params += [db.bindparam(f"d{j}", type_=db.DateTime) for j in range(len(starts) + 1)]
        stmt = _DAILY_SQL[key] = db.text("SELECT " + ", ".join(parts)).bindparams(*params)
    bounds = list(starts) + [starts[-1] + timedelta(days=1)]
    args = {f"v{i}": v for i, v in enumerate(values)} | {f"d{j}": d for j, d in enumerate(bounds)}
    row = db.session.execute(stmt, args).one()
    out, k = {}, 0
    for v in values:
        out[v] = {}
        for d in starts:
            out[v][d.date().isoformat()] = row[k] or 0
            k += 1
    return out


def dashboard_data(now=None) -> dict:
    now = now or utcnow()
    today = now.date()
    starts = [datetime.combine(today - timedelta(days=29 - i), datetime.min.time()) for i in range(30)]
    days = [d.date().isoformat() for d in starts]
    series = _daily_counts("registrations", "type", FLOWS, starts)
    by_event = _daily_counts("audit_events", "event", list(CHART_EVENTS), starts)
    events = {label: dict.fromkeys(days, 0) for label in dict.fromkeys(CHART_EVENTS.values())}
    for ev, label in CHART_EVENTS.items():
        for d, n in by_event[ev].items():
            events[label][d] += n
    charts = [{"title": f"Registrations: {f}", "days": series[f]} for f in FLOWS]
    charts += [{"title": label, "days": values} for label, values in events.items()]
    for c in charts:
        c["total"] = sum(c["days"].values())
        c["max"] = max(c["days"].values()) or 1
    by_status = dict(db.session.execute(
        db.select(Registration.status, db.func.count()).group_by(Registration.status)).all())
    counts = {
        "registrations": sum(by_status.values()),
        "by_status": by_status,
        "users": db.session.execute(db.select(db.func.count(User.id))).scalar(),
        "live_credentials": revocation._count(),
        "issuers": db.session.execute(db.select(db.func.count(TrustedIssuer.id))
                                      .where(TrustedIssuer.enabled.is_(True))).scalar(),
        "pending_claims": db.session.execute(db.select(db.func.count(ClaimAttempt.id))
                                             .where(ClaimAttempt.status == "initiated")).scalar(),
    }
    return {"charts": charts, "counts": counts, "days": days}


def warnings() -> list[tuple[str, str | None]]:
    cfg = current_app.config
    out = []
    flows = authdoc.flows()
    if not flows["issuers"]:
        out.append(("No trusted issuer is enabled: agents cannot register with an ID-JAG.", "admin.issuers"))
    if not cfg.get("MAIL_SERVER"):
        out.append(("Mail is not configured (no MAIL_SERVER): claim and sign-in mail is held in the outbox.",
                    "admin.outbox"))
    if cfg.get("SECRET_KEY_GENERATED") or str(cfg.get("SECRET_KEY")) in WEAK_KEYS:
        out.append(("SECRET_KEY is generated or a well-known default: set AUTHMD_SECRET_KEY for production.", None))
    rendered, error = docs.render_text(authdoc.current_template())
    if error:
        out.append((f"The published auth.md does not render: {error}", "admin.authmd"))
    else:
        for w in docs.drift(rendered):
            out.append((f"auth.md drifts from the settings: {w}", "admin.authmd"))
    return out


@bp.get("/")
@admin_required
def dashboard():
    data = dashboard_data()
    recent = list(db.session.execute(db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(15)).scalars())
    return render_template("console/dashboard.html", **data, recent=recent, warnings=warnings())


# --- auth.md ------------------------------------------------------------------------------------------
@bp.route("/authmd", methods=["GET", "POST"])
@admin_required
def authmd():
    form = AuthDocForm()
    preview_html, drift_warnings, status = None, [], 200
    if request.method == "GET":
        form.body.data = authdoc.current_template()
    action = request.form.get("action", "preview")
    if form.validate_on_submit():
        rendered, error = docs.render_text(form.body.data)
        if error:
            form.body.errors.append(error)
            status = 400
        else:
            preview_html = docs.to_html(rendered)
            drift_warnings = docs.drift(rendered)
            if action == "publish":
                row = AuthDocVersion(body=form.body.data.replace("\r\n", "\n"), note=(form.note.data or "").strip(),
                                     created_at=utcnow(), created_by=current_user.id)
                db.session.add(row)
                db.session.flush()
                audit.record("authmd.published", "admin", actor_id=actor(), user_id=current_user.id,
                             version_id=row.id, note=row.note,
                             ip=request.remote_addr, user_agent=request.user_agent.string)
                db.session.commit()
                flash(f"Published version {row.id}. /auth.md serves it now.", "success")
                return redirect(url_for("admin.authmd"))
    elif request.method == "POST":
        status = 400
    else:
        rendered, error = docs.render_text(form.body.data)
        if rendered is not None:
            preview_html, drift_warnings = docs.to_html(rendered), docs.drift(rendered)
    versions = list(db.session.execute(db.select(AuthDocVersion).order_by(AuthDocVersion.id.desc())
                                       .limit(10)).scalars())
    return render_template("console/authmd.html", form=form, preview_html=preview_html, drift=drift_warnings,
                           placeholders=_placeholders(), versions=versions), status


def _placeholders() -> list[tuple[str, str]]:
    out = []
    for key, value in authdoc.context().items():
        shown = json.dumps(value, default=str) if not isinstance(value, str) else value
        out.append((key, shown if len(shown) <= 80 else shown[:77] + "…"))
    return out


@bp.post("/authmd/preview")
@admin_required
def authmd_preview():
    """The live preview's fetch: an HTML fragment (sanitized by nh3), CSRF-checked like every POST."""
    form = AuthDocForm()
    if not form.validate_on_submit():
        return render_template("console/_preview.html", error="; ".join(form.body.errors) or "Invalid form.",
                               preview_html=None, drift=[]), 400
    rendered, error = docs.render_text(form.body.data)
    if error:
        return render_template("console/_preview.html", error=error, preview_html=None, drift=[])
    return render_template("console/_preview.html", error=None, preview_html=docs.to_html(rendered),
                           drift=docs.drift(rendered))


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
    row = db.session.get(AuthDocVersion, version_id) or abort(404)
    if not _confirm_form_ok():
        abort(400)
    new = AuthDocVersion(body=row.body, note=f"Rollback to version {row.id}", created_at=utcnow(),
                         created_by=current_user.id)
    db.session.add(new)
    db.session.flush()
    audit.record("authmd.published", "admin", actor_id=actor(), user_id=current_user.id, version_id=new.id,
                 rollback_of=row.id, note=new.note, ip=request.remote_addr, user_agent=request.user_agent.string)
    db.session.commit()
    flash(f"Version {row.id} is published again as version {new.id}.", "success")
    return redirect(url_for("admin.authmd_history"))


# --- scopes -------------------------------------------------------------------------------------------
@bp.route("/scopes", methods=["GET", "POST"])
@admin_required
def scopes():
    form = ScopeForm()
    status = 200
    if request.method == "GET":
        form.position.data = (db.session.execute(db.select(db.func.max(Scope.position))).scalar() or 0) + 1
    elif form.validate_on_submit():
        if db.session.execute(db.select(Scope.id).where(Scope.name == form.name.data)).first():
            form.name.errors.append("A scope with this name exists.")
            status = 400
        else:
            row = Scope(name=form.name.data, description=(form.description.data or "").strip(),
                        position=form.position.data or 0, pre_claim=form.pre_claim.data,
                        post_claim=form.post_claim.data, enabled=form.enabled.data, created_at=utcnow())
            db.session.add(row)
            audit.record("scope.added", "admin", actor_id=actor(), scope=row.name, pre_claim=row.pre_claim,
                         post_claim=row.post_claim, ip=request.remote_addr, user_agent=request.user_agent.string)
            db.session.commit()
            flash(f"Added scope {row.name}.", "success")
            return redirect(url_for("admin.scopes"))
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
            fields = {"description": (form.description.data or "").strip(), "position": form.position.data or 0,
                      "pre_claim": bool(form.pre_claim.data), "post_claim": bool(form.post_claim.data),
                      "enabled": bool(form.enabled.data)}
            changes = {k: [getattr(row, k), v] for k, v in fields.items() if getattr(row, k) != v}
            for k, v in fields.items():
                setattr(row, k, v)
            event = ("scope.disabled" if changes.get("enabled") == [True, False] else
                     "scope.enabled" if changes.get("enabled") == [False, True] else "scope.updated")
            audit.record(event, "admin", actor_id=actor(), scope=row.name, changes=changes,
                         ip=request.remote_addr, user_agent=request.user_agent.string)
            db.session.commit()
            flash(f"Saved scope {row.name}.", "success")
            return redirect(url_for("admin.scopes"))
        status = 400
    return render_template("console/scope_form.html", form=form, row=row, in_use=scopes_room.in_use(row.name)), status


@bp.route("/scopes/<int:scope_id>/delete", methods=["GET", "POST"])
@admin_required
def scope_delete(scope_id):
    row = db.session.get(Scope, scope_id) or abort(404)
    form = ButtonForm()
    in_use = scopes_room.in_use(row.name)
    if request.method == "POST" and form.validate_on_submit():
        if in_use:
            flash(f"{row.name} is held by live credentials: it can only be disabled.", "error")
            return redirect(url_for("admin.scope_edit", scope_id=row.id))
        name = row.name
        db.session.delete(row)
        audit.record("scope.removed", "admin", actor_id=actor(), scope=name,
                     ip=request.remote_addr, user_agent=request.user_agent.string)
        db.session.commit()
        flash(f"Deleted scope {name}.", "success")
        return redirect(url_for("admin.scopes"))
    if in_use:
        return render_template("console/confirm.html", form=None, title=f"{row.name} cannot be deleted",
                               message="Live credentials hold this scope. Disable it instead: it is then no "
                                       "longer granted or advertised.", back=url_for("admin.scope_edit",
                                                                                    scope_id=row.id)), 409
    return render_template("console/confirm.html", form=form, title=f"Delete scope {row.name}?",
                           message="No live credential holds it. It disappears from the metadata and auth.md.",
                           action=url_for("admin.scope_delete", scope_id=row.id), button="Delete scope",
                           back=url_for("admin.scopes"))


# --- filters shared by lists ------------------------------------------------------------------------
def _date_arg(name: str, errors: dict, end=False):
    value = (request.args.get(name) or "").strip()
    if not value:
        return None
    try:
        d = date.fromisoformat(value)
    except ValueError:
        errors[name] = "Use the form YYYY-MM-DD."
        return None
    start = datetime.combine(d, datetime.min.time())
    return start + timedelta(days=1) if end else start


def _cursor(value: str | None):
    """'<iso time>~<id>' → (datetime, id) or None."""
    if not value or "~" not in value:
        return None
    t, _, i = value.partition("~")
    try:
        return datetime.fromisoformat(t), i
    except ValueError:
        return None


# --- registrations ------------------------------------------------------------------------------------
@bp.get("/registrations")
@admin_required
def registrations():
    args, errors = request.args, {}
    q = (args.get("q") or "").strip()
    if q:
        if db.session.get(Registration, q):
            return redirect(url_for("admin.registration", registration_id=q))
        errors["q"] = "No registration has this id."
    stmt = db.select(Registration, User.email).outerjoin(User, User.id == Registration.user_id)
    flow, status = args.get("flow") or "", args.get("status") or ""
    if flow:
        if flow not in FLOWS:
            errors["flow"] = "Choose a flow from the list."
        else:
            stmt = stmt.where(Registration.type == flow)
    if status:
        if status not in STATUSES:
            errors["status"] = "Choose a status from the list."
        else:
            stmt = stmt.where(Registration.status == status)
    email = email_lookup(args.get("email"))
    if email:
        stmt = stmt.where(Registration.email == email)
    iss = (args.get("issuer") or "").strip()
    if iss:
        stmt = stmt.where(Registration.iss == iss)
    since, until = _date_arg("from", errors), _date_arg("to", errors, end=True)
    if since:
        stmt = stmt.where(Registration.created_at >= since)
    if until:
        stmt = stmt.where(Registration.created_at < until)
    cur = _cursor(args.get("after"))
    if cur:
        stmt = stmt.where(or_(Registration.created_at < cur[0],
                              and_(Registration.created_at == cur[0], Registration.id < cur[1])))
    rows = list(db.session.execute(stmt.order_by(Registration.created_at.desc(), Registration.id.desc())
                                   .limit(PAGE + 1)).all())
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    next_args = None
    if more:
        last = rows[-1][0]
        next_args = {k: v for k, v in args.items() if k != "after" and v}
        next_args["after"] = f"{last.created_at.isoformat()}~{last.id}"
    return render_template("console/registrations.html", rows=rows, next_args=next_args, errors=errors,
                           flows=FLOWS, statuses=STATUSES, args=args, first_page=not cur,
                           newest_args={k: v for k, v in args.items() if k != "after" and v})


@bp.get("/registrations/<registration_id>")
@admin_required
def registration(registration_id):
    reg = db.session.get(Registration, registration_id) or abort(404)
    creds = list(db.session.execute(db.select(Credential).where(Credential.registration_id == reg.id)
                                    .order_by(Credential.id)).scalars())
    delegation = db.session.get(Delegation, reg.delegation_id) if reg.delegation_id else None
    attempts = list(db.session.execute(db.select(ClaimAttempt).where(ClaimAttempt.registration_id == reg.id)
                                       .order_by(ClaimAttempt.created_at)).scalars())
    events = list(db.session.execute(db.select(AuditEvent).where(AuditEvent.registration_id == reg.id)
                                     .order_by(AuditEvent.id).limit(500)).scalars())
    now = utcnow()
    return render_template("console/registration.html", reg=reg, creds=creds, delegation=delegation,
                           attempts=attempts, events=events, now=now,
                           live=lambda c: c.revoked_at is None and (c.expires_at is None or c.expires_at > now))


# --- revocation (one confirmation page for every kind) -------------------------------------------
REVOKE_KINDS = {
    "credential": (int, revocation.count_credential, revocation.revoke_credential, "this credential"),
    "registration": (str, revocation.count_registration, revocation.revoke_registration, "registration {}"),
    "delegation": (int, revocation.count_delegation, revocation.revoke_delegation, "delegation #{}"),
    "user": (int, revocation.count_user, revocation.revoke_user, "every agent of user #{}"),
    "issuer": (str, revocation.count_issuer, revocation.revoke_issuer, "everything issuer {} vouched for"),
}


@bp.route("/revoke", methods=["GET", "POST"])
@admin_required
def revoke():
    kind, raw = request.values.get("kind", ""), request.values.get("target", "")
    if kind not in REVOKE_KINDS or not raw:
        abort(404)
    cast, count, do, label = REVOKE_KINDS[kind]
    try:
        target = cast(raw)
    except ValueError:
        abort(404)
    back = safe_target(request.values.get("back"), url_for("admin.registrations"))
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        n = do(target, actor_kind="admin", actor_id=actor(), ip=request.remote_addr,
               user_agent=request.user_agent.string)
        db.session.commit()
        flash(f"Revoked {n} credential(s). Their next API call answers 401.", "success")
        return redirect(back)
    n = count(target)
    extra = None
    if kind == "user":
        extra = revocation.count_registrations_of_user(target)
    elif kind == "issuer":
        extra = revocation.count_registrations_of_issuer(target)
    return render_template("console/confirm.html", form=form, title=f"Revoke {label.format(raw)}?",
                           message="This cannot be undone. The agent must register again.",
                           count=n, count_label="live credential(s) will stop working", extra=extra,
                           hidden={"kind": kind, "target": raw, "back": back},
                           action=url_for("admin.revoke"), button="Revoke", back=back)


# --- delegations --------------------------------------------------------------------------------------
@bp.get("/delegations")
@admin_required
def delegations():
    args = request.args
    stmt = db.select(Delegation)
    if args.get("issuer"):
        stmt = stmt.where(Delegation.iss == args["issuer"].strip())
    if args.get("user", "").isdigit():
        stmt = stmt.where(Delegation.user_id == int(args["user"]))
    before = args.get("before", "")
    if before.isdigit():
        stmt = stmt.where(Delegation.id < int(before))
    rows = list(db.session.execute(stmt.order_by(Delegation.id.desc()).limit(PAGE + 1)).scalars())
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    next_args = ({**{k: v for k, v in args.items() if v and k != "before"}, "before": rows[-1].id}
                 if more else None)
    return render_template("console/delegations.html", rows=rows, next_args=next_args, args=args)


# --- users ----------------------------------------------------------------------------------------------
@bp.get("/users")
@admin_required
def users():
    args = request.args
    stmt = db.select(User)
    q = email_lookup(args.get("q"))
    if q:
        stmt = stmt.where(User.email.like(q.replace("%", "").replace("_", r"\_") + "%", escape="\\"))
    if args.get("admins"):
        stmt = stmt.where(User.is_admin.is_(True))
    before = args.get("before", "")
    if before.isdigit():
        stmt = stmt.where(User.id < int(before))
    rows = list(db.session.execute(stmt.order_by(User.id.desc()).limit(PAGE + 1)).scalars())
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    next_args = ({**{k: v for k, v in args.items() if v and k != "before"}, "before": rows[-1].id}
                 if more else None)
    return render_template("console/users.html", rows=rows, next_args=next_args, args=args)


@bp.get("/users/<int:user_id>")
@admin_required
def user(user_id):
    row = db.session.get(User, user_id) or abort(404)
    regs = list(db.session.execute(db.select(Registration).where(Registration.user_id == row.id)
                                   .order_by(Registration.created_at.desc()).limit(200)).scalars())
    dels = list(db.session.execute(db.select(Delegation).where(Delegation.user_id == row.id)
                                   .order_by(Delegation.id.desc()).limit(200)).scalars())
    return render_template("console/user.html", row=row, regs=regs, dels=dels, form=ButtonForm(),
                           live_count=revocation.count_user(row.id))


@bp.route("/users/<int:user_id>/<any(disable, enable, promote, demote):action>", methods=["GET", "POST"])
@admin_required
def user_action(user_id, action):
    row = db.session.get(User, user_id) or abort(404)
    form = ButtonForm()
    if action in ("disable", "demote") and row.id == current_user.id:
        flash("You cannot do that to your own account.", "error")
        return redirect(url_for("admin.user", user_id=row.id))
    if request.method == "POST" and form.validate_on_submit():
        if action == "disable":
            row.is_active = False
        elif action == "enable":
            row.is_active = True
        elif action == "promote":
            row.is_admin = True
        else:
            row.is_admin = False
        if action in ("disable", "demote"):
            end_sessions(row)  # every session of the account ends, a copied cookie too
        audit.record(f"user.{action}d" if action != "promote" else "user.promoted", "admin", actor_id=actor(),
                     user_id=row.id, ip=request.remote_addr, user_agent=request.user_agent.string)
        db.session.commit()
        flash(f"User {row.email}: {action} done.", "success")
        return redirect(url_for("admin.user", user_id=row.id))
    texts = {
        "disable": ("Disable {}?", "Every credential of this user stops working at once, and the user can no "
                                   "longer sign in. You can enable the account again later."),
        "enable": ("Enable {}?", "Credentials that were not revoked work again."),
        "promote": ("Make {} an admin?", "Admins can change every setting and revoke any agent. They sign in "
                                         "with a password set by `flask create-admin`."),
        "demote": ("Remove admin rights from {}?", "The account stays; only the console closes to it."),
    }
    title, message = texts[action]
    return render_template("console/confirm.html", form=form, title=title.format(row.email), message=message,
                           count=revocation.count_user(row.id) if action == "disable" else None,
                           count_label="live credential(s) will stop working",
                           action=url_for("admin.user_action", user_id=row.id, action=action),
                           button=action.capitalize(), back=url_for("admin.user", user_id=row.id))


# --- audit log ----------------------------------------------------------------------------------------
def _audit_query(args, errors: dict):
    stmt = db.select(AuditEvent)
    event = (args.get("event") or "").strip()
    if event:
        stmt = stmt.where(AuditEvent.event.like(event[:-1] + "%") if event.endswith("*")
                          else AuditEvent.event == event)
    actor_ = (args.get("actor") or "").strip()
    if actor_:
        stmt = stmt.where(AuditEvent.actor_kind == actor_ if actor_ in ("agent", "provider", "user", "admin",
                                                                          "system")
                          else AuditEvent.actor_id == actor_)
    if args.get("registration"):
        stmt = stmt.where(AuditEvent.registration_id == args["registration"].strip())
    user_ = (args.get("user") or "").strip()
    if user_:
        if user_.isdigit():
            stmt = stmt.where(AuditEvent.user_id == int(user_))
        else:
            errors["user"] = "A user id is a number."
    if args.get("issuer"):
        stmt = stmt.where(AuditEvent.iss == args["issuer"].strip())
    since, until = _date_arg("from", errors), _date_arg("to", errors, end=True)
    if since:
        stmt = stmt.where(AuditEvent.created_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.created_at < until)
    return stmt


@bp.get("/audit")
@admin_required
def audit_log():
    args, errors = request.args, {}
    stmt = _audit_query(args, errors)
    before = args.get("before", "")
    if before.isdigit():
        stmt = stmt.where(AuditEvent.id < int(before))
    rows = list(db.session.execute(stmt.order_by(AuditEvent.id.desc()).limit(PAGE + 1)).scalars()) \
        if not errors else []
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    filters = {k: v for k, v in args.items() if v and k != "before"}
    next_args = {**filters, "before": rows[-1].id} if more else None
    return render_template("console/audit.html", rows=rows, next_args=next_args, args=args, errors=errors,
                           filters=filters), 400 if errors else 200


EXPORT_FIELDS = ("id", "time", "event", "actor_kind", "actor_id", "ip", "user_agent", "registration_id",
                 "user_id", "iss", "sub", "agent_platform", "agent_context_id", "data")
EXPORT_BATCH = 1000


def _cell(value):
    """Agents control some fields (user agent, platform): keep spreadsheets from running them as formulas."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _export_rows(args):
    """Every matching event, newest first, read in keyset batches so memory stays flat."""
    errors = {}
    base = _audit_query(args, errors)
    last = None
    while True:
        stmt = base if last is None else base.where(AuditEvent.id < last)
        batch = list(db.session.execute(stmt.order_by(AuditEvent.id.desc()).limit(EXPORT_BATCH)).scalars())
        if not batch:
            return
        for row in batch:
            yield audit.as_dict(row)
        last = batch[-1].id
        db.session.expunge_all()


@bp.get("/audit/export.<any(csv, jsonl):fmt>")
@admin_required
def audit_export(fmt):
    args = request.args.to_dict()
    errors = {}
    _audit_query(args, errors)
    if errors:
        abort(400)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")

    def generate_csv():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(EXPORT_FIELDS)
        for d in _export_rows(args):
            writer.writerow([_cell(json.dumps(d["data"], sort_keys=True) if k == "data" else d.get(k))
                             for k in EXPORT_FIELDS])
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    def generate_jsonl():
        for d in _export_rows(args):
            yield json.dumps(d, sort_keys=True) + "\n"

    gen, mimetype = (generate_csv, "text/csv") if fmt == "csv" else (generate_jsonl, "application/x-ndjson")
    resp = Response(stream_with_context(gen()), mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="authmd-audit-{stamp}.{fmt}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --- settings -------------------------------------------------------------------------------------------
@bp.route("/settings", methods=["GET", "POST"])
@admin_required
def settings_page():
    current = settings.all_settings()
    form = SettingsForm(data=current) if request.method == "GET" else SettingsForm()
    status = 200
    if form.validate_on_submit():
        diff = settings.update(form.values())
        if diff:
            audit.record("settings.changed", "admin", actor_id=actor(), user_id=current_user.id,
                         before={k: v[0] for k, v in diff.items()}, after={k: v[1] for k, v in diff.items()},
                         ip=request.remote_addr, user_agent=request.user_agent.string)
            db.session.commit()
            flash(f"Saved {len(diff)} change(s): {', '.join(sorted(diff))}.", "success")
        else:
            flash("Nothing changed.", "info")
        return redirect(url_for("admin.settings_page"))
    if request.method == "POST":
        status = 400
    return render_template("console/settings.html", form=form), status


# --- outbox ---------------------------------------------------------------------------------------------
@bp.get("/outbox")
@admin_required
def outbox():
    stmt = db.select(OutboxMail.id, OutboxMail.created_at, OutboxMail.to_addr, OutboxMail.subject)
    to = email_lookup(request.args.get("to"))
    if to:
        stmt = stmt.where(OutboxMail.to_addr == to)
    before = request.args.get("before", "")
    if before.isdigit():
        stmt = stmt.where(OutboxMail.id < int(before))
    rows = list(db.session.execute(stmt.order_by(OutboxMail.id.desc()).limit(PAGE + 1)).all())
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    next_args = {"before": rows[-1].id, **({"to": to} if to else {})} if more else None
    return render_template("console/outbox.html", rows=rows, next_args=next_args, to=to,
                           mail_configured=bool(current_app.config.get("MAIL_SERVER")))


@bp.get("/outbox/<int:message_id>")
@admin_required
def outbox_message(message_id):
    row = db.session.get(OutboxMail, message_id) or abort(404)
    resp = Response(render_template("console/outbox_message.html", row=row))
    resp.headers["Cache-Control"] = "no-store"
    return resp
