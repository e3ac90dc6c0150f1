"""Resource servers room: the team's own APIs that may ask authmd about credentials (RFC 7662 callers).

Each has a public client_id (`rs_…`) and a secret (`rsec_…`) shown once; only the secret's SHA-256 digest is
kept (the secret is 256 random bits, so a fast digest is as good as a slow hash). One implementation for
the CLI and the console: add, rotate, disable, enable, remove, each with its audit row (never the secret).

Checking a caller runs on every introspection, so each worker keeps the small table in memory
(`RESOURCE_SERVER_CACHE_SECONDS`, default 1 s; 0 reads the database every time) and compares digests in
constant time. Only a *positive* answer comes from memory: an unknown client_id, a disabled entry or a
secret that does not match is looked up again in the database (one indexed read), so a server added,
re-enabled or given a new secret works at once everywhere. A server disabled, removed or rotated stops
working within that second on every worker and node, and at once on the worker that committed the change.
Credentials are never cached here: only resource servers are.
"""
import re
from datetime import timedelta
from typing import NamedTuple

from flask import current_app, has_app_context
from sqlalchemy import event, or_, update
from sqlalchemy.orm import Session

from . import audit
from .extensions import db
from .models import ResourceServer
from .secrets import digest, new_id, new_token, same
from .util import ProtocolError, utcnow

CLIENT_ID_PREFIX = "rs_"
SECRET_PREFIX = "rsec_"
NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,98}[A-Za-z0-9._-])?")
NAME_RULE = "1-100 letters, digits, spaces and . _ -, starting with a letter or digit"
LAST_USED_GRANULARITY = timedelta(seconds=60)
MAX_CLIENT_ID, MAX_SECRET = 100, 200


class Invalid(ValueError):
    """A name that breaks the rules or is taken: the CLI and the console show the message next to it."""


# ------------------------------------------------------------------------------------------------ management
def by_name(name: str) -> ResourceServer | None:
    return db.session.execute(db.select(ResourceServer).where(ResourceServer.name == name)).scalar()


def all_servers() -> list[ResourceServer]:
    return list(db.session.execute(db.select(ResourceServer).order_by(ResourceServer.name)).scalars())


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name):
        raise Invalid(f"A name is {NAME_RULE}.")
    if by_name(name) is not None:
        raise Invalid(f"A resource server named {name} exists.")
    return name


def add(name: str, *, actor_id: str, user_id: int | None = None, now=None) -> tuple[ResourceServer, str]:
    """A new, enabled resource server; returns it and its secret (shown once). Caller commits."""
    name = check_name(name)
    now = now or utcnow()
    secret = new_token(SECRET_PREFIX, 32)
    row = ResourceServer(name=name, client_id=new_id(CLIENT_ID_PREFIX), secret_digest=digest(secret),
                         enabled=True, created_at=now)
    db.session.add(row)
    db.session.flush()
    _changed("resource_server.added", row, actor_id, user_id)
    return row, secret


def rotate(row: ResourceServer, *, actor_id: str, user_id: int | None = None, now=None) -> str:
    """A new secret for row (the old one stops working); returns it (shown once). Caller commits."""
    secret = new_token(SECRET_PREFIX, 32)
    row.secret_digest, row.secret_rotated_at = digest(secret), now or utcnow()
    _changed("resource_server.secret_rotated", row, actor_id, user_id)
    return secret


def set_enabled(row: ResourceServer, enabled: bool, *, actor_id: str, user_id: int | None = None) -> bool:
    """Switch row on or off; False when it already was (nothing written). Caller commits."""
    if row.enabled == enabled:
        return False
    row.enabled = enabled
    _changed("resource_server.enabled" if enabled else "resource_server.disabled", row, actor_id, user_id)
    return True


def remove(row: ResourceServer, *, actor_id: str, user_id: int | None = None) -> None:
    _changed("resource_server.removed", row, actor_id, user_id)
    db.session.delete(row)


def _changed(event_name: str, row: ResourceServer, actor_id: str, user_id: int | None) -> None:
    audit.record(event_name, "admin", actor_id=actor_id, user_id=user_id, resource_server=row.name,
                 client_id=row.client_id, resource_server_id=row.id)
    db.session.info[_FLAG] = True  # this worker forgets its copy when the change commits


# ------------------------------------------------------------------------------------------------ callers
class Caller(NamedTuple):
    id: int
    name: str
    client_id: str
    secret_digest: str
    enabled: bool
    last_used_at: object


_COLUMNS = (ResourceServer.id, ResourceServer.name, ResourceServer.client_id, ResourceServer.secret_digest,
            ResourceServer.enabled, ResourceServer.last_used_at)
_ALL = db.select(*_COLUMNS)
_ONE = db.select(*_COLUMNS).where(ResourceServer.client_id == db.bindparam("client_id"))
_cache: dict = {}  # id(app) -> (valid until, {client_id: Caller})
_FLAG = "authmd_resource_servers_changed"


# RFC 6749's code for a client that failed to authenticate. Only resource servers ever get it, never an
# agent, so it is not in auth.md's table of the codes agents may meet (tests/test_discovery.py).
INVALID_CLIENT = "invalid_client"


def invalid_client(message: str) -> ProtocolError:
    return ProtocolError(401, INVALID_CLIENT, message, {"WWW-Authenticate": 'Basic realm="authmd"'})


def authenticate(client_id: str, secret: str, now=None) -> Caller:
    """The enabled resource server these credentials belong to, else ProtocolError 401 invalid_client."""
    if not client_id or not secret or len(client_id) > MAX_CLIENT_ID or len(secret) > MAX_SECRET:
        raise invalid_client("Unknown resource server or wrong secret.")
    now = now or utcnow()
    presented = digest(secret)
    caller = _table(now).get(client_id)
    if caller is None or not caller.enabled or not same(presented, caller.secret_digest):
        row = db.session.execute(_ONE, {"client_id": client_id}).first()
        caller = Caller(*row) if row is not None else None
        if caller is None or not same(presented, caller.secret_digest):
            raise invalid_client("Unknown resource server or wrong secret.")
        if not caller.enabled:
            raise invalid_client("This resource server is disabled.")
        _remember(caller)
    return caller


def touch(caller: Caller, now=None) -> bool:
    """Record that caller was used, at most once a minute (a conditional UPDATE that only moves forward).
    True when a write is pending for the caller's commit."""
    now = now or utcnow()
    if caller.last_used_at is not None and now - caller.last_used_at < LAST_USED_GRANULARITY:
        return False
    table = ResourceServer.__table__
    db.session.execute(update(table).where(table.c.id == caller.id, or_(
        table.c.last_used_at.is_(None), table.c.last_used_at <= now - LAST_USED_GRANULARITY)).values(last_used_at=now))
    _remember(caller._replace(last_used_at=now))
    return True


def _table(now) -> dict:
    app = current_app._get_current_object()
    ttl = float(app.config.get("RESOURCE_SERVER_CACHE_SECONDS", 1) or 0)
    if ttl <= 0:
        return {}
    key = id(app)
    hit = _cache.get(key)
    # a clock that went backwards (an injected one, or NTP) also reloads
    if hit is not None and hit[0] - timedelta(seconds=ttl) <= now < hit[0]:
        return hit[1]
    callers = {row.client_id: Caller(*row) for row in db.session.execute(_ALL)}
    _cache[key] = (now + timedelta(seconds=ttl), callers)
    return callers


def _remember(caller: Caller) -> None:
    hit = _cache.get(id(current_app._get_current_object()))
    if hit is not None:
        hit[1][caller.client_id] = caller


def forget() -> None:
    """Drop this worker's copy (every app's, outside an app context)."""
    if has_app_context():
        _cache.pop(id(current_app._get_current_object()), None)
    else:
        _cache.clear()


@event.listens_for(Session, "after_commit")
def _committed(session):
    if session.info.pop(_FLAG, False):
        forget()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session):
    session.info.pop(_FLAG, None)
