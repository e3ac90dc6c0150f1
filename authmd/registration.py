"""Registration room: anonymous and email-required registrations (ID-JAG lives in trust/idjag)."""
from datetime import timedelta

from . import audit, claims, credentials, scopes, settings, users
from .extensions import db
from .models import Registration
from .rawsql import Prepared
from .secrets import digest, new_id, new_token
from .util import ProtocolError, iso, utcnow

CREDENTIAL_TYPES = {"anonymous": ("api_key",), "verified_email": ("api_key", "access_token")}


def _new_registration(reg_type: str, *, ip=None, user_agent=None, email=None,
                      requested_credential_type="api_key", now=None) -> tuple[Registration, str]:
    now = now or utcnow()
    claim_token = new_token("clm_", 32)
    reg = Registration(id=new_id("reg_"), type=reg_type, status="pending", email=email,
                       requested_credential_type=requested_credential_type,
                       claim_token_digest=digest(claim_token),
                       claim_expires_at=now + timedelta(seconds=int(settings.get("registration_ttl"))),
                       created_at=now, ip=ip, user_agent=(user_agent or None) and user_agent[:300])
    db.session.add(reg)
    return reg, claim_token


# A registration row, written through rawsql by every registration path of both protocols.
INSERT = Prepared(Registration.__table__.insert())


def register_anonymous(requested_credential_type, *, ip=None, user_agent=None) -> dict:
    # Every statement runs through rawsql (SQLAlchemy's per-statement work cost more than the database),
    # in the session's one transaction; the caller commits.
    conn = db.session.connection()
    cfg = settings.all_settings(conn)
    if not cfg["anonymous_enabled"]:
        raise ProtocolError(400, "anonymous_not_enabled", "Anonymous registration is switched off here.")
    if requested_credential_type not in CREDENTIAL_TYPES["anonymous"]:
        raise ProtocolError(400, "unsupported_credential_type",
                            "Anonymous registration offers only requested_credential_type \"api_key\".")
    now = utcnow()
    pre, post = scopes.pre_and_post_claim(conn)  # one read of the scopes for both lists
    # Everything is built first, then written in one burst: on SQLite the writer lock is held from the
    # first INSERT to the commit, so that stretch is kept as short as it can be (the write lock
    # serializes every registration; bench/README.md).
    reg_id, claim_token = new_id("reg_"), new_token("clm_", 32)
    claim_expires = now + timedelta(seconds=int(cfg["registration_ttl"]))
    reg = dict(id=reg_id, type="anonymous", status="pending", email=None, requested_credential_type="api_key",
               claim_token_digest=digest(claim_token), claim_expires_at=claim_expires, created_at=now,
               ip=ip, user_agent=(user_agent or None) and user_agent[:300])
    cred, secret = credentials.new_values(reg_id, "api_key", pre, now=now)
    created = audit.values("registration.created", "agent", registration_id=reg_id,
                           registration_type="anonymous", scopes=pre, now=now, ip=ip, user_agent=user_agent,
                           protocol="v0.1")
    INSERT.execute(reg, conn)
    cred_id = credentials.INSERT.first(cred, conn)[0]
    issued = audit.values("credential.issued", "agent", registration_id=reg_id, credential_id=cred_id,
                          credential_prefix=cred["prefix"], credential_type="api_key", scopes=pre, now=now,
                          ip=ip, user_agent=user_agent, protocol="v0.1")
    audit.insert([created, issued], conn)
    return {"registration_id": reg_id, "registration_type": "anonymous",
            "credential_type": "api_key", "credential": secret, "credential_expires": None,
            "scopes": pre, "claim_url": claim_url(), "claim_token": claim_token,
            "claim_token_expires": iso(claim_expires), "post_claim_scopes": post}


def register_verified_email(email: str, requested_credential_type, *, ip=None, user_agent=None) -> dict:
    """The registration and its claim attempt; the claim mail is queued: the caller commits, then calls
    mail.deliver_queued(), which ends the registration and raises 503 if the mail cannot be delivered."""
    if not settings.get("verified_email_enabled"):
        raise ProtocolError(400, "verified_email_not_enabled", "Email registration is switched off here.")
    if requested_credential_type not in CREDENTIAL_TYPES["verified_email"]:
        raise ProtocolError(400, "unsupported_credential_type",
                            "requested_credential_type must be \"api_key\" or \"access_token\".")
    users.require_resolvable(email)  # "existing users only": refused before a registration or a mail
    now = utcnow()
    reg, claim_token = _new_registration("email-verification", ip=ip, user_agent=user_agent, email=email,
                                         requested_credential_type=requested_credential_type, now=now)
    db.session.flush()
    audit.record("registration.created", "agent", registration_id=reg.id,
                 registration_type="email-verification", email=email, ip=ip, user_agent=user_agent,
                 protocol="v0.1")
    claims.start_attempt(reg, email, ip=ip, user_agent=user_agent, now=now)  # the mail leaves after the commit
    return {"registration_id": reg.id, "registration_type": "email-verification",
            "claim_url": claim_url(), "claim_token": claim_token,
            "claim_token_expires": iso(reg.claim_expires_at), "post_claim_scopes": scopes.post_claim()}


def claim_url() -> str:
    from flask import current_app
    return current_app.config["ISSUER"] + "/agent/auth/claim"
