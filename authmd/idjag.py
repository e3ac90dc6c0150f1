"""Agent-verified room: register an agent from a provider-signed ID-JAG (§2.3), and the provider's
revocation by logout token (§4)."""
from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime

from . import audit, credentials, registration, scopes, settings, users
from .extensions import db
from .models import Credential, Delegation, RefreshToken, Registration, TrustedIssuer
from .secrets import new_id
from .rawsql import Prepared, on_conflict_do_nothing
from .trust import verify as trust
from .users import normalize_email, normalize_phone
from .util import ProtocolError, iso, printable, utcnow

CREDENTIAL_TYPES = ("access_token", "api_key")


def _text(value, limit: int):
    # shown in the console and the portal: no control characters (PostgreSQL also refuses a NUL)
    return printable(value, limit) if isinstance(value, str) else None


def agent_details(claims: dict) -> tuple[str | None, str | None]:
    """(agent_platform, agent_context_id). v0.1 names neither claim, so we read the explicit
    `agent_platform` / `agent_context_id` first, then fall back to the OAuth-standard ones: the
    authorized party (`azp`, else `client_id`) names the platform, and the actor (`act.sub`, RFC 8693)
    names the agent instance / conversation."""
    platform = _text(claims.get("agent_platform"), 200) or _text(claims.get("azp"), 200) \
        or _text(claims.get("client_id"), 200)
    context = _text(claims.get("agent_context_id"), 255)
    if context is None and isinstance(claims.get("act"), dict):
        context = _text(claims["act"].get("sub"), 255)
    return platform, context


def _check_policy(claims: dict, row: TrustedIssuer) -> None:
    """Steps 8 and 9: a verified email or phone, then the issuer's policy."""
    if claims.get("email_verified") is not True and claims.get("phone_number_verified") is not True:
        raise ProtocolError(400, "missing_verified_email",
                            "The ID-JAG must assert email_verified or phone_number_verified as true.")
    if row.require_amr:
        amr = claims.get("amr")
        values = amr if isinstance(amr, list) else [amr]
        if row.require_amr not in values:
            raise ProtocolError(400, "insufficient_user_authentication",
                                f"This service requires the user to have signed in with amr \"{row.require_amr}\".")
    if row.allowed_client_ids:
        if claims.get("client_id") not in row.allowed_client_ids.split():
            raise ProtocolError(400, "invalid_client_id", "This client_id is not allowed for this issuer here.")


def granted_scopes(row: TrustedIssuer, connection=None) -> list[str]:
    if row.scopes:
        wanted = set(row.scopes.split())
        return [s for s in scopes.names(connection=connection) if s in wanted]
    return scopes.post_claim(connection)


def _verified_email(claims: dict):
    if claims.get("email_verified") is not True:
        return None
    try:
        return normalize_email(claims.get("email"))
    except ProtocolError:
        return None


def _verified_phone(claims: dict):
    if claims.get("phone_number_verified") is not True:
        return None
    return normalize_phone(claims.get("phone_number"))


def register(assertion, requested_credential_type, *, ip=None, user_agent=None) -> dict:
    """Verify an ID-JAG and issue a credential now. Caller commits."""
    try:
        return _register(assertion, requested_credential_type, ip=ip, user_agent=user_agent)
    except ProtocolError as exc:
        if exc.code != "interaction_required":  # not a rejection: the token was good and is spent
            rejected(exc, assertion, "id_jag", ip=ip, user_agent=user_agent, protocol="v0.1")
        raise


# which protocol family a provider token of each kind belongs to (an ID-JAG is the caller's to say)
_KIND_PROTOCOL = {"logout": "v0.1", "set": "latest"}


def rejected(exc: ProtocolError, token, kind: str, *, ip, user_agent, protocol=None) -> None:
    """assertion.rejected, one row, for a token that names an issuer on the trust list (enabled or not),
    whatever later check it failed. Junk anyone can post by the thousand (a token that does not parse, or
    names no issuer known here) gets no row, which would cost a write (SQLite's one writer) per request:
    it is counted in the log instead (audit.unrecorded). The same rule for ID-JAGs and logout tokens."""
    try:
        parsed = trust.parse(token)
    except ProtocolError:
        parsed = None
    if _issuer_named(parsed) is None:
        audit.unrecorded("assertion.rejected", kind=kind, error=exc.code)
        return
    trust.record_rejection(exc, token, kind, ip=ip, user_agent=user_agent,
                           protocol=protocol or _KIND_PROTOCOL.get(kind))


_issuers = TrustedIssuer.__table__
_delegations = Delegation.__table__
_registrations = Registration.__table__
# The statements of the registration, each compiled once per dialect and run on the session's transaction
# (rawsql.Prepared): columns, not ORM entities; no identity map, no autoflush, no per-call statement building.
# The token's issuer, with what verify(), the policy checks and the scopes read of it.
_ISSUER_COLUMNS = ("issuer", "enabled", "jwks_uri", "algorithms", "allow_private_jwks", "require_amr",
                   "allowed_client_ids", "scopes")
_Issuer = namedtuple("_Issuer", _ISSUER_COLUMNS)
_ISSUER = Prepared(db.select(*(_issuers.c[name] for name in _ISSUER_COLUMNS))
                   .where(_issuers.c.issuer == db.bindparam("iss")))
_ANY_ENABLED = Prepared(db.select(_issuers.c.id).where(_issuers.c.enabled.is_(True)).limit(1))
# (id, user_id, registration_id, whether that registration exists) of the delegation for one (iss, sub, aud)
_DELEGATION_COLUMNS = (_delegations.c.id, _delegations.c.user_id, _delegations.c.registration_id,
                       _registrations.c.id.is_not(None))
_DELEGATION_FROM = _delegations.outerjoin(_registrations, _registrations.c.id == _delegations.c.registration_id)
_DELEGATION_WHERE = (_delegations.c.iss == db.bindparam("iss"), _delegations.c.sub == db.bindparam("sub"),
                     _delegations.c.aud == db.bindparam("aud"))
_DELEGATION = Prepared(db.select(*_DELEGATION_COLUMNS).select_from(_DELEGATION_FROM).where(*_DELEGATION_WHERE))
# The writes (an UPDATE sets the columns its parameters name; "delegation_id" / "registration_id" pick the row)
_INSERT_DELEGATION = Prepared(lambda dialect: on_conflict_do_nothing(dialect, _delegations, _delegations.c.id))
_UPDATE_DELEGATION = Prepared(_delegations.update().where(_delegations.c.id == db.bindparam("delegation_id")))
_UPDATE_REGISTRATION = Prepared(_registrations.update()
                                .where(_registrations.c.id == db.bindparam("registration_id")))
# Everything the writes depend on, in one SELECT over a one-row table, each part an indexed lookup: that
# delegation (outer-joined, so absent = NULLs), then the first two rules of the user resolution order.
_ONE = db.select(db.literal_column("1").label("one")).subquery("one")
_LOOKUP = Prepared(db.select(*_DELEGATION_COLUMNS, users.PRIOR_USER, users.EMAIL_USER.c.id,
                     users.EMAIL_USER.c.email_verified)
           .select_from(_ONE.outerjoin(_delegations, db.and_(*_DELEGATION_WHERE))
                        .outerjoin(_registrations, _registrations.c.id == _delegations.c.registration_id)
                        .outerjoin(users.EMAIL_USER, users.EMAIL_USER_ON)))


def _issuer_named(parsed, conn=None):
    """The trusted issuer, enabled or not, that a (not yet verified) token names, as a row of its columns
    (read once, handed to verify); None when there is none or the token did not parse."""
    iss = parsed[1].get("iss") if parsed is not None else None
    # an issuer with a NUL is no trusted issuer (and PostgreSQL refuses a NUL in a parameter)
    if not isinstance(iss, str) or len(iss) > 500 or "\x00" in iss:
        return None
    row = _ISSUER.first({"iss": iss}, conn)
    return None if row is None else _Issuer._make(row)


def _issuer_for(parsed, conn=None) -> tuple:
    """_issuer_named(), and whether any enabled issuer exists at all (only asked when the token's own
    issuer is not an enabled one)."""
    row = _issuer_named(parsed, conn)
    if row is not None and row.enabled:
        return row, True
    return row, _ANY_ENABLED.first(connection=conn) is not None


@dataclass
class Checked:
    """An ID-JAG that passed every check (§2.3 steps 1-9), and everything a registration reads before its
    first write: the issuer, the delegation of (iss, sub, aud), the user resolution plan, the scopes."""
    conn: object
    cfg: dict
    claims: dict
    issuer: tuple
    keep_until: datetime
    iss: str
    sub: str
    aud: str
    platform: str | None
    context: str | None
    email: str | None
    phone: str | None
    found: tuple | None  # (delegation id, its user id, its registration id, whether that registration exists)
    prior_user: int | None  # the user of an earlier bound delegation of (iss, sub)
    plan: tuple  # users.plan_for_delegation()
    granted: list


def check(assertion, wanted=None) -> Checked:
    """Verify an ID-JAG and read what a registration needs; writes nothing (so a refused token leaves its
    jti unspent). wanted: v0.1's requested_credential_type, checked in its turn."""
    # Every read but the issuer's comes after the signature check and before the first write (settings,
    # the issuer once, the scopes, and the delegation with the user resolution in one SELECT); then the
    # rows are written with Core statements in one short burst (no ORM flush, no SAVEPOINT). On SQLite the
    # writer lock is taken at the first write and held to the commit, so that stretch is kept as short as
    # it can be (bench/README.md).
    conn = db.session.connection()  # every statement below runs on it through rawsql (no ORM object is pending)
    cfg = settings.all_settings(conn)
    if not cfg["id_jag_enabled"]:
        raise ProtocolError(400, "issuer_not_enabled", "No identity provider is trusted by this service.")
    try:
        parsed = trust.parse(assertion)  # once: verify() takes it, and reports a parse error in its turn
    except ProtocolError:
        parsed = None
    issuer_row, any_enabled = _issuer_for(parsed, conn)
    if not any_enabled:
        raise ProtocolError(400, "issuer_not_enabled", "No identity provider is trusted by this service.")
    if wanted is not None and wanted not in CREDENTIAL_TYPES:
        raise ProtocolError(400, "unsupported_credential_type",
                            "requested_credential_type must be \"access_token\" or \"api_key\".")
    verified = trust.verify(assertion, typ=trust.ID_JAG_TYP, kind="id_jag", issuer_row=issuer_row,
                            parsed=parsed)
    claims, row = verified.claims, verified.issuer
    _check_policy(claims, row)
    iss, sub = row.issuer, claims["sub"]
    aud = claims["aud"][0] if isinstance(claims["aud"], list) else claims["aud"]
    aud = aud.rstrip("/")  # "https://x" and "https://x/" name the same audience: one delegation
    platform, context = agent_details(claims)
    email, phone = _verified_email(claims), _verified_phone(claims)
    *found, prior_user, email_user, email_verified = _LOOKUP.first({"iss": iss, "sub": sub, "aud": aud,
                                                                     "email": email})
    plan = users.plan_for_delegation(prior_user, None if email_user is None else (email_user, email_verified),
                                     email=email, phone=phone)
    return Checked(conn=conn, cfg=cfg, claims=claims, issuer=row, keep_until=verified.jti_keep_until, iss=iss,
                   sub=sub, aud=aud, platform=platform, context=context, email=email, phone=phone,
                   found=found if found[0] is not None else None, prior_user=prior_user, plan=plan,
                   granted=granted_scopes(row, conn))


def confirmation_needed(checked: Checked) -> int | None:
    """The takeover guard: the existing user this ID-JAG would be linked to by a verified email or phone
    alone, with no bound delegation from this (iss, sub); that user must confirm first. None when the
    token is a clean match (an earlier delegation, or a user provisioned just in time), or when the admin
    restored v0.1's silent link (setting link_identities_by_email)."""
    if checked.prior_user is not None or checked.cfg["link_identities_by_email"]:
        return None
    action, user_id = checked.plan
    return user_id if action in ("use", "verify_email", "verify_phone") else None


def _register(assertion, wanted, *, ip, user_agent) -> dict:
    c = check(assertion, wanted)
    matched = confirmation_needed(c)
    if matched is not None:
        from . import stepup
        stepup.refuse(c, matched, protocol="v0.1", ip=ip, user_agent=user_agent)  # raises 401
    now = utcnow()
    conn, claims, iss, sub, aud, plan = c.conn, c.claims, c.iss, c.sub, c.aud, c.plan
    platform, context, email, phone, granted = c.platform, c.context, c.email, c.phone, c.granted
    found = c.found

    # --- writes. The jti first: a replay is refused before anything else is written.
    trust.insert_jti(iss, claims["jti"], c.keep_until)
    user_id = users.provision(plan, email=email, phone=phone, now=now)
    delegation_id, reg_id, created, deleg_user = _upsert_delegation(found, iss, sub, aud, user_id, platform,
                                                                    context, now)
    reg_values = dict(status="active", ended_at=None, requested_credential_type=wanted, ip=ip,
                      user_agent=(user_agent or None) and user_agent[:300], user_id=deleg_user)
    if platform:
        reg_values["agent_platform"] = platform
    if created:
        registration.INSERT.execute(dict(reg_values, id=reg_id, type="agent-provider", created_at=now,
                                         delegation_id=delegation_id, iss=iss))
    else:  # one registration per delegation; a revoked one comes back to life on a fresh ID-JAG
        _UPDATE_REGISTRATION.execute(dict(reg_values, registration_id=reg_id))
    cred, secret = credentials.new_values(reg_id, wanted, granted, user_id=user_id,
                                          delegation_id=delegation_id, now=now)
    cred_id = credentials.INSERT.first(cred)[0]
    who = {"iss": iss, "sub": sub, "agent_platform": platform, "agent_context_id": context}
    audit.insert([
        audit.values("registration.created", "agent", registration_id=reg_id, user_id=user_id, ip=ip,
                     user_agent=user_agent, registration_type="agent-provider", scopes=granted,
                     new_registration=created, protocol="v0.1", **who),
        audit.values("credential.issued", "agent", registration_id=reg_id, user_id=user_id, ip=ip,
                     user_agent=user_agent, credential_id=cred_id, credential_prefix=cred["prefix"],
                     credential_type=wanted, scopes=granted, protocol="v0.1", **who)], conn)
    return {"registration_id": reg_id, "registration_type": "agent-provider", "credential_type": wanted,
            "credential": secret, "credential_expires": iso(cred["expires_at"]), "scopes": granted}


def _upsert_delegation(found, iss, sub, aud, user_id, platform, context, now, v01_registration=True):
    """The delegation for (iss, sub, aud), created once even when workers or nodes race for it: an
    INSERT … ON CONFLICT DO NOTHING on the unique (iss, sub, aud) decides (on PostgreSQL the loser waits
    for the winner's commit, then re-reads its row and so reuses its registration_id; on SQLite the
    writer lock already serializes the two, and the loser's re-read sees the winner's committed row).
    Returns (delegation id, registration id, whether that registration is new, the delegation's user).
    v01_registration=False (the latest protocol, whose registration points at the delegation instead):
    the delegation's v0.1 registration is left as it is; the registration id returned is None."""
    if found is None:
        reg_id = new_id("reg_") if v01_registration else None
        inserted = _INSERT_DELEGATION.first(
            dict(iss=iss, sub=sub, aud=aud, user_id=user_id, registration_id=reg_id, agent_platform=platform,
                 agent_context_id=context, first_seen=now, last_seen=now))
        if inserted is not None:
            return inserted[0], reg_id, True, user_id
        found = _DELEGATION.first({"iss": iss, "sub": sub, "aud": aud})
    delegation_id, deleg_user, reg_id, reg_exists = found
    values = dict(delegation_id=delegation_id, last_seen=now, revoked_at=None)
    if platform:
        values["agent_platform"] = platform
    if context:
        values["agent_context_id"] = context
    if deleg_user is None:
        deleg_user = values["user_id"] = user_id
    if not v01_registration:
        _UPDATE_DELEGATION.execute(values)
        return delegation_id, None, False, deleg_user
    created = not (reg_id and reg_exists)
    if created:
        reg_id = values["registration_id"] = new_id("reg_")
    _UPDATE_DELEGATION.execute(values)
    return delegation_id, reg_id, created, deleg_user


def revoke(token, *, kind: str = "logout", ip=None, user_agent=None) -> dict:
    """Verify a provider's revocation — a v0.1 logout token (kind "logout") or a Security Event Token of the
    latest protocol (kind "set") — and tear down everything bound to its subject on both protocols: every
    live credential of every delegation of (iss, sub), the registrations, their refresh tokens. A SET whose
    events are all unknown is accepted (its jti spent) and changes nothing. Caller commits."""
    try:
        return _revoke(token, kind=kind, ip=ip, user_agent=user_agent)
    except ProtocolError as exc:
        rejected(exc, token, kind, ip=ip, user_agent=user_agent)
        raise


# The revocation's statements, built once like the registration's. The delegations of (iss, sub) are read
# by the UPDATE that stamps them revoked (RETURNING), so the audit rows name exactly the delegations revoked,
# read under the same lock as the writes (SQLite's writer lock, PostgreSQL's row locks). The credentials and
# registrations are then picked through the delegations this revocation stamped (revoked_at = now): on
# PostgreSQL each statement sees a fresh snapshot, and a delegation a concurrent registration created in
# between (revoked_at NULL) must neither be half-revoked nor counted.
_credentials = Credential.__table__
_NOW = db.bindparam("now", type_=_credentials.c.revoked_at.type)
# (parameters named after no column: an UPDATE through rawsql sets the columns its parameters name)
_OF_SUBJECT = (_delegations.c.iss == db.bindparam("subject_iss"), _delegations.c.sub == db.bindparam("subject_sub"))
_REVOKE_DELEGATIONS = Prepared(_delegations.update().where(*_OF_SUBJECT).values(revoked_at=_NOW)
                               .returning(_delegations.c.registration_id, _delegations.c.user_id,
                                          _delegations.c.agent_platform, _delegations.c.agent_context_id,
                                          _delegations.c.id))
_STAMPED = (*_OF_SUBJECT, _delegations.c.revoked_at == _NOW)
# credentials.revoke_where as one statement: only live credentials, and RETURNING says how many (the DBAPI
# cursor's rowcount is not passed back by rawsql)
_REVOKE_CREDENTIALS = Prepared(_credentials.update()
                               .where(_credentials.c.delegation_id.in_(db.select(_delegations.c.id).where(*_STAMPED)),
                                      credentials.live(_NOW))
                               .values(revoked_at=_NOW).returning(_credentials.c.id))
# The registrations are ended one delegation at a time, by key (the ids step 2 returned): a subquery
# (`id IN (SELECT … delegations …) AND status = 'active'`) led SQLite's planner, which has no statistics,
# to walk every active registration through the status index (6.6 ms a revocation with 10k registrations)
_END_REGISTRATIONS = Prepared(_registrations.update()
                              .where(_registrations.c.id == db.bindparam("stamped_registration"),
                                     _registrations.c.status == "active")
                              .values(status="revoked", ended_at=_NOW))
# the latest protocol's registrations point at their delegation (one per delegation, and a pending step-up)
_END_LATEST = Prepared(_registrations.update()
                       .where(_registrations.c.delegation_id == db.bindparam("stamped_delegation"),
                              _registrations.c.protocol == "latest",
                              # (no IN list: rawsql.Prepared binds plain parameters only)
                              db.or_(_registrations.c.status == "active", _registrations.c.status == "pending",
                                     _registrations.c.status == "claimed"))
                       .values(status="revoked", ended_at=_NOW)
                       .returning(_registrations.c.id, _registrations.c.user_id))
_refresh = RefreshToken.__table__
_REVOKE_REFRESH = Prepared(_refresh.update()
                           .where(_refresh.c.registration_id.in_(
                               db.select(_registrations.c.id).where(_registrations.c.delegation_id.in_(
                                   db.select(_delegations.c.id).where(*_STAMPED)))),
                               _refresh.c.revoked_at.is_(None))
                           .values(revoked_at=_NOW))


def _revoke(token, *, kind, ip, user_agent) -> dict:
    # As the registration: the issuer is read and the signature checked before the first write, then every
    # write is a Core statement in one short burst (on SQLite the writer lock is taken at the first write
    # and held to the commit). The jti is that first write, so a replayed token is refused having written
    # nothing; a token refused at any step leaves its jti unspent.
    conn = db.session.connection()  # every statement below runs on it through rawsql (no ORM object is pending)
    try:
        parsed = trust.parse(token)  # once: verify() takes it, and reports a parse error in its turn
    except ProtocolError:
        parsed = None
    # a disabled issuer may still take back what it vouched for (lookup_disabled): revocation only removes access
    verified = trust.verify(token, typ=trust.SET_TYP if kind == "set" else trust.LOGOUT_TYP, kind=kind,
                            lookup_disabled=True, issuer_row=_issuer_named(parsed, conn), parsed=parsed)
    iss, sub = verified.issuer.issuer, verified.claims["sub"]
    now = utcnow()

    # --- writes
    trust.insert_jti(iss, verified.claims["jti"], verified.jti_keep_until, conn)
    if kind == "set" and trust.REVOKED_EVENT not in verified.claims["events"]:
        return {"revoked": 0, "ignored": True}  # RFC 8935: events we do not know are acknowledged, not acted on
    subject = {"subject_iss": iss, "subject_sub": sub, "now": now}
    delegations = _REVOKE_DELEGATIONS.all(subject, conn)
    revoked, latest = 0, []
    if delegations:
        revoked = len(_REVOKE_CREDENTIALS.all(subject, conn))
        _END_REGISTRATIONS.execute_many([{"stamped_registration": row[0], "now": now} for row in delegations], conn)
        latest = [ended for row in delegations
                  for ended in _END_LATEST.all({"stamped_delegation": row[4], "now": now}, conn)]
        _REVOKE_REFRESH.execute(subject, conn)
    protocol = "latest" if kind == "set" else "v0.1"
    who = dict(actor_id=iss, iss=iss, sub=sub, ip=ip, user_agent=user_agent, protocol=protocol,
               reason="security_event" if kind == "set" else "logout_token")
    rows = [audit.values("registration.revoked", "provider", registration_id=reg_id, user_id=user_id,
                         agent_platform=platform, agent_context_id=context, revoked_count=revoked, **who)
            for reg_id, user_id, platform, context, _ in delegations]
    rows += [audit.values("registration.revoked", "provider", registration_id=reg_id, user_id=user_id,
                          revoked_count=revoked, **who) for reg_id, user_id in latest]
    audit.insert(rows or [audit.values("registration.revoked", "provider", revoked_count=0, **who)], conn)
    return {"revoked": revoked}
