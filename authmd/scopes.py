"""Scopes room: the scopes this service grants, kept in the database."""
from .extensions import db
from .models import Scope
from .util import utcnow

SEED = [
    ("api.read", "Read access to the API", True, True),
    ("api.write", "Write access to the API", False, True),
]


def enabled_scopes() -> list[Scope]:
    return list(db.session.execute(
        db.select(Scope).where(Scope.enabled.is_(True)).order_by(Scope.position, Scope.name)).scalars())


def names(pre=None, post=None) -> list[str]:
    out = []
    for s in enabled_scopes():
        if pre is not None and bool(s.pre_claim) != pre:
            continue
        if post is not None and bool(s.post_claim) != post:
            continue
        out.append(s.name)
    return out


def pre_claim() -> list[str]:
    return names(pre=True)


def post_claim() -> list[str]:
    return names(post=True)


def seed() -> int:
    added = 0
    for pos, (name, desc, pre, post) in enumerate(SEED):
        if db.session.execute(db.select(Scope).where(Scope.name == name)).scalar() is None:
            db.session.add(Scope(name=name, description=desc, position=pos, pre_claim=pre,
                                 post_claim=post, enabled=True, created_at=utcnow()))
            added += 1
    return added
