"""Identity assertion room: the service-signed assertion of the latest protocol (what /agent/identity hands
an agent and /oauth2/token exchanges for an access token).

An ID-JAG in shape (typ oauth-id-jag+jwt), signed by the service's own key (authmd/keys.py), with
iss = aud = the service's issuer and sub = the registration id. It says "this registration may ask for
access tokens until exp"; whether it still may (not revoked, claimed where a claim is needed, not
superseded by a claim) is decided at the exchange, from the registration's row.
"""
import uuid
from datetime import datetime, timedelta

from flask import current_app

from . import audit, keys, settings
from .trust import verify as trust
from .util import ProtocolError, utcnow

TYP = "oauth-id-jag+jwt"
PRE_CLAIM = "authmd_pre_claim"
_EPOCH = datetime(1970, 1, 1)


def _ts(dt: datetime) -> int:
    return int((dt - _EPOCH).total_seconds())


def issue(registration_id: str, *, email=None, email_verified=None, amr=None, pre_claim=False, now=None,
          ip=None, user_agent=None, audit_rows: list | None = None) -> tuple[str, datetime]:
    """(assertion, expires_at) for a registration, audited as assertion.issued. Caller commits.
    pre_claim: issued before the registration's claim; such an assertion is superseded by the claim (a
    private claim says so, because a claim may complete within the second the assertion was issued in).
    audit_rows: a list the audit row's values are appended to, for a caller that writes its rows in one
    burst (audit.insert); by default the row is added to the session."""
    now = (now or utcnow()).replace(microsecond=0)
    expires = now + timedelta(seconds=int(settings.get("assertion_ttl")))
    issuer = current_app.config["ISSUER"]
    claims = {"iss": issuer, "aud": issuer, "sub": registration_id, "jti": "jti_" + uuid.uuid4().hex,
              "iat": _ts(now), "exp": _ts(expires)}
    if email:
        claims["email"] = email
        claims["email_verified"] = bool(email_verified)
    if amr:
        claims["amr"] = amr
    if pre_claim:
        claims[PRE_CLAIM] = True
    token = keys.sign(claims, TYP)
    event = dict(registration_id=registration_id, protocol="latest", expires_at=expires.isoformat(), ip=ip,
                 user_agent=user_agent)
    if audit_rows is None:
        audit.record("assertion.issued", "agent", **event)
    else:
        audit_rows.append(audit.values("assertion.issued", "agent", now=now, **event))
    return token, expires


def check(token) -> dict:
    """The claims of a valid service assertion, or ProtocolError 400 invalid_grant (RFC 6749 §5.2).

    Checked: compact JWS, typ, signed by one of the service's published keys, iss and aud this service,
    not expired (clock skew allowed), iat not in the future, sub a registration id."""
    try:
        header, claims = trust.parse(token)
    except ProtocolError:
        raise _invalid("The assertion is not a compact JWS.") from None
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != TYP:
        raise _invalid(f"The assertion's typ must be {TYP}.")
    if not keys.verify_signature(token, header):
        raise _invalid("The assertion is not signed by this service.")
    issuer = current_app.config["ISSUER"]
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if claims.get("iss") != issuer or aud != issuer:
        raise _invalid("The assertion was not issued by and for this service.")
    skew = int(current_app.config.get("CLOCK_SKEW", 60))
    now = _ts(utcnow())
    exp, iat = claims.get("exp"), claims.get("iat")
    if not _number(exp) or exp <= now - skew:
        raise _invalid("The assertion has expired; ask /agent/identity for a fresh one.")
    if not _number(iat) or iat > now + skew:
        raise _invalid("The assertion's iat is in the future.")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith("reg_") or len(sub) > 40:
        raise _invalid("The assertion does not name a registration.")
    return claims


def issued_at(claims: dict) -> datetime:
    return _EPOCH + timedelta(seconds=claims["iat"])


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(400, "invalid_grant", message)
