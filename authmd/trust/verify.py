"""Trust room (verification): the JWS checks shared by ID-JAGs and logout tokens, in the spec's order
(verified with joserfc, keys only from the issuer's own JWKS), the replay store and the rejection audit."""
import base64
import binascii
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from joserfc import jws
from joserfc.errors import JoseError

from .. import audit, tx
from ..models import SeenJti, TrustedIssuer
from ..rawsql import Prepared, on_conflict_do_nothing
from ..protocol.body import loads
from ..wire import REVOKED_EVENT
from ..util import ProtocolError, has_control, printable, utcnow
from .issuers import SUPPORTED_ALGORITHMS, algorithms_of
from .issuers import get as get_issuer
from .jwks import FetchError, keys_for

# EdDSA (Ed25519) stays in the spec's default allow-list; RFC 9864's rename is not a weakness.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")

ID_JAG_TYP = "oauth-id-jag+jwt"
LOGOUT_TYP = "logout+jwt"
SET_TYP = "secevent+jwt"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
KTY_FOR_ALG = {"ES": "EC", "RS": "RSA", "PS": "RSA", "Ed": "OKP"}
MAX_TOKEN_CHARS = 16384
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


# ---------------------------------------------------------------- the JWS pipeline (§2.3 steps 1-7, §4)

@dataclass
class Verified:
    header: dict
    claims: dict
    issuer: TrustedIssuer  # or the row of its columns the caller handed in (verify's issuer_row)
    jti_keep_until: datetime  # until when the caller's insert_jti() must remember the jti


def _b64decode(part: str) -> bytes:
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json_object(part: str, what: str) -> dict:
    try:
        value = loads(_b64decode(part).decode("utf-8"))  # nesting capped before parsing, as for bodies
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(400, "invalid_request", f"The token's {what} is not base64url-encoded JSON.") from None
    if not isinstance(value, dict):
        raise ProtocolError(400, "invalid_request", f"The token's {what} must be a JSON object.")
    return value


def parse(token) -> tuple[dict, dict]:
    """Step 1: three base64url parts, a JSON object header and payload."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise ProtocolError(400, "invalid_request", "The token must be a compact JWS of at most 16 KiB.")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ProtocolError(400, "invalid_request", "The token must be a compact JWS: three base64url parts.")
    header = _json_object(parts[0], "header")
    claims = _json_object(parts[1], "payload")
    try:
        _b64decode(parts[2])
    except (ValueError, binascii.Error):
        raise ProtocolError(400, "invalid_request", "The token's signature is not base64url.") from None
    return header, claims


def audiences() -> set:
    cfg = current_app.config
    out = set()
    for url in (cfg["ISSUER"], cfg["RESOURCE"]):
        out.update({url.rstrip("/"), url.rstrip("/") + "/"})
    return out


def _num(claims: dict, name: str):
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or abs(value) > 1e11:  # NaN, or absurdly far from now
        return None
    return value


_UNSET = object()


def verify(token, *, typ: str, kind: str = "id_jag", lookup_disabled: bool = False,
           issuer_row=_UNSET, parsed: tuple | None = None) -> Verified:
    """Steps 1-7 of §2.3 (and §4 for logout tokens), in order; raises ProtocolError with the spec's code.
    The replay store is the caller's: it calls insert_jti() with the Verified's jti_keep_until as the
    first of its writes (both the ID-JAG registration and the provider revocation do).

    issuer_row: the issuer already read for the token's iss (or None), so it is not read twice: a
    TrustedIssuer, or a row with its columns (issuer, enabled, jwks_uri, algorithms, allow_private_jwks).
    parsed: what parse(token) returned, when the caller has already parsed this token."""
    cfg = current_app.config
    skew = timedelta(seconds=int(cfg.get("CLOCK_SKEW", 60)))
    logout = kind == "logout"  # v0.1 names a bad aud or exp invalid_request
    exp_optional = kind in ("logout", "set")  # provider revocations may leave exp out
    # 1. parse
    header, claims = parsed if parsed is not None else parse(token)
    # 2. typ, then alg against what any issuer could be allowed
    typ_value = header.get("typ")
    if not isinstance(typ_value, str) or typ_value.lower().removeprefix("application/") != typ:
        raise ProtocolError(400, "invalid_request", f"The token header must have typ \"{typ}\".")
    if "crit" in header or "b64" in header:
        raise ProtocolError(400, "invalid_request", "The token header carries extensions we do not support (crit, b64).")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise ProtocolError(400, "invalid_signature",
                            "The token's alg is not allowed (asymmetric algorithms only; never none or HMAC).")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ProtocolError(400, "invalid_request", "The token header's kid must be a string.")
    # 3. issuer
    iss = claims.get("iss")
    if issuer_row is _UNSET:
        row = get_issuer(iss) if isinstance(iss, str) and len(iss) <= 500 else None
    else:
        row = issuer_row if issuer_row is not None and issuer_row.issuer == iss else None
    if row is None or not (row.enabled or lookup_disabled):
        raise ProtocolError(400, "invalid_issuer", "The token's iss is not a trusted issuer here.")
    if alg not in algorithms_of(row):
        raise ProtocolError(400, "invalid_signature", f"This issuer is not allowed the algorithm {alg}.")
    # 4. signature, with a key from the issuer's JWKS only (never jwk / jku / x5u from the header)
    try:
        candidates = keys_for(row, kid)
    except FetchError:
        raise ProtocolError(400, "invalid_signature", "The issuer's keys could not be fetched.") from None
    wanted_kty = KTY_FOR_ALG[alg[:2]]
    registry = jws.JWSRegistry(algorithms=[alg])
    ok = False
    for key in candidates:
        if key.key_type != wanted_kty or (key.alg is not None and key.alg != alg):
            continue
        try:
            jws.deserialize_compact(token, key, algorithms=[alg], registry=registry)
            ok = True
            break
        except (JoseError, ValueError, TypeError):
            continue
    if not ok:
        raise ProtocolError(400, "invalid_signature", "The signature does not verify with the issuer's keys.")
    # 5. audience: a single value naming this service (a one-element list is accepted as that value)
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str) or aud not in audiences():
        raise ProtocolError(400, "invalid_request" if logout else "invalid_audience",
                            f"The token's aud must be {cfg['ISSUER']} or {cfg['RESOURCE']}.")
    # 6. time
    now = utcnow()
    now_ts = (now - datetime(1970, 1, 1)).total_seconds()
    iat, exp = _num(claims, "iat"), _num(claims, "exp")
    if iat is None:
        raise ProtocolError(400, "invalid_request", "The token must carry a numeric iat.")
    if exp is None and (not exp_optional or "exp" in claims):
        raise ProtocolError(400, "invalid_request", "The token must carry a numeric exp.")
    max_life = int(cfg.get("ID_JAG_MAX_LIFETIME", 3600))
    if exp is None:  # a logout token without exp is good for the max lifetime after iat
        exp = iat + max_life
    if exp <= now_ts - skew.total_seconds():
        raise ProtocolError(400, "invalid_request" if logout else "expired", "The token has expired.")
    if iat > now_ts + skew.total_seconds():
        raise ProtocolError(400, "invalid_request", "The token's iat is in the future.")
    if exp - iat > max_life:
        raise ProtocolError(400, "invalid_request", f"The token lives longer than {max_life} seconds.")
    if exp < iat:
        raise ProtocolError(400, "invalid_request", "The token's exp is before its iat.")
    nbf = _num(claims, "nbf")
    if "nbf" in claims and (nbf is None or nbf > now_ts + skew.total_seconds()):
        raise ProtocolError(400, "invalid_request", "The token is not valid yet (nbf).")
    # 7. sub, jti, replay
    sub, jti = claims.get("sub"), claims.get("jti")
    # identifiers with control characters are refused (PostgreSQL cannot store a NUL; a newline would
    # forge a line where they are shown)
    if not isinstance(sub, str) or not sub or len(sub) > 255 or has_control(sub):
        raise ProtocolError(400, "invalid_request",
                            "The token must carry sub (a string of at most 255 characters, no control characters).")
    if not isinstance(jti, str) or not jti or len(jti) > 255 or has_control(jti):
        raise ProtocolError(400, "invalid_request",
                            "The token must carry jti (a string of at most 255 characters, no control characters).")
    if kind == "logout":
        _check_logout_claims(claims)
    elif kind == "set":
        _check_set_claims(claims)
    keep_until = datetime(1970, 1, 1) + timedelta(seconds=exp) + skew
    return Verified(header=header, claims=claims, issuer=row, jti_keep_until=keep_until)


def _check_set_claims(claims: dict) -> None:
    """RFC 8417: a Security Event Token carries a non-empty events object (unknown events are ignored)."""
    events = claims.get("events")
    if not isinstance(events, dict) or not events:
        raise ProtocolError(400, "invalid_request", "The SET's events must be a non-empty JSON object.")


def _check_logout_claims(claims: dict) -> None:
    events = claims.get("events")
    if not isinstance(events, dict) or not (REVOKED_EVENT in events or BACKCHANNEL_EVENT in events):
        raise ProtocolError(400, "invalid_request",
                            f"The logout token's events must contain {REVOKED_EVENT} or {BACKCHANNEL_EVENT}.")
    if "nonce" in claims:
        raise ProtocolError(400, "invalid_request", "A logout token must not carry nonce.")


_INSERT_JTI = Prepared(lambda dialect: on_conflict_do_nothing(dialect, SeenJti.__table__, SeenJti.__table__.c.jti))


def insert_jti(iss: str, jti: str, keep_until: datetime, connection=None) -> None:
    """The replay store as one Core INSERT … ON CONFLICT DO NOTHING: the database's unique (iss, jti)
    decides, across workers and nodes (on PostgreSQL a concurrent twin waits for the first transaction,
    then sees the conflict; on SQLite the writer lock serializes them); no row returned means a replay
    (RETURNING, not rowcount: rowcount did not say 1 here on PostgreSQL through the ORM session).
    connection: the session's, when the caller already holds it (rawsql.Prepared)."""
    if _INSERT_JTI.first(dict(iss=iss, jti=jti, expires_at=keep_until), connection) is None:
        raise ProtocolError(400, "replay_detected", "This token was already used; every token is accepted once.")


def record_rejection(exc: ProtocolError, token, kind: str, *, ip=None, user_agent=None, protocol=None) -> None:
    """assertion.rejected with the error code (never the token), written after the error handler has
    rolled the request back (tx.keep_on_error)."""
    iss = sub = None
    try:
        _h, claims = parse(token)
        iss = claims.get("iss") if isinstance(claims.get("iss"), str) else None
        sub = claims.get("sub") if isinstance(claims.get("sub"), str) else None
    except ProtocolError:
        pass
    tx.keep_on_error(audit.record, "assertion.rejected", "provider" if kind in ("logout", "set") else "agent",
                     iss=printable(iss, 500), sub=printable(sub, 255), ip=ip, user_agent=user_agent,
                     error=exc.code, kind=kind, protocol=protocol)
