"""Users room: who a registration belongs to (verified email, or a user provisioned just in time), and an
admin's changes to an account (disable, enable, promote, demote)."""
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from . import audit, settings
from .extensions import db
from .models import Delegation, User
from .rawsql import Prepared, on_conflict_do_nothing
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


def email_lookup(value) -> str:
    """What someone typed to find an address (a console filter or search box) in the form addresses are
    stored and compared in: normalize_email's when it is a whole address, so every spelling of it finds
    it; else the text stripped and lower-cased (a prefix, a partial address)."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        return normalize_email(text)
    except ProtocolError:
        return text.lower()


def by_email(email: str):
    """The user with this address, given in normalize_email's form (every caller normalises at its edge)."""
    return db.session.execute(db.select(User).where(User.email == email)).scalar()


def end_sessions(user: User) -> None:
    """End every console and portal session this user holds, on every device (a copied cookie too): the
    generation a session carries no longer matches. For sign-out, a new password, demotion, disabling.
    An UPDATE of the column by itself, so two admins acting at once both count. Caller commits."""
    db.session.execute(update(User).where(User.id == user.id)
                       .values(session_generation=User.session_generation + 1)
                       .execution_options(synchronize_session=False))
    db.session.expire(user, ["session_generation"])


# --- "existing users only": the one home of the rule. Every path that could create a user comes here:
# find_or_provision_by_email (a claim completed, a portal sign-in) and plan_for_delegation (ID-JAG).
NOT_PROVISIONED = ("Only existing users of this service may register agents, and this address is not one: "
                   "ask an administrator of the service to add it, or use the address of an existing account.")


def may_provision() -> bool:
    """Whether a user may be created just in time (the setting existing_users_only is off)."""
    return not settings.get("existing_users_only")


def _refuse_new_user() -> None:
    if not may_provision():
        raise ProtocolError(400, "user_not_provisioned", NOT_PROVISIONED)


def require_resolvable(email: str) -> None:
    """400 user_not_provisioned now when email names no user and none may be created. The email-required
    registration and the anonymous claim call it before anything is written or mailed, so nobody gets
    a claim mail whose ceremony could only fail at the last step."""
    if not may_provision() and by_email(email) is None:
        _refuse_new_user()


def find_or_provision_by_email(email: str, source: str = "claim") -> User:
    """The user with this (now verified) email, or a new one (400 user_not_provisioned when only existing
    users are admitted). Safe against a concurrent twin."""
    user = by_email(email)
    if user is None:
        _refuse_new_user()
        try:
            with db.session.begin_nested():
                user = User(email=email, email_verified=True, created_at=utcnow(), source=source)
                db.session.add(user)
        except IntegrityError:
            user = by_email(email)
    if not user.email_verified:
        user.email_verified = True
    return user


def normalize_phone(value) -> str | None:
    """E.164-ish: keep a leading + and the digits, so '+1 (555) 010-2000' matches '+15550102000'."""
    if not isinstance(value, str):
        return None
    digits = "".join(c for c in value if c.isdigit())
    if not 5 <= len(digits) <= 20:
        return None
    return ("+" if value.strip().startswith("+") else "") + digits


# The first two rules of the resolution order as parts of a statement, so that the ID-JAG registration
# reads them in the same SELECT as its delegation (bind parameters "iss", "sub" and "email"), built once:
# the user behind the earliest delegation of (iss, sub), and the user with this email (an outer join).
_users = User.__table__
_prior = Delegation.__table__.alias("prior")
PRIOR_USER = (db.select(_users.c.id).join(_prior, _prior.c.user_id == _users.c.id)
              .where(_prior.c.iss == db.bindparam("iss"), _prior.c.sub == db.bindparam("sub"))
              .order_by(_prior.c.id).limit(1).correlate(None).scalar_subquery().label("prior_user_id"))
EMAIL_USER = _users.alias("email_user")
EMAIL_USER_ON = EMAIL_USER.c.email == db.bindparam("email")
_BY_PHONE = Prepared(db.select(_users.c.id, _users.c.phone_verified).where(_users.c.phone == db.bindparam("phone"))
                    .order_by(_users.c.id).limit(1))


def plan_for_delegation(prior_user_id, email_user, *, email=None, phone=None) -> tuple:
    """Who an ID-JAG speaks for, in the spec's order, decided without a write: a prior delegation with the
    same (iss, sub) (prior_user_id, read through PRIOR_USER); else the user with this verified email
    (email_user: its (id, email_verified) read through EMAIL_USER, or None); else the user with this
    verified phone (read here, only when it decides); else a user to provision just in time, or 400
    user_not_provisioned when only existing users may register agents.
    email/phone are passed only when the provider asserted them verified (email_user is read with that
    email). Returns (action, user_id) for provision(), so the ID-JAG registration can do every write in
    one burst.
    action: "use" (nothing to write), "verify_email" / "verify_phone" (mark the found user's address
    verified), "provision_email" / "provision_phone" (a user provisioned just in time)."""
    if prior_user_id is not None:
        return "use", prior_user_id
    if email and email_user is not None:
        user_id, verified = email_user
        return ("use" if verified else "verify_email"), user_id
    if phone:
        row = _BY_PHONE.first({"phone": phone})
        if row is not None:
            user_id, verified = row
            return ("use" if verified else "verify_phone"), user_id
    _refuse_new_user()
    return ("provision_email" if email else "provision_phone"), None


# the writes of provision(), on the session's transaction (bind parameter "user_id" names the user to update)
_SET_EMAIL_VERIFIED = Prepared(_users.update().where(_users.c.id == db.bindparam("user_id"))
                               .values(email_verified=True))
_SET_PHONE_VERIFIED = Prepared(_users.update().where(_users.c.id == db.bindparam("user_id"))
                               .values(phone_verified=True))
_BY_EMAIL = Prepared(db.select(_users.c.id, _users.c.email_verified).where(_users.c.email == db.bindparam("email")))
_INSERT = Prepared(_users.insert().returning(_users.c.id))
_INSERT_BY_EMAIL = Prepared(lambda dialect: on_conflict_do_nothing(dialect, _users, _users.c.id))


def provision(plan: tuple, *, email=None, phone=None, now=None) -> int:
    """The writes planned by plan_for_delegation(), as Core statements in the session's transaction
    (rawsql.Prepared); returns the user id.
    A user provisioned by email is race-safe on the unique email: INSERT … ON CONFLICT DO NOTHING, and
    when a concurrent twin won (another worker or node on PostgreSQL; on SQLite one that committed
    between our reads and our writer lock), its row is read back and used, as find_or_provision_by_email does."""
    action, user_id = plan
    if action == "verify_email":
        _SET_EMAIL_VERIFIED.execute({"user_id": user_id})
    elif action == "verify_phone":
        _SET_PHONE_VERIFIED.execute({"user_id": user_id})
    elif action == "provision_email":
        won = _INSERT_BY_EMAIL.first(dict(email=email, email_verified=True, created_at=now or utcnow(),
                                          source="id_jag"))
        if won is not None:
            user_id = won[0]
        else:
            user_id, verified = _BY_EMAIL.first({"email": email})
            if not verified:
                _SET_EMAIL_VERIFIED.execute({"user_id": user_id})
    elif action == "provision_phone":  # no unique phone: nothing to race for
        user_id = _INSERT.first(dict(email=None, email_verified=False, phone=phone, phone_verified=True,
                                     created_at=now or utcnow(), source="id_jag"))[0]
    return user_id


# --- an admin's changes to an account: (column, new value, audit event), one implementation each -------------
_ACCOUNT_CHANGES = {"disable": ("is_active", False, "user.disabled"), "enable": ("is_active", True, "user.enabled"),
                    "promote": ("is_admin", True, "user.promoted"), "demote": ("is_admin", False, "user.demoted")}
# an admin who disables or demotes their own account can lock everyone out of the console
_NOT_ON_ONESELF = ("disable", "demote")


def account_change_refused(action: str, user_id: int, by_user_id) -> str | None:
    """Why the admin by_user_id may not do this to the account, or None (a confirmation page asks first)."""
    if action in _NOT_ON_ONESELF and user_id == by_user_id:
        return "You cannot do that to your own account."
    return None


def _change_account(action: str, user_id: int, by_user_id, who: dict) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise ProtocolError(404, "not_found", f"No user #{user_id}.")
    refused = account_change_refused(action, user.id, by_user_id)
    if refused:
        raise ProtocolError(409, "invalid_request", refused)
    column, value, event = _ACCOUNT_CHANGES[action]
    setattr(user, column, value)
    if action in ("disable", "demote"):
        end_sessions(user)  # every session of the account ends, a copied cookie too
    audit.record(event, "admin", user_id=user.id, **who)
    return user


def disable(user_id: int, *, by_user_id=None, actor_id=None, ip=None, user_agent=None) -> User:
    """Every credential of the user stops working at once (the hot path checks the account) and the user can
    no longer sign in."""
    return _change_account("disable", user_id, by_user_id, dict(actor_id=actor_id, ip=ip, user_agent=user_agent))


def enable(user_id: int, *, by_user_id=None, actor_id=None, ip=None, user_agent=None) -> User:
    return _change_account("enable", user_id, by_user_id, dict(actor_id=actor_id, ip=ip, user_agent=user_agent))


def promote(user_id: int, *, by_user_id=None, actor_id=None, ip=None, user_agent=None) -> User:
    return _change_account("promote", user_id, by_user_id, dict(actor_id=actor_id, ip=ip, user_agent=user_agent))


def demote(user_id: int, *, by_user_id=None, actor_id=None, ip=None, user_agent=None) -> User:
    return _change_account("demote", user_id, by_user_id, dict(actor_id=actor_id, ip=ip, user_agent=user_agent))
