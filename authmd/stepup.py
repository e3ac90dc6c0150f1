"""Takeover guard room: an ID-JAG that would link a provider identity to an existing account by a verified
email (or phone) alone waits until that account's owner confirms on the claim page.

Without it, anyone who controls a provider account asserting someone's email would be linked to that
person's account here (v0.1 linked silently; the latest protocol answers interaction_required). The
token is spent (its jti recorded) and three rows wait for the person: the (iss, sub, aud) delegation with
no user yet, a pending agent-provider registration pointing at it, and a claim attempt naming the
account's email. At /agent/identity the agent gets the claim block and completes with the code the page
shows; at /agent/auth (v0.1) the agent gets the link in the message, the page binds the delegation when
the person presses Authorize, and the agent's next fresh ID-JAG is a clean match.
"""
from datetime import timedelta

from . import audit, latest_claims, settings, tx
from .trust import verify as trust
from .extensions import db
from .models import Delegation, Registration, User
from .rawsql import insert_on_conflict_do_nothing
from .secrets import digest, new_id, new_token
from .util import ProtocolError, iso, utcnow

MESSAGE = ("This provider identity is not linked to the account with the same verified email here yet. "
           "The account's owner must confirm: they open {uri}, sign in and press Authorize.")


def _challenge(description: str) -> dict:
    return {"WWW-Authenticate": f'AgentAuth error="interaction_required", error_description="{description}"'}


def refuse(checked, user_id: int, *, protocol: str, ip=None, user_agent=None):
    """Spend the token, set up the claim that links it, and raise 401 interaction_required (the rows land
    with the refusal: tx.commit_on_error)."""
    email = db.session.execute(db.select(User.email).where(User.id == user_id)).scalar()
    if not email:  # matched by phone, and no address to sign in with: nobody can confirm here
        raise ProtocolError(401, "interaction_required",
                            "This provider identity matches an account here by phone number, and that account "
                            "has no email address to confirm with: ask an administrator.")
    now = utcnow()
    trust.insert_jti(checked.iss, checked.claims["jti"], checked.keep_until)
    delegation_id = _unbound_delegation(checked, now)
    reg, claim_token = _pending_registration(checked, delegation_id, protocol, email, now, ip, user_agent)
    attempt = latest_claims.start_attempt(reg, email, ip=ip, user_agent=user_agent, now=now)
    audit.record("registration.created", "agent", registration_id=reg.id, iss=checked.iss, sub=checked.sub,
                 agent_platform=checked.platform, agent_context_id=checked.context, protocol=protocol,
                 registration_type="agent-provider", step_up=True, ip=ip, user_agent=user_agent)
    tx.commit_on_error()
    message = MESSAGE.format(uri=attempt["verification_uri"])
    description = "The account with this verified email must confirm the link."
    if protocol == "v0.1":
        raise ProtocolError(401, "interaction_required", message, _challenge(description),
                            extra={"verification_uri": attempt["verification_uri"]})
    raise ProtocolError(401, "interaction_required", message, _challenge(description), extra={
        "error_description": description, "id": reg.id, "type": "identity_assertion",
        "scopes": {"post_claim": checked.granted},
        "claim": {"token": claim_token, "expires_at": iso(reg.claim_expires_at), "url": latest_claims.claim_url(),
                  "attempt": attempt}})


def _unbound_delegation(checked, now) -> int:
    """The (iss, sub, aud) delegation, created without a user when there is none (a concurrent twin's wins)."""
    if checked.found is not None:
        return checked.found[0]
    stmt = insert_on_conflict_do_nothing(Delegation.__table__, Delegation.__table__.c.id)
    row = db.session.execute(stmt, dict(iss=checked.iss, sub=checked.sub, aud=checked.aud, user_id=None,
                                        agent_platform=checked.platform, agent_context_id=checked.context,
                                        first_seen=now, last_seen=now)).first()
    if row is not None:
        return row[0]
    return db.session.execute(db.select(Delegation.id).where(
        Delegation.iss == checked.iss, Delegation.sub == checked.sub, Delegation.aud == checked.aud)).scalar_one()


def _pending_registration(checked, delegation_id, protocol, email, now, ip, user_agent):
    """The delegation's registration of this protocol family, (re)opened as pending with a new claim token."""
    claim_token = new_token("clm_", 32)
    values = dict(status="pending", claim_token_digest=digest(claim_token), user_id=None, claimed_at=None,
                  ended_at=None, email=email, failed_otp_count=0,
                  claim_expires_at=now + timedelta(seconds=int(settings.get("registration_ttl"))),
                  ip=ip, user_agent=(user_agent or None) and user_agent[:300])
    if checked.platform:
        values["agent_platform"] = checked.platform
    reg = db.session.execute(db.select(Registration).where(
        Registration.delegation_id == delegation_id, Registration.protocol == protocol,
        Registration.type == "agent-provider").order_by(Registration.created_at).limit(1)).scalar()
    if reg is None:
        reg = Registration(id=new_id("reg_"), type="agent-provider", protocol=protocol, created_at=now,
                           delegation_id=delegation_id, iss=checked.iss, **values)
        db.session.add(reg)
    else:
        for key, value in values.items():
            setattr(reg, key, value)
    db.session.flush()
    if protocol == "v0.1":  # v0.1 finds a delegation's registration through the delegation
        db.session.execute(db.update(Delegation).where(Delegation.id == delegation_id)
                           .values(registration_id=reg.id).execution_options(synchronize_session=False))
    return reg, claim_token


def bind(registration: Registration, user: User, now) -> None:
    """Link the registration's delegation to the person who confirmed (if no one else's meanwhile)."""
    won = db.session.execute(db.update(Delegation).where(Delegation.id == registration.delegation_id,
                                                         Delegation.user_id.is_(None))
                             .values(user_id=user.id, last_seen=now, revoked_at=None)
                             .execution_options(synchronize_session=False)).rowcount
    if not won:
        owner = db.session.execute(db.select(Delegation.user_id).where(
            Delegation.id == registration.delegation_id)).scalar()
        if owner != user.id:
            raise ProtocolError(409, "already_claimed", "This provider identity is already linked to another account.")


def bind_confirmed(attempt, user: User, *, now, ip=None, user_agent=None) -> None:
    """Authorize on an attempt born at /agent/auth: link now; the v0.1 agent's next ID-JAG is a clean match."""
    reg = attempt.registration
    bind(reg, user, now)
    # linked: no claim deadline any more (the expiry job must not end it before the agent comes back); it
    # holds no credential until the agent's next ID-JAG, which finds it through the delegation
    reg.user_id, reg.claimed_at, reg.claim_token_digest, reg.claim_expires_at = user.id, now, None, None
    reg.status = "active"
    attempt.status = "completed"
    audit.record("claim.confirmed", "user", actor_id=user.id, user_id=user.id, registration_id=reg.id,
                 claim_attempt_id=attempt.id, claimed_by_user_id=user.id, protocol="v0.1", step_up=True,
                 ip=ip, user_agent=user_agent)
