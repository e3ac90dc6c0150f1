"""Latest claims room: the claim ceremony of the latest protocol. The agent starts an attempt naming the
person (login_hint) and hands them the attempt's verification_uri; the person, signed in as that address,
presses Authorize on the claim page, which shows a six-digit user_code once; the agent submits the code.

Codes are stored as keyed digests (as v0.1's), the attempt token as a SHA-256 digest. An attempt lives
claim_link_ttl; a code user_code_ttl. Five wrong codes kill the attempt, twenty the registration (429
too_many_attempts).
"""
import hashlib
import hmac
import re
from datetime import timedelta

from flask import current_app
from sqlalchemy import update

from . import agent_text, audit, scopes, settings, users
from .extensions import db
from .models import ClaimAttempt, Registration, TrustedIssuer, User
from .secrets import digest, new_id, new_otp, new_token
from .users import normalize_email
from .util import ProtocolError, iso, utcnow

ENDED = ("expired", "revoked")
MAX_FAILURES_PER_ATTEMPT = 5
MAX_FAILURES_PER_REGISTRATION = 20
USER_CODE = re.compile(r"\d{6}")


def claim_url() -> str:
    return current_app.config["ISSUER"] + "/agent/identity/claim"


def verification_uri(attempt_token: str) -> str:
    return current_app.config["ISSUER"] + "/claim?claim_attempt_token=" + attempt_token


def code_digest(code: str) -> str:
    # keyed, so a leaked table does not give away six-digit codes by brute force
    return hmac.new(current_app.config["SECRET_KEY"].encode(), code.encode(), hashlib.sha256).hexdigest()


def start_attempt(reg: Registration, login_hint: str, *, protocol: str = "latest", ip=None, user_agent=None,
                  now=None) -> dict:
    """A new attempt for a registration (earlier ones die): the answer's `attempt` block. Caller commits.
    With "existing users only", an address that names nobody is refused here (400 user_not_provisioned),
    before anything is written: the person could never sign in to confirm it."""
    now = now or utcnow()
    users.require_resolvable(login_hint)
    db.session.execute(update(ClaimAttempt).where(ClaimAttempt.registration_id == reg.id,
                                                  ClaimAttempt.status == "initiated")
                       .values(status="superseded").execution_options(synchronize_session=False))
    token = new_token("cvt_", 32)
    attempt = ClaimAttempt(id=new_id("cla_"), registration_id=reg.id, email=login_hint, protocol=protocol,
                           link_token_digest=digest(token),
                           link_expires_at=now + timedelta(seconds=int(settings.get("claim_link_ttl"))),
                           status="initiated", delivered=True, created_at=now, ip=ip,
                           user_agent=(user_agent or None) and user_agent[:300])
    db.session.add(attempt)
    db.session.flush()
    audit.record("claim.requested", "agent", registration_id=reg.id, claim_attempt_id=attempt.id,
                 login_hint=login_hint, protocol=protocol, ip=ip, user_agent=user_agent)
    return {"verification_uri": verification_uri(token), "expires_at": iso(attempt.link_expires_at)}


def _registration(claim_token, *, unknown: ProtocolError, lock: bool = True) -> Registration:
    """The latest registration of a claim token (row-locked on PostgreSQL, the writer lock taken on SQLite,
    so concurrent claims and completions on one registration run one at a time)."""
    if not isinstance(claim_token, str) or not claim_token.startswith("clm_") or len(claim_token) > 200:
        raise unknown
    from .claims import registration_by_claim_token
    try:  # a claim token works only in the family that issued it
        return registration_by_claim_token(claim_token, lock=lock, protocol="latest")
    except ProtocolError:
        raise unknown from None


def _expire_if_due(reg: Registration, now) -> None:
    from .lifecycle import expire_if_due
    expire_if_due(reg, now)


def request(claim_token, login_hint: str, *, ip=None, user_agent=None) -> dict:
    """POST /agent/identity/claim: a new attempt for the person named. Caller commits."""
    now = utcnow()
    reg = _registration(claim_token, unknown=ProtocolError(401, "invalid_claim_token",
                                                            "The claim token is not known."))
    _expire_if_due(reg, now)
    if reg.status in ENDED:
        raise ProtocolError(410, "claim_expired", "This registration can no longer be claimed; register again.")
    if reg.status != "pending":
        raise ProtocolError(409, "already_claimed", "This registration is already claimed.")
    attempt = start_attempt(reg, login_hint, ip=ip, user_agent=user_agent, now=now)
    return {"id": reg.id, "type": "service_auth", "attempt": attempt}


# ---------------------------------------------------------------- the person's side (the claim page)

def attempt_by_token(attempt_token) -> ClaimAttempt | None:
    """The latest attempt of a cvt_ token (v0.1's emailed links carry cvt_ tokens too: never one of those)."""
    if not isinstance(attempt_token, str) or not attempt_token.startswith("cvt_") or len(attempt_token) > 200:
        return None
    attempt = db.session.execute(db.select(ClaimAttempt).where(
        ClaimAttempt.link_token_digest == digest(attempt_token))).scalar()
    return attempt if attempt is not None and attempt.protocol == "latest" else None


def addressed_to(attempt: ClaimAttempt, user) -> bool:
    """Whether user is the person the attempt names (its login_hint), both in normalize_email's form."""
    try:
        return bool(user is not None and user.email) and normalize_email(user.email) == normalize_email(attempt.email)
    except ProtocolError:
        return False


def attempt_for_user(attempt_id, user) -> ClaimAttempt:
    """A latest attempt by id for the person it names (the portal's buttons); 404 for anything else, a v0.1
    attempt included, as for one that does not exist."""
    known = isinstance(attempt_id, str) and len(attempt_id) <= 40
    attempt = db.session.get(ClaimAttempt, attempt_id) if known else None
    if attempt is None or attempt.protocol != "latest" or not addressed_to(attempt, user):
        raise ProtocolError(404, "not_found", "There is no such claim request for your address.")
    return attempt


def describe(attempt: ClaimAttempt) -> dict:
    """Who asks, for the claim page and the portal. `reported` (the agent's User-Agent) and `platform` (the
    agent_platform an ID-JAG names) are the agent's own words: defanged and capped (agent_text), shown quoted
    under a "self-reported" label. ip and time are the service's own observations; `issuer` (a step-up's
    provider) was checked against the trust list, its `issuer_name` the admin's name for it. `scopes` are what
    the agent gets once the person confirms; `linked_at_once`: born at v0.1's /agent/auth, Authorize links."""
    reg = attempt.registration
    out = {"email": attempt.email, "kind": reg.type, "linked_at_once": reg.protocol == "v0.1",
           "reported": agent_text.self_reported(attempt.user_agent or reg.user_agent),
           "platform": None, "issuer": None, "issuer_name": None,
           "ip": attempt.ip or reg.ip or "unknown", "time": iso(attempt.created_at),
           "expires_at": iso(attempt.link_expires_at)}
    if reg.type == "agent-provider":
        from .idjag import granted_scopes
        row = db.session.execute(db.select(TrustedIssuer).where(TrustedIssuer.issuer == reg.iss)).scalar()
        out.update(issuer=reg.iss, issuer_name=row.name if row is not None else None,
                   platform=agent_text.self_reported(reg.agent_platform),
                   scopes=granted_scopes(row) if row is not None and row.enabled else [])
    else:
        out["scopes"] = scopes.post_claim()
    return out


def state(attempt: ClaimAttempt, now=None) -> str:
    """What the claim page shows: open | confirmed | claimed | denied | superseded | expired."""
    now = now or utcnow()
    reg = attempt.registration
    _expire_if_due(reg, now)
    if reg.status in ("claimed", "active") or attempt.status == "completed":
        return "claimed"
    if attempt.status == "denied":
        return "denied"
    if attempt.status == "superseded" and reg.status not in ENDED:
        return "superseded"
    if reg.status in ENDED or attempt.status != "initiated" or attempt.link_expires_at <= now:
        return "expired"
    return "confirmed" if attempt.confirmed_at is not None else "open"


def _check_addressed_to(attempt: ClaimAttempt, user) -> None:
    if not addressed_to(attempt, user):
        raise ProtocolError(403, "wrong_account", "This claim request is for another address: sign in as "
                                                  "the person it names.")


def authorize(attempt: ClaimAttempt, user, *, ip=None, user_agent=None) -> dict:
    """The signed-in person presses Authorize: a fresh user_code for the agent (shown once), or, for an
    attempt born at v0.1's /agent/auth (whose agent has nowhere to submit a code), the delegation bound at
    once. Returns {"user_code", "expires_at"} or {"linked": True}. Caller commits."""
    now = utcnow()
    _check_addressed_to(attempt, user)
    current = state(attempt, now)
    if current not in ("open", "confirmed"):
        raise ProtocolError(409 if current == "claimed" else 410, "claim_" + current,
                            "This claim request can no longer be confirmed.")
    attempt.confirmed_at, attempt.confirmed_user_id = now, user.id
    if attempt.registration.protocol == "v0.1":  # a step-up born at /agent/auth
        from . import stepup
        stepup.bind_confirmed(attempt, user, now=now, ip=ip, user_agent=user_agent)
        return {"linked": True}
    won = db.session.execute(
        update(ClaimAttempt).where(ClaimAttempt.id == attempt.id, ClaimAttempt.otp_minted_count < 5)
        .values(otp_minted_count=ClaimAttempt.otp_minted_count + 1)
        .execution_options(synchronize_session=False)).rowcount
    if not won:
        raise ProtocolError(429, "rate_limited", "At most 5 codes per claim request; ask the agent to start a new one.")
    code = new_otp()
    attempt.otp_digest = code_digest(code)
    attempt.otp_expires_at = now + timedelta(seconds=int(settings.get("user_code_ttl")))
    attempt.otp_failed_count = 0
    audit.record("user_code.revealed", "user", actor_id=user.id, registration_id=attempt.registration_id,
                 user_id=user.id, claim_attempt_id=attempt.id, confirmed_by_user_id=user.id, protocol="latest",
                 ip=ip, user_agent=user_agent)
    return {"user_code": code, "expires_at": iso(attempt.otp_expires_at)}


def deny(attempt: ClaimAttempt, user, *, ip=None, user_agent=None) -> None:
    """"This wasn't me": the attempt is dead; the agent's completion answers claim_denied. Caller commits."""
    _check_addressed_to(attempt, user)
    if state(attempt) not in ("open", "confirmed"):
        raise ProtocolError(410, "claim_expired", "This claim request is no longer open.")
    attempt.status = "denied"
    attempt.otp_digest = None
    audit.record("claim.denied", "user", actor_id=user.id, user_id=user.id, registration_id=attempt.registration_id,
                 claim_attempt_id=attempt.id, protocol="latest", ip=ip, user_agent=user_agent)


# ---------------------------------------------------------------- the agent completes

def complete(claim_token, user_code, *, ip=None, user_agent=None) -> dict:
    """POST /agent/identity/claim/complete. Returns (registration, the confirming user) after binding them;
    the caller (authmd.identity) hands out the assertion and the refresh token. Caller commits."""
    from .tx import commit_on_error
    now = utcnow()
    reg = _registration(claim_token, unknown=ProtocolError(400, "invalid_claim", "The claim token is not known."))
    _expire_if_due(reg, now)
    if reg.status in ("claimed", "active"):
        raise ProtocolError(409, "already_claimed", "This registration is already claimed.")
    if reg.status in ENDED or reg.failed_otp_count >= MAX_FAILURES_PER_REGISTRATION:
        raise ProtocolError(410, "claim_expired", "This registration can no longer be claimed; register again.")
    attempt = db.session.execute(db.select(ClaimAttempt).where(
        ClaimAttempt.registration_id == reg.id, ClaimAttempt.protocol == "latest",
        ClaimAttempt.status.in_(("initiated", "denied")))
        .order_by(ClaimAttempt.created_at.desc())).scalars().first()
    if attempt is None or (attempt.status == "initiated" and attempt.link_expires_at <= now
                           and attempt.confirmed_at is None):
        raise ProtocolError(410, "claim_expired", "There is no open claim request; start one at the claim endpoint.")
    if attempt.status == "denied":
        raise ProtocolError(403, "claim_denied", "The person refused this agent; ask them, then start a new claim.")
    if attempt.confirmed_at is None or attempt.otp_digest is None:
        raise ProtocolError(409, "claim_not_confirmed",
                            "The person has not confirmed yet: they open the verification_uri, sign in and press "
                            "Authorize; then submit the code the page shows.")
    if not isinstance(user_code, str) or not USER_CODE.fullmatch(user_code):
        raise ProtocolError(400, "invalid_request", "user_code must be the six digits the claim page shows.")
    if attempt.otp_expires_at <= now:
        raise ProtocolError(410, "user_code_expired", "The code has expired: start a new claim request at the "
                                                      "claim endpoint, and the person confirms again.")
    if attempt.otp_failed_count >= MAX_FAILURES_PER_ATTEMPT:
        raise ProtocolError(429, "too_many_attempts", "Too many wrong codes: start a new claim request.")
    if not hmac.compare_digest(code_digest(user_code), attempt.otp_digest):
        attempt.otp_failed_count += 1
        reg.failed_otp_count += 1
        audit.record("otp.failed", "agent", registration_id=reg.id, claim_attempt_id=attempt.id,
                     failures=reg.failed_otp_count, protocol="latest", ip=ip, user_agent=user_agent)
        dead = (attempt.otp_failed_count >= MAX_FAILURES_PER_ATTEMPT
                or reg.failed_otp_count >= MAX_FAILURES_PER_REGISTRATION)
        if reg.failed_otp_count >= MAX_FAILURES_PER_REGISTRATION:
            audit.record("claim.locked", "system", registration_id=reg.id, failures=reg.failed_otp_count,
                         protocol="latest")
        commit_on_error()  # the count lands with the refusal, under the registration's lock
        if dead:
            raise ProtocolError(429, "too_many_attempts", "Too many wrong codes: start a new claim request.")
        raise ProtocolError(401, "invalid_user_code", "The code is not correct.")
    user = db.session.get(User, attempt.confirmed_user_id)
    if user is None or not user.is_active:
        raise ProtocolError(410, "claim_expired", "The person who confirmed can no longer sign in here.")
    attempt.status, attempt.otp_digest = "completed", None
    return reg, user
