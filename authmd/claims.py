"""Claims room: claim attempts, code minting and checking, lockout, expiry."""
import hashlib
import hmac
from datetime import timedelta

from flask import current_app
from sqlalchemy import update

from . import agent_text, audit, credentials, lifecycle, mail, scopes, settings, tx
from .extensions import db
from .lifecycle import expire_if_due
from .models import ClaimAttempt, Credential, Registration
from .secrets import digest, new_id, new_otp, new_token
from .users import find_or_provision_by_email, require_resolvable
from .util import ProtocolError, iso, utcnow

ENDED = ("expired", "revoked")


def _otp_digest(otp: str) -> str:
    # keyed, so a leaked table does not give away six-digit codes by brute force
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, otp.encode(), hashlib.sha256).hexdigest()


def registration_by_claim_token(claim_token: str, lock: bool = False, protocol: str = "v0.1") -> Registration:
    """lock=True makes concurrent calls on one registration (/claim, /claim/complete) run one at a time and read
    what the previous one committed: a row lock on PostgreSQL; on SQLite, which has no row locks, a no-op write
    that takes the database write lock before anything is read. A claim token works only in the protocol
    family that issued it (protocol)."""
    reg = _registration_where(db.and_(Registration.claim_token_digest == digest(claim_token),
                                      Registration.protocol == protocol), lock)
    if reg is None:
        raise ProtocolError(401, "invalid_claim_token", "The claim token is not known.")
    return reg


def _registration_where(condition, lock: bool) -> Registration | None:
    query = db.select(Registration).where(condition)
    if lock:
        if db.session.get_bind().dialect.name == "sqlite":
            db.session.execute(update(Registration).where(condition)
                               .values(status=Registration.status).execution_options(synchronize_session=False))
        query = query.with_for_update()
    return db.session.execute(query).scalar()


def is_locked(reg: Registration) -> bool:
    return reg.failed_otp_count >= int(settings.get("otp_max_failures_per_registration"))


def _check_claimable(reg: Registration, now) -> None:
    expire_if_due(reg, now)
    if reg.status == "claimed" or reg.type != "anonymous":
        raise ProtocolError(409, "claimed_or_in_flight",
                            "This registration is already claimed or is claimed through its own email flow.")
    if reg.status in ENDED or is_locked(reg):
        raise ProtocolError(410, "claim_expired", "This registration can no longer be claimed.")


def request_claim(claim_token: str, email: str, *, ip=None, user_agent=None) -> dict:
    now = utcnow()
    reg = registration_by_claim_token(claim_token, lock=True)
    _check_claimable(reg, now)
    require_resolvable(email)  # "existing users only": refused now, before a mail goes out
    denied = db.session.execute(db.select(ClaimAttempt.id).where(
        ClaimAttempt.registration_id == reg.id, ClaimAttempt.protocol == "v0.1", ClaimAttempt.email == email,
        ClaimAttempt.status == "denied")).first()
    if denied:
        raise ProtocolError(403, "claim_denied",
                            "The owner of this address refused to be bound to this agent; use another address.")
    current = db.session.execute(db.select(ClaimAttempt).where(
        ClaimAttempt.registration_id == reg.id, ClaimAttempt.protocol == "v0.1", ClaimAttempt.status == "initiated")
        .order_by(ClaimAttempt.created_at.desc())).scalars().first()
    if (current is not None and current.email == email and current.delivered
            and current.link_expires_at > now):
        return _attempt_answer(current)  # idempotent repeat: same attempt, no second email
    limit = int(settings.get("claim_max_attempts_per_hour"))
    recent = db.session.execute(db.select(db.func.count()).select_from(ClaimAttempt).where(
        ClaimAttempt.registration_id == reg.id, ClaimAttempt.protocol == "v0.1",
        ClaimAttempt.created_at > now - timedelta(hours=1),
        ClaimAttempt.status != "failed")).scalar()  # a mail that never left does not count
    if recent >= limit:
        # per registration, counted in the database: one agent cannot mail-bomb addresses from many IPs
        raise ProtocolError(429, "rate_limited",
                            f"At most {limit} claim emails an hour for one registration; retry later.",
                            {"Retry-After": "3600"})
    attempt = start_attempt(reg, email, ip=ip, user_agent=user_agent, now=now)
    return _attempt_answer(attempt)


def _attempt_answer(attempt: ClaimAttempt) -> dict:
    return {"registration_id": attempt.registration_id, "claim_attempt_id": attempt.id,
            "status": "initiated", "expires_at": iso(attempt.link_expires_at)}


def start_attempt(reg: Registration, email: str, *, ip=None, user_agent=None, now=None) -> ClaimAttempt:
    """Supersede earlier attempts, create a new one and queue the mail with its link. Caller commits, then
    calls mail.deliver_queued(), which undoes the attempt (_mail_failed) and raises 503 if the mail fails."""
    now = now or utcnow()
    superseded = list(db.session.execute(db.select(ClaimAttempt.id).where(
        ClaimAttempt.registration_id == reg.id, ClaimAttempt.status == "initiated")).scalars())
    if superseded:
        db.session.execute(update(ClaimAttempt).where(ClaimAttempt.id.in_(superseded))
                           .values(status="superseded").execution_options(synchronize_session=False))
    link_token = new_token("cvt_", 32)
    attempt = ClaimAttempt(id=new_id("cla_"), registration_id=reg.id, email=email,
                           link_token_digest=digest(link_token),
                           link_expires_at=now + timedelta(seconds=int(settings.get("claim_link_ttl"))),
                           status="initiated", delivered=False, created_at=now, ip=ip,
                           user_agent=(user_agent or None) and user_agent[:300])
    db.session.add(attempt)
    db.session.flush()
    audit.record("claim.requested", "agent", registration_id=reg.id, claim_attempt_id=attempt.id,
                 email=email, ip=ip, user_agent=user_agent)
    link = current_app.config["ISSUER"] + "/agent/auth/claim/view?token=" + link_token
    subject, text, html = mail.render(
        "claim", link=link, email=email, registration=reg, attempt=attempt,
        service_name=settings.get("service_name"), expires=iso(attempt.link_expires_at),
        scopes=scopes.post_claim(), agent=agent_description(reg, attempt))
    attempt.delivered = mail.queue(email, subject, text, html, on_sent=(_mail_delivered, attempt.id),
                                   on_failure=(_mail_failed, reg.id, attempt.id, tuple(superseded)))
    return attempt


def _mail_delivered(attempt_id: str) -> None:
    """The claim mail left: a repeat /claim with the same address may now echo this attempt."""
    db.session.execute(update(ClaimAttempt).where(ClaimAttempt.id == attempt_id).values(delivered=True)
                       .execution_options(synchronize_session=False))


def _mail_failed(registration_id: str, attempt_id: str, superseded: tuple) -> None:
    """The claim mail could not be delivered (run after the request's commit, in a transaction of its own):
    the attempt is marked failed, so no page offers it and it does not count toward the hourly cap; the
    attempts it superseded are open again unless a newer one started meanwhile; an email-verification
    registration, whose claim token the agent never received, is ended."""
    reg = _registration_where(Registration.id == registration_id, lock=True)
    failed = db.session.execute(
        update(ClaimAttempt).where(ClaimAttempt.id == attempt_id, ClaimAttempt.status == "initiated")
        .values(status="failed").execution_options(synchronize_session=False)).rowcount
    audit.record("claim.mail_failed", "system", registration_id=registration_id, claim_attempt_id=attempt_id)
    if reg is None or not failed:
        return
    if reg.type != "anonymous":
        lifecycle.expire_registration(reg, reason="claim mail not delivered")
    elif superseded and db.session.execute(db.select(ClaimAttempt.id).where(
            ClaimAttempt.registration_id == reg.id, ClaimAttempt.status == "initiated")).first() is None:
        db.session.execute(update(ClaimAttempt).where(ClaimAttempt.id.in_(superseded),
                                                      ClaimAttempt.status == "superseded")
                           .values(status="initiated").execution_options(synchronize_session=False))


def agent_description(reg: Registration, attempt: ClaimAttempt | None = None) -> dict:
    """Who asks, for the claim mail and pages. `reported` is what the agent says it is (its User-Agent, or a
    provider's free-text agent_platform): defanged and capped (agent_text), to be shown quoted under a
    "self-reported" label, never as the service's words; None when it said nothing. ip and time are the
    service's own observations."""
    said = reg.agent_platform or (attempt and attempt.user_agent) or reg.user_agent
    return {"reported": agent_text.self_reported(said),
            "ip": (attempt and attempt.ip) or reg.ip or "unknown",
            "time": iso((attempt and attempt.created_at) or reg.created_at)}


def attempt_by_link_token(link_token) -> ClaimAttempt | None:
    if not isinstance(link_token, str) or not link_token or len(link_token) > 200:
        return None
    return db.session.execute(  # v0.1's emailed links only: a latest attempt is confirmed signed in, at /claim
        db.select(ClaimAttempt).where(ClaimAttempt.link_token_digest == digest(link_token),
                                      ClaimAttempt.protocol == "v0.1")).scalar()


def attempt_state(attempt: ClaimAttempt, now=None) -> str:
    """One word for what the claim page and the challenge endpoint should do with this attempt."""
    now = now or utcnow()
    reg = attempt.registration
    expire_if_due(reg, now)
    if reg.status == "claimed":
        return "claimed"
    if attempt.status == "denied":
        return "denied"
    if attempt.status == "superseded" and reg.status not in ENDED:
        return "superseded"
    if reg.status in ENDED or is_locked(reg) or attempt.link_expires_at <= now or attempt.status != "initiated":
        return "expired"
    return "open"


def mint_code(link_token: str, *, ip=None, user_agent=None, actor_kind="user", actor_id=None) -> dict:
    """The claim page's button: a fresh code that replaces the previous one. Caller commits."""
    attempt = attempt_by_link_token(link_token)
    if attempt is None:
        raise ProtocolError(400, "invalid_request", "The claim attempt token is not known.")
    return _mint(attempt, ip=ip, user_agent=user_agent, actor_kind=actor_kind, actor_id=actor_id)


def attempt_for_email(attempt_id: str, email: str) -> ClaimAttempt:
    """A claim attempt addressed to this (signed-in, hence verified) email; else 404."""
    attempt = db.session.get(ClaimAttempt, attempt_id) if isinstance(attempt_id, str) else None
    if attempt is None or not email or attempt.email != email or attempt.protocol != "v0.1":
        raise ProtocolError(404, "not_found", "There is no such claim request for your address.")
    return attempt


def mint_code_for_attempt(attempt_id: str, email: str, *, ip=None, user_agent=None, actor_id=None) -> dict:
    """The portal's "Show code": the same minting as the emailed link's button. Caller commits."""
    return _mint(attempt_for_email(attempt_id, email), ip=ip, user_agent=user_agent, actor_kind="user",
                 actor_id=actor_id)


def _mint(attempt: ClaimAttempt, *, ip=None, user_agent=None, actor_kind="user", actor_id=None) -> dict:
    now = utcnow()
    state = attempt_state(attempt, now)
    if state == "claimed":
        raise ProtocolError(409, "claim_completed", "This registration has already been claimed.")
    if state == "superseded":
        raise ProtocolError(410, "claim_superseded", "A newer claim request replaced this one.")
    if state in ("expired", "denied"):
        raise ProtocolError(410, "claim_expired", "This claim link is no longer valid.")
    limit = int(settings.get("otp_max_per_attempt"))
    won = db.session.execute(
        update(ClaimAttempt).where(ClaimAttempt.id == attempt.id, ClaimAttempt.otp_minted_count < limit)
        .values(otp_minted_count=ClaimAttempt.otp_minted_count + 1)
        .execution_options(synchronize_session=False)).rowcount
    if not won:
        raise ProtocolError(429, "rate_limited",
                            f"At most {limit} codes per claim attempt; ask the agent to start a new claim.",
                            {"Retry-After": "600"})
    otp = new_otp()
    attempt.otp_digest = _otp_digest(otp)
    attempt.otp_expires_at = now + timedelta(seconds=int(settings.get("otp_ttl")))
    attempt.otp_failed_count = 0
    audit.record("otp.generated", actor_kind, actor_id=actor_id, registration_id=attempt.registration_id,
                 claim_attempt_id=attempt.id, ip=ip, user_agent=user_agent)
    return {"type": "otp", "challenge": otp, "expires_at": iso(attempt.otp_expires_at)}


def deny(link_token: str, *, actor_kind="user", actor_id=None, ip=None, user_agent=None) -> ClaimAttempt:
    """"This wasn't me": the attempt is dead and this email can no longer claim the registration."""
    attempt = attempt_by_link_token(link_token)
    if attempt is None:
        raise ProtocolError(400, "invalid_request", "The claim attempt token is not known.")
    return _deny(attempt, actor_kind=actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent)


def deny_for_attempt(attempt_id: str, email: str, *, actor_id=None, ip=None, user_agent=None) -> ClaimAttempt:
    """The portal's "This wasn't me", for a signed-in user whose email the attempt names. Caller commits."""
    return _deny(attempt_for_email(attempt_id, email), actor_kind="user", actor_id=actor_id, ip=ip,
                 user_agent=user_agent)


def _deny(attempt: ClaimAttempt, *, actor_kind="user", actor_id=None, ip=None, user_agent=None) -> ClaimAttempt:
    if attempt_state(attempt) != "open":
        raise ProtocolError(410, "claim_expired", "This claim link is no longer valid.")
    attempt.status = "denied"
    audit.record("claim.denied", actor_kind, actor_id=actor_id, registration_id=attempt.registration_id,
                 claim_attempt_id=attempt.id, email=attempt.email, ip=ip, user_agent=user_agent)
    return attempt


def complete(claim_token: str, otp: str, *, ip=None, user_agent=None) -> dict:
    now = utcnow()
    reg = registration_by_claim_token(claim_token, lock=True)
    expire_if_due(reg, now)
    if reg.status == "claimed":
        raise ProtocolError(409, "previously_claimed", "This registration has already been claimed.")
    if reg.status in ENDED or is_locked(reg):
        raise ProtocolError(410, "claim_expired", "This registration can no longer be claimed.")
    attempt = db.session.execute(db.select(ClaimAttempt).where(  # v0.1's own: never a latest step-up's
        ClaimAttempt.registration_id == reg.id, ClaimAttempt.protocol == "v0.1", ClaimAttempt.status == "initiated")
        .order_by(ClaimAttempt.created_at.desc())).scalars().first()
    if attempt is None or attempt.otp_digest is None:
        raise ProtocolError(400, "otp_not_generated",
                            "No code has been revealed yet: the user must open the emailed link and press the button.")
    if attempt.otp_expires_at <= now:
        raise ProtocolError(410, "otp_expired", "The code has expired; the user can reveal a fresh one.")
    per_attempt = int(settings.get("otp_max_failures_per_attempt"))
    # reserve one try atomically, so concurrent guesses cannot exceed the per-attempt limit
    reserved = db.session.execute(
        update(ClaimAttempt).where(ClaimAttempt.id == attempt.id, ClaimAttempt.otp_failed_count < per_attempt)
        .values(otp_failed_count=ClaimAttempt.otp_failed_count + 1)
        .execution_options(synchronize_session=False)).rowcount
    if not reserved:
        raise ProtocolError(401, "otp_invalid", "Too many wrong codes: the user must reveal a fresh code.")
    if not isinstance(otp, str) or not hmac.compare_digest(_otp_digest(otp), attempt.otp_digest):
        _record_failure(reg, attempt, ip=ip, user_agent=user_agent)
        raise ProtocolError(401, "otp_invalid", "The code is not correct.")
    db.session.execute(update(ClaimAttempt).where(ClaimAttempt.id == attempt.id)
                       .values(otp_failed_count=ClaimAttempt.otp_failed_count - 1)
                       .execution_options(synchronize_session=False))
    # exactly one concurrent completion wins this conditional update
    won = db.session.execute(
        update(Registration).where(Registration.id == reg.id, Registration.status == "pending")
        .values(status="claimed", claimed_at=now).execution_options(synchronize_session=False)).rowcount
    if not won:
        raise ProtocolError(409, "previously_claimed", "This registration has already been claimed.")
    user = find_or_provision_by_email(attempt.email)
    db.session.flush()
    reg.status, reg.claimed_at, reg.user_id, reg.email = "claimed", now, user.id, attempt.email
    attempt.status = "completed"
    attempt.otp_digest = None
    post = scopes.post_claim()
    answer = {"registration_id": reg.id, "status": "claimed"}
    if reg.type == "anonymous":
        db.session.execute(update(Credential).where(Credential.registration_id == reg.id,
                                                    Credential.revoked_at.is_(None))
                           .values(scopes=" ".join(post), user_id=user.id)
                           .execution_options(synchronize_session=False))
    else:
        cred, secret = credentials.issue(reg, reg.requested_credential_type, post, user_id=user.id, now=now)
        db.session.flush()
        audit.record("credential.issued", "agent", registration_id=reg.id, user_id=user.id,
                     credential_id=cred.id, credential_prefix=cred.prefix, credential_type=cred.type, scopes=post,
                     ip=ip, user_agent=user_agent)
        answer.update({"credential_type": cred.type, "credential": secret,
                       "credential_expires": iso(cred.expires_at), "scopes": post})
    audit.record("claim.confirmed", "agent", registration_id=reg.id, user_id=user.id,
                 claimed_by_user_id=user.id, claim_attempt_id=attempt.id, scopes=post, ip=ip, user_agent=user_agent)
    return answer


def _record_failure(reg: Registration, attempt: ClaimAttempt, *, ip=None, user_agent=None) -> None:
    """Count a wrong code (the attempt's try is already reserved). The transaction then holds exactly the
    count, under the registration's lock: the error handler commits it (tx.commit_on_error), so that
    concurrent guesses cannot overshoot the limits."""
    db.session.execute(update(Registration).where(Registration.id == reg.id)
                       .values(failed_otp_count=Registration.failed_otp_count + 1)
                       .execution_options(synchronize_session=False))
    db.session.refresh(reg)
    audit.record("otp.failed", "agent", registration_id=reg.id, claim_attempt_id=attempt.id,
                 failures=reg.failed_otp_count, ip=ip, user_agent=user_agent)
    if reg.failed_otp_count == int(settings.get("otp_max_failures_per_registration")):
        audit.record("claim.locked", "system", registration_id=reg.id, failures=reg.failed_otp_count, ip=ip,
                     user_agent=user_agent)
    tx.commit_on_error()
