"""Scopes room: the scopes this service grants, kept in the database; add, update and remove them (the one
implementation the console and `flask scopes` share), with their audit rows."""
import re

from . import audit
from .extensions import db
from .models import Scope
from .rawsql import Prepared
from .util import ProtocolError, utcnow

NAME_RE = re.compile(r"[A-Za-z0-9._:\-]{1,100}")
NAME_RULE = "A scope name is 1-100 letters, digits and . _ : - only."

SEED = [
    ("api.read", "Read access to the API", True, True),
    ("api.write", "Write access to the API", False, True),
]


def enabled_scopes() -> list[Scope]:
    return list(db.session.execute(
        db.select(Scope).where(Scope.enabled.is_(True)).order_by(Scope.position, Scope.name)).scalars())


# plain (name, pre_claim, post_claim) tuples: loading ORM entities (with autoflush) cost more than the
# query itself on POST /agent/auth, and so did building the statement anew each time (bench/README.md)
_ENABLED_ROWS = (db.select(Scope.name, Scope.pre_claim, Scope.post_claim)
                 .where(Scope.enabled.is_(True)).order_by(Scope.position, Scope.name))


_ENABLED_ROWS_RAW = Prepared(_ENABLED_ROWS)


def _enabled_rows(connection=None) -> list:
    if connection is not None:
        return _ENABLED_ROWS_RAW.all(connection=connection)
    return db.session.execute(_ENABLED_ROWS).all()


def names(pre=None, post=None, connection=None) -> list[str]:
    return [name for name, p, q in _enabled_rows(connection)
            if (pre is None or bool(p) == pre) and (post is None or bool(q) == post)]


def pre_and_post_claim(connection=None) -> tuple[list[str], list[str]]:
    """Both lists from one read, for a registration that answers with both (connection: see
    settings.all_settings)."""
    rows = _enabled_rows(connection)
    return [name for name, p, _ in rows if p], [name for name, _, q in rows if q]


def pre_claim() -> list[str]:
    return names(pre=True)


def post_claim(connection=None) -> list[str]:
    return names(post=True, connection=connection)


def in_use(name: str) -> bool:
    """Whether a live credential holds this scope (such a scope can be disabled, not deleted)."""
    from .credentials import live
    from .models import Credential
    # autoescape: "_" in a scope name must not act as a LIKE wildcard
    held = db.or_(Credential.scopes == name, Credential.scopes.startswith(name + " ", autoescape=True),
                  Credential.scopes.endswith(" " + name, autoescape=True),
                  Credential.scopes.contains(" " + name + " ", autoescape=True))
    return db.session.execute(db.select(Credential.id).where(live(), held).limit(1)).first() is not None


def seed() -> int:
    added = 0
    for pos, (name, desc, pre, post) in enumerate(SEED):
        if db.session.execute(db.select(Scope).where(Scope.name == name)).scalar() is None:
            db.session.add(Scope(name=name, description=desc, position=pos, pre_claim=pre,
                                 post_claim=post, enabled=True, created_at=utcnow()))
            added += 1
    return added


# --- changes: each adds its audit row and tells the document cache, in the caller's transaction ---------------
def _changed() -> None:
    from . import authdoc  # authdoc reads scopes: imported here, not at the top
    authdoc.config_changed()


def by_name(name: str) -> Scope | None:
    return db.session.execute(db.select(Scope).where(Scope.name == name)).scalar()


def next_position() -> int:
    return (db.session.execute(db.select(db.func.max(Scope.position))).scalar() or 0) + 1


def add(name: str, description: str = "", *, pre_claim: bool = False, post_claim: bool = True,
        enabled: bool = True, position: int | None = None, actor_id=None, ip=None, user_agent=None) -> Scope:
    """A new scope (last in the order unless position says otherwise). 400 for a bad name, 409 when it exists.
    actor_id, ip and user_agent name who asked, for the audit row (as in update and remove)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ProtocolError(400, "invalid_request", NAME_RULE)
    if by_name(name) is not None:
        raise ProtocolError(409, "invalid_request", f"A scope named {name} exists.")
    row = Scope(name=name, description=(description or "").strip(),
                position=next_position() if position is None else position, pre_claim=bool(pre_claim),
                post_claim=bool(post_claim), enabled=bool(enabled), created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("scope.added", "admin", actor_id=actor_id, ip=ip, user_agent=user_agent, scope=name,
                 pre_claim=row.pre_claim, post_claim=row.post_claim)
    _changed()
    return row


def update(row: Scope, *, description: str, position: int, pre_claim: bool, post_claim: bool, enabled: bool,
           actor_id=None, ip=None, user_agent=None) -> dict:
    """Change a scope's description, order and flags (never its name: it is the scope's identity in issued
    credentials); returns {field: [before, after]}."""
    fields = {"description": (description or "").strip(), "position": position or 0, "pre_claim": bool(pre_claim),
              "post_claim": bool(post_claim), "enabled": bool(enabled)}
    changes = {k: [getattr(row, k), v] for k, v in fields.items() if getattr(row, k) != v}
    for k, v in fields.items():
        setattr(row, k, v)
    event = ("scope.disabled" if changes.get("enabled") == [True, False] else
             "scope.enabled" if changes.get("enabled") == [False, True] else "scope.updated")
    audit.record(event, "admin", actor_id=actor_id, ip=ip, user_agent=user_agent, scope=row.name, changes=changes)
    if changes:
        _changed()
    return changes


def remove(row: Scope, *, actor_id=None, ip=None, user_agent=None) -> str:
    """Delete a scope, or disable it when a live credential holds it (it is then no longer granted or
    advertised; the credentials keep it until they end). Returns "removed" or "disabled"."""
    if in_use(row.name):
        if row.enabled:
            row.enabled = False
            audit.record("scope.disabled", "admin", actor_id=actor_id, ip=ip, user_agent=user_agent, scope=row.name)
            _changed()
        return "disabled"
    name = row.name
    db.session.delete(row)
    audit.record("scope.removed", "admin", actor_id=actor_id, ip=ip, user_agent=user_agent, scope=name)
    _changed()
    return "removed"
