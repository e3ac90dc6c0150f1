"""Users room: who a registration belongs to (verified email, or a user provisioned just in time)."""
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .models import User
from .util import ProtocolError, utcnow


def normalize_email(value) -> str:
    """A syntactically valid address, lower-cased for matching; else 400 invalid_request."""
    if not isinstance(value, str) or not value or len(value) > 320:
        raise ProtocolError(400, "invalid_request", "A valid email address is required.")
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ProtocolError(400, "invalid_request", f"Invalid email address: {exc}") from None
    return info.normalized.lower()


def by_email(email: str):
    return db.session.execute(db.select(User).where(User.email == email)).scalar()


def find_or_provision_by_email(email: str, source: str = "claim") -> User:
    """The user with this (now verified) email, or a new one. Safe against a concurrent twin."""
    user = by_email(email)
    if user is None:
        try:
            with db.session.begin_nested():
                user = User(email=email, email_verified=True, created_at=utcnow(), source=source)
                db.session.add(user)
        except IntegrityError:
            user = by_email(email)
    if not user.email_verified:
        user.email_verified = True
    return user
