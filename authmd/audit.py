"""Audit room: one row per event, added to the caller's transaction."""
import json

from flask import has_request_context, request

from .extensions import db
from .models import AuditEvent
from .rawsql import Prepared
from .util import printable, utcnow

SECRET_WORDS = ("credential", "token", "otp", "code", "password", "secret", "assertion")


def values(event: str, actor_kind: str = "system", *, actor_id=None, registration_id=None,
           user_id=None, iss=None, sub=None, agent_platform=None, agent_context_id=None,
           ip=None, user_agent=None, now=None, protocol=None, **data) -> dict:
    """The column values of one audit row (see record())."""
    for key in data:
        # a guard against a future caller passing a secret by mistake
        if any(w in key for w in SECRET_WORDS) and not key.endswith(("_type", "_id", "_prefix", "error", "_revoked", "_count")):
            raise ValueError(f"audit data key {key!r} looks like a secret")
    if has_request_context():
        ip = ip or request.remote_addr
        user_agent = user_agent or request.user_agent.string
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
