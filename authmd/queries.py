"""Queries room: what the console lists and counts (dashboard series, registrations, delegations, users, the
audit log and its export, the outbox), from plain values: no request, no writes."""
import csv
import io
import json
from datetime import datetime, timedelta

from sqlalchemy import and_, or_

from . import audit, revocation
from .extensions import db
from .models import (WIRE_TYPES, AuditEvent, ClaimAttempt, Credential, Delegation, OutboxMail, RefreshToken,
                     Registration, TrustedIssuer, User)
from .util import utcnow

PAGE = 50
CHART_FLOWS = ("anonymous", "email-verification", "agent-provider")
FLOWS = CHART_FLOWS + ("service-auth",)  # service-auth: the latest protocol's registration for a named person
STATUSES = ("pending", "claimed", "active", "expired", "revoked")
PROTOCOLS = ("v0.1", "latest")
# how the latest protocol names each registration type on the wire (POST /agent/identity's `type`)
AUDIT_PROTOCOLS = PROTOCOLS + ("none",)  # none: the console's and the operators' own rows
ACTOR_KINDS = ("agent", "provider", "user", "admin", "system")
CHART_EVENTS = {"claim.confirmed": "Claims confirmed", "registration.revoked": "Revocations",
                "credential.revoked": "Revocations", "assertion.rejected": "Rejected assertions"}


# --- dashboard ------------------------------------------------------------------------------------------------
_DAILY = {}


def daily_counts(column, values, starts) -> dict:
    """{value: {day: count}} from one statement of range counts, each an index-only count on
    (column, created_at): far cheaper than grouping by a date() expression over a month of rows.
    The statement is built once per shape (SQLAlchemy then reuses its compiled form)."""
    key = (column.table.name, column.name, len(values), len(starts))
    stmt = _DAILY.get(key)
    if stmt is None:
        created = column.table.c.created_at
        stmt = _DAILY[key] = db.select(*[
            db.select(db.func.count()).select_from(column.table)
            .where(column == db.bindparam(f"v{i}"), created >= db.bindparam(f"d{j}"),
                   created < db.bindparam(f"d{j + 1}")).scalar_subquery()
            for i in range(len(values)) for j in range(len(starts))])
    bounds = list(starts) + [starts[-1] + timedelta(days=1)]
    args = {f"v{i}": v for i, v in enumerate(values)} | {f"d{j}": d for j, d in enumerate(bounds)}
    row = iter(db.session.execute(stmt, args).one())
    return {v: {d.date().isoformat(): next(row) or 0 for d in starts} for v in values}


def dashboard(now=None) -> dict:
    """30 days of registrations per flow and of a few audit events, and the counts of the dashboard's cards."""
    today = (now or utcnow()).date()
    starts = [datetime.combine(today - timedelta(days=29 - i), datetime.min.time()) for i in range(30)]
    days = [d.date().isoformat() for d in starts]
    series = daily_counts(Registration.__table__.c.type, CHART_FLOWS, starts)
    by_event = daily_counts(AuditEvent.__table__.c.event, list(CHART_EVENTS), starts)
    events = {label: dict.fromkeys(days, 0) for label in dict.fromkeys(CHART_EVENTS.values())}
    for ev, label in CHART_EVENTS.items():
        for d, n in by_event[ev].items():
            events[label][d] += n
    charts = [{"title": f"Registrations: {f}", "days": series[f]} for f in CHART_FLOWS]
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
        "live_credentials": revocation.count_live(),
        "issuers": db.session.execute(db.select(db.func.count(TrustedIssuer.id))
                                      .where(TrustedIssuer.enabled.is_(True))).scalar(),
        "pending_claims": db.session.execute(db.select(db.func.count(ClaimAttempt.id))
                                             .where(ClaimAttempt.status == "initiated")).scalar(),
    }
    return {"charts": charts, "counts": counts, "days": days}


def recent_events(limit: int = 15) -> list[AuditEvent]:
    return _all(db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))


# --- lists, newest first, a page at a time ---------------------------------------------------------------------
def _page_by_id(stmt, id_column, before: int | None) -> tuple[list, int | None]:
    """One page of rows older than the id `before` (entities when one entity is selected, else rows), and the
    id the next page starts before (None: no more)."""
    if before is not None:
        stmt = stmt.where(id_column < before)
    result = db.session.execute(stmt.order_by(id_column.desc()).limit(PAGE + 1))
    rows = list(result.scalars() if len(stmt.column_descriptions) == 1 else result.all())
    if len(rows) <= PAGE:
        return rows, None
    return rows[:PAGE], rows[PAGE - 1].id


def flow_label(reg: Registration) -> str:
    """A registration's flow as its protocol names it: authmd's type for v0.1, the wire type for latest."""
    return WIRE_TYPES.get(reg.type, reg.type) if reg.protocol == "latest" else reg.type


def registrations(*, flow=None, status=None, email=None, issuer=None, protocol=None, since=None, until=None,
                  after: tuple | None = None) -> tuple[list, str | None]:
    """(registration, user email) rows, newest first, and the cursor of the next page ('<iso time>~<id>').
    The cursor is (created_at, id), so rows created in the same instant are neither skipped nor repeated."""
    stmt = db.select(Registration, User.email).outerjoin(User, User.id == Registration.user_id)
    for column, value in ((Registration.type, flow), (Registration.status, status),
                          (Registration.email, email), (Registration.iss, issuer),
                          (Registration.protocol, protocol)):
        if value:
            stmt = stmt.where(column == value)
    if since:
        stmt = stmt.where(Registration.created_at >= since)
    if until:
        stmt = stmt.where(Registration.created_at < until)
    if after:
        stmt = stmt.where(or_(Registration.created_at < after[0],
                              and_(Registration.created_at == after[0], Registration.id < after[1])))
    rows = list(db.session.execute(stmt.order_by(Registration.created_at.desc(), Registration.id.desc())
                                   .limit(PAGE + 1)).all())
    if len(rows) <= PAGE:
        return rows, None
    rows = rows[:PAGE]
    last = rows[-1][0]
    return rows, f"{last.created_at.isoformat()}~{last.id}"


def is_live(cred: Credential, now=None) -> bool:
    """What credentials.live() says in SQL, for a loaded credential: not revoked, not expired."""
    return cred.revoked_at is None and (cred.expires_at is None or cred.expires_at > (now or utcnow()))


def _all(stmt) -> list:
    return list(db.session.execute(stmt).scalars())


def registration_exists(registration_id: str) -> bool:
    return db.session.get(Registration, registration_id) is not None


# what the console shows of a refresh token: never its digest
REFRESH_COLUMNS = (RefreshToken.id, RefreshToken.prefix, RefreshToken.family_id, RefreshToken.user_id,
                   RefreshToken.created_at, RefreshToken.expires_at, RefreshToken.spent_at, RefreshToken.revoked_at)


def refresh_state(row, now=None) -> str:
    """revoked | spent (rotated: used once) | expired | live."""
    if row.revoked_at is not None:
        return "revoked"
    if row.spent_at is not None:
        return "spent"
    return "expired" if row.expires_at <= (now or utcnow()) else "live"


def attempt_state(attempt: ClaimAttempt, now=None) -> str:
    """A claim attempt's state as the console shows it, read only (the claim rooms' own state() may expire
    a registration on the way): open | confirmed (latest: Authorize pressed) | expired | completed |
    superseded | denied | failed (v0.1: the mail never left)."""
    if attempt.status != "initiated":
        return attempt.status
    if attempt.confirmed_at is not None:
        return "confirmed"
    return "expired" if attempt.link_expires_at <= (now or utcnow()) else "open"


def registration_detail(registration_id: str) -> dict | None:
    """A registration with its credentials (v0.1 keys and tokens, the latest protocol's access tokens), its
    refresh tokens, delegation, claim attempts of both kinds (with who confirmed a latest one) and audit
    timeline."""
    reg = db.session.get(Registration, registration_id)
    if reg is None:
        return None
    attempts = _all(db.select(ClaimAttempt).where(ClaimAttempt.registration_id == reg.id)
                    .order_by(ClaimAttempt.created_at))
    confirmers = {a.confirmed_user_id for a in attempts if a.confirmed_user_id is not None}
    return {"reg": reg,
            "creds": _all(db.select(Credential).where(Credential.registration_id == reg.id).order_by(Credential.id)),
            "refresh_tokens": list(db.session.execute(
                db.select(*REFRESH_COLUMNS).where(RefreshToken.registration_id == reg.id)
                .order_by(RefreshToken.id.desc()).limit(200)).all()),
            "delegation": db.session.get(Delegation, reg.delegation_id) if reg.delegation_id else None,
            "v01_attempts": [a for a in attempts if a.protocol != "latest"],
            "latest_attempts": [a for a in attempts if a.protocol == "latest"],
            "confirmers": dict(db.session.execute(db.select(User.id, User.email).where(
                User.id.in_(confirmers))).all()) if confirmers else {},
            "events": _all(db.select(AuditEvent).where(AuditEvent.registration_id == reg.id)
                           .order_by(AuditEvent.id).limit(500))}


def delegations(*, issuer=None, user_id=None, before=None) -> tuple[list, int | None]:
    stmt = db.select(Delegation)
    if issuer:
        stmt = stmt.where(Delegation.iss == issuer)
    if user_id is not None:
        stmt = stmt.where(Delegation.user_id == user_id)
    return _page_by_id(stmt, Delegation.id, before)


def users(*, email_prefix=None, admins_only=False, before=None) -> tuple[list, int | None]:
    stmt = db.select(User)
    if email_prefix:
        stmt = stmt.where(User.email.like(email_prefix.lower().replace("%", "").replace("_", r"\_") + "%",
                                          escape="\\"))
    if admins_only:
        stmt = stmt.where(User.is_admin.is_(True))
    return _page_by_id(stmt, User.id, before)


def user_detail(user_id: int) -> dict | None:
    row = db.session.get(User, user_id)
    if row is None:
        return None
    return {"row": row,
            "regs": _all(db.select(Registration).where(Registration.user_id == row.id)
                         .order_by(Registration.created_at.desc()).limit(200)),
            "dels": _all(db.select(Delegation).where(Delegation.user_id == row.id).order_by(Delegation.id.desc())
                         .limit(200)),
            "live_count": revocation.count_user(row.id)}


def outbox(*, to=None, before=None) -> tuple[list, int | None]:
    stmt = db.select(OutboxMail.id, OutboxMail.created_at, OutboxMail.to_addr, OutboxMail.subject)
    if to:
        stmt = stmt.where(OutboxMail.to_addr == to)
    return _page_by_id(stmt, OutboxMail.id, before)


# --- the portal: one user's own -----------------------------------------------------------------------------
def pending_claims(email: str, protocol: str = "v0.1") -> list[ClaimAttempt]:
    """The claims of one protocol family waiting for this address: a portal user answers them (v0.1's with
    "Show code", the latest's with Authorize: each family's buttons only ever see its own attempts)."""
    now = utcnow()
    return list(db.session.execute(
        db.select(ClaimAttempt).join(Registration, Registration.id == ClaimAttempt.registration_id)
        .where(ClaimAttempt.email == email, ClaimAttempt.protocol == protocol, ClaimAttempt.status == "initiated",
               ClaimAttempt.link_expires_at > now, Registration.status == "pending")
        .order_by(ClaimAttempt.created_at.desc()).limit(50)).scalars())


def my_agents(user_id: int) -> tuple[list, dict, list]:
    """A user's registrations (with their live scopes and last use) and delegations, for the portal."""
    regs = list(db.session.execute(db.select(Registration).where(Registration.user_id == user_id)
                                   .order_by(Registration.created_at.desc()).limit(200)).scalars())
    creds = {}
    if regs:
        for c in db.session.execute(db.select(Credential).where(
                Credential.registration_id.in_([r.id for r in regs])).order_by(Credential.id)).scalars():
            creds.setdefault(c.registration_id, []).append(c)
    now = utcnow()
    summary = {}
    for reg_id, cs in creds.items():
        live = [c for c in cs if is_live(c, now)]
        used = [c.last_used_at for c in cs if c.last_used_at]
        summary[reg_id] = {"scopes": " ".join(dict.fromkeys(s for c in live for s in c.scope_list)),
                           "last_used": max(used) if used else None}
    dels = list(db.session.execute(db.select(Delegation).where(Delegation.user_id == user_id)
                                   .order_by(Delegation.last_seen.desc()).limit(200)).scalars())
    return regs, summary, dels



# --- the audit log -----------------------------------------------------------------------------------------------
def audit_statement(*, event=None, actor=None, registration=None, user_id=None, issuer=None, protocol=None,
                    since=None, until=None):
    """The events matching a filter: event ("claim.*" is a prefix), actor (a kind, else an actor id), protocol
    ("v0.1", "latest", or "none": the rows of no protocol, the console's and the operators')."""
    stmt = db.select(AuditEvent)
    if protocol == "none":
        stmt = stmt.where(AuditEvent.protocol.is_(None))
    elif protocol:
        stmt = stmt.where(AuditEvent.protocol == protocol)
    if event:
        stmt = stmt.where(AuditEvent.event.like(event[:-1] + "%") if event.endswith("*")
                          else AuditEvent.event == event)
    if actor:
        stmt = stmt.where(AuditEvent.actor_kind == actor if actor in ACTOR_KINDS else AuditEvent.actor_id == actor)
    for column, value in ((AuditEvent.registration_id, registration), (AuditEvent.iss, issuer)):
        if value:
            stmt = stmt.where(column == value)
    if user_id is not None:
        stmt = stmt.where(AuditEvent.user_id == user_id)
    if since:
        stmt = stmt.where(AuditEvent.created_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.created_at < until)
    return stmt


def audit_events(*, before=None, **filters) -> tuple[list, int | None]:
    return _page_by_id(audit_statement(**filters), AuditEvent.id, before)


# protocol last: a reader of the earlier columns by position keeps working
EXPORT_FIELDS = ("id", "time", "event", "actor_kind", "actor_id", "ip", "user_agent", "registration_id",
                 "user_id", "iss", "sub", "agent_platform", "agent_context_id", "data", "protocol")
EXPORT_BATCH = 1000


def export_rows(**filters):
    """Every matching event as a dict, newest first, read in keyset batches so memory stays flat."""
    base = audit_statement(**filters)
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


def _cell(value):
    """Agents control some fields (user agent, platform): keep spreadsheets from running them as formulas."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(**filters):
    """The export as CSV text, in chunks of about 64 KiB."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_FIELDS)
    for d in export_rows(**filters):
        writer.writerow([_cell(json.dumps(d["data"], sort_keys=True) if k == "data" else d.get(k))
                         for k in EXPORT_FIELDS])
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def export_jsonl(**filters):
    for d in export_rows(**filters):
        yield json.dumps(d, sort_keys=True) + "\n"
