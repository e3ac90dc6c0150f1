"""Audit room: one row per event, added to the caller's transaction."""
import json
import logging
import threading
from collections import Counter
from datetime import timedelta

from flask import current_app, has_app_context

from .extensions import db
from .models import AuditEvent
from .rawsql import Prepared
from .util import printable, utcnow

SECRET_WORDS = ("credential", "token", "otp", "code", "password", "secret", "assertion")


def values(event: str, actor_kind: str = "system", *, actor_id=None, registration_id=None,
           user_id=None, iss=None, sub=None, agent_platform=None, agent_context_id=None,
           ip=None, user_agent=None, now=None, protocol=None, **data) -> dict:
    """The column values of one audit row (see record()). ip and user_agent are the caller's to pass: this
    room does not read the request (the CLI, the expiry job and tests call it without one)."""
    for key in data:
        # a guard against a future caller passing a secret by mistake
        if any(w in key for w in SECRET_WORDS) and not key.endswith(("_type", "_id", "_prefix", "error", "_revoked", "_count")):
            raise ValueError(f"audit data key {key!r} looks like a secret")
    return dict(created_at=now or utcnow(), event=event, actor_kind=actor_kind,
                actor_id=str(actor_id) if actor_id is not None else None,
                ip=ip, user_agent=printable(user_agent),
                registration_id=registration_id, user_id=user_id, iss=iss, sub=sub,
                agent_platform=agent_platform, agent_context_id=agent_context_id, protocol=protocol,
                data=json.dumps(data, sort_keys=True, default=str) if data else None)


def record(event: str, actor_kind: str = "system", **kwargs) -> AuditEvent:
    row = AuditEvent(**values(event, actor_kind, **kwargs))
    db.session.add(row)
    return row


_INSERT = Prepared(AuditEvent.__table__.insert())


def insert(rows: list[dict], connection=None) -> None:
    """Write rows built by values() now, in the caller's transaction, with one INSERT run through rawsql
    (no ORM flush, no per-statement SQLAlchemy work)."""
    _INSERT.execute_many(rows, connection=connection)


def as_dict(row: AuditEvent) -> dict:
    from .util import iso
    return {"id": row.id, "time": iso(row.created_at), "event": row.event,
            "actor_kind": row.actor_kind, "actor_id": row.actor_id, "ip": row.ip,
            "user_agent": row.user_agent, "registration_id": row.registration_id,
            "user_id": row.user_id, "iss": row.iss, "sub": row.sub,
            "agent_platform": row.agent_platform, "agent_context_id": row.agent_context_id,
            "protocol": row.protocol, "data": json.loads(row.data) if row.data else {}}


log = logging.getLogger("authmd.audit")
UNRECORDED_EVERY = timedelta(minutes=1)
_UNRECORDED = "authmd.audit_unrecorded"
_unrecorded_lock = threading.Lock()


def unrecorded(event: str, **labels) -> None:
    """An event not worth a row: what anyone can post by the thousand at no cost (a token that does not
    parse, one from an issuer nobody trusts here). It is counted per worker and logged at most once per
    UNRECORDED_EVERY with the counts since the last line, so a flood costs neither a write nor a log line
    per request. labels are our own words (kind, error code), never text the client sent."""
    if not has_app_context():
        return
    from .util import utcnow
    key = " ".join([event] + [f"{k}={v}" for k, v in sorted(labels.items())])
    now = utcnow()
    with _unrecorded_lock:
        state = current_app.extensions.setdefault(_UNRECORDED, {"last": None, "counts": Counter()})
        state["counts"][key] += 1
        if state["last"] is not None and now - state["last"] < UNRECORDED_EVERY:
            return
        counts, state["counts"], state["last"] = state["counts"], Counter(), now
    log.warning("not written to the audit log (junk: unparseable, or no trusted issuer), %d since the last "
                "such line: %s", sum(counts.values()), ", ".join(f"{k} ×{n}" for k, n in sorted(counts.items())))
