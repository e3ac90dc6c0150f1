"""Scopes room: the scopes this service grants, kept in the database."""
from .extensions import db
from .models import Scope
from .rawsql import Prepared
from .util import utcnow

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
