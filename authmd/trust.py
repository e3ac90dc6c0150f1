"""Trust room: trusted issuers, JWKS fetch and per-worker cache, and the JWS checks shared by
ID-JAGs and logout tokens (verified with joserfc, keys only from the issuer's own JWKS)."""
import base64
import binascii
import http.client
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import current_app
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from . import audit, tx
from .extensions import db
from .rawsql import Prepared
from .models import SeenJti, TrustedIssuer
from .util import ProtocolError, has_control, printable, utcnow

log = logging.getLogger("authmd.trust")
# EdDSA (Ed25519) stays in the spec's default allow-list; RFC 9864's rename is not a weakness.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")

ID_JAG_TYP = "oauth-id-jag+jwt"
LOGOUT_TYP = "logout+jwt"
REVOKED_EVENT = "https://schemas.workos.com/events/agent/auth/identity/assertion/revoked"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"

# What an issuer may be allowed; never "none", never an HMAC algorithm (a public key is no secret).
SUPPORTED_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")
DEFAULT_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
KTY_FOR_ALG = {"ES": "EC", "RS": "RSA", "PS": "RSA", "Ed": "OKP"}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_TOKEN_CHARS = 16384
CACHE_MIN = timedelta(minutes=10)
CACHE_MAX = timedelta(hours=24)
CACHE_DEFAULT = timedelta(hours=1)
REFETCH_INTERVAL = timedelta(minutes=1)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


# ---------------------------------------------------------------- trusted issuers (CRUD)

def check_url(url: str, what: str = "URL") -> str:
    """https, or http on a loopback host (development and tests need no certificates)."""
    if not isinstance(url, str) or not url or len(url) > 500 or any(c.isspace() for c in url):
        raise ValueError(f"{what} must be a non-empty URL without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} must not carry a query, fragment or credentials")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"{what} must use https (http is allowed only on localhost, 127.0.0.1 and [::1])")
    return url


def get_issuer(issuer: str) -> TrustedIssuer | None:
    if "\x00" in issuer:  # no issuer is stored with a NUL, and PostgreSQL refuses one in a parameter
        return None
    return db.session.execute(db.select(TrustedIssuer).where(TrustedIssuer.issuer == issuer)).scalar()


def list_issuers(enabled_only: bool = False) -> list[TrustedIssuer]:
    query = db.select(TrustedIssuer).order_by(TrustedIssuer.issuer)
    if enabled_only:
        query = query.where(TrustedIssuer.enabled.is_(True))
    return list(db.session.execute(query).scalars())


def add_issuer(issuer: str, *, jwks_uri=None, name="", scopes=None, require_amr=None, client_ids=None,
               algorithms=None, allow_private_jwks=False, enabled=True, actor="cli") -> TrustedIssuer:
    """Trust a provider. Raises ValueError with a human message on bad input. Caller commits."""
    from . import scopes as scope_mod
    check_url(issuer, "issuer")
    if jwks_uri:
        check_url(jwks_uri, "jwks_uri")
    if get_issuer(issuer) is not None:
        raise ValueError(f"{issuer} is already trusted")
    algs = list(algorithms or DEFAULT_ALGORITHMS)
    bad = [a for a in algs if a not in SUPPORTED_ALGORITHMS]
    if bad:
        raise ValueError(f"unsupported algorithm(s) {', '.join(bad)}; choose from {', '.join(SUPPORTED_ALGORITHMS)}")
    if scopes:
        known = set(scope_mod.names())
        unknown = [s for s in scopes if s not in known]
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}")
    row = TrustedIssuer(issuer=issuer, name=name or "", jwks_uri=jwks_uri or None, algorithms=" ".join(algs),
                        scopes=" ".join(scopes) if scopes else None, require_amr=require_amr or None,
                        allowed_client_ids=" ".join(client_ids) if client_ids else None,
                        allow_private_jwks=bool(allow_private_jwks), enabled=bool(enabled), created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit.record("issuer.added", "admin", actor_id=actor, iss=issuer, name=row.name,
                 scopes=row.scopes, require_amr=row.require_amr, algorithms=row.algorithms)
    from .authdoc import config_changed
    config_changed()  # the discovery documents list the enabled issuers
    return row


def set_enabled(issuer: str, enabled: bool, actor="cli") -> TrustedIssuer:
    row = get_issuer(issuer)
    if row is None:
        raise LookupError(f"{issuer} is not in the trust list")
    row.enabled = enabled
    audit.record("issuer.enabled" if enabled else "issuer.disabled", "admin", actor_id=actor, iss=issuer)
    from .authdoc import config_changed
    config_changed()
    return row


def remove_issuer(issuer: str, actor="cli") -> None:
    """Forget an issuer. Credentials it vouched for stay until they expire or are revoked."""
    row = get_issuer(issuer)
    if row is None:
        raise LookupError(f"{issuer} is not in the trust list")
    db.session.delete(row)
    forget(row.issuer)
    audit.record("issuer.removed", "admin", actor_id=actor, iss=issuer)
    from .authdoc import config_changed
    config_changed()


def jwks_uri_of(row: TrustedIssuer) -> str:
    return row.jwks_uri or row.issuer.rstrip("/") + "/.well-known/jwks.json"


def algorithms_of(row: TrustedIssuer) -> list[str]:
    return [a for a in (row.algorithms or " ".join(DEFAULT_ALGORITHMS)).split() if a in SUPPORTED_ALGORITHMS]


# ---------------------------------------------------------------- JWKS fetch (SSRF guard) and cache

class FetchError(Exception):
    pass


def _refuse_address(ip: ipaddress._BaseAddress) -> bool:
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or (getattr(ip, "ipv4_mapped", None) is not None and _refuse_address(ip.ipv4_mapped)))


def _resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses to connect to; refuses private and link-local ones unless allowed (SSRF guard).
    Literal loopback hosts are always allowed (development and tests)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from None
    addrs = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if host not in LOOPBACK_HOSTS and not allow_private and _refuse_address(ip):
            raise FetchError(f"{host} resolves to a private or link-local address ({ip}); refused")
        addrs.append(str(ip))
    if not addrs:
        raise FetchError(f"cannot resolve {host}")
    return addrs


class _PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to the address we checked, while verifying the certificate for the host name."""

    def __init__(self, host, address, **kw):
        super().__init__(host, **kw)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host, address, **kw):
        super().__init__(host, **kw)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def fetch_jwks(url: str, *, allow_private: bool = False, timeout: float | None = None,
               max_bytes: int | None = None) -> tuple[dict, timedelta]:
    """GET a JWKS: short timeout, size cap, no redirects, checked address. Returns (jwks, cache lifetime)."""
    cfg = current_app.config
    timeout = timeout or float(cfg.get("JWKS_TIMEOUT", 3))
    max_bytes = max_bytes or int(cfg.get("JWKS_MAX_BYTES", 64 * 1024))
    local = _local_jwks(url)
    if local is not None:
        return local, CACHE_MAX
    try:
        check_url(url, "jwks_uri")
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _resolve(parts.hostname, port, allow_private)[0]
    path = parts.path or "/"
    if parts.scheme == "https":
        # JWKS_CA_FILE: an extra CA bundle for issuers behind a private CA (certificates are always verified)
        context = ssl.create_default_context(cafile=cfg.get("JWKS_CA_FILE") or None)
        conn = _PinnedHTTPS(parts.hostname, address, port=port, timeout=timeout, context=context)
    else:
        conn = _PinnedHTTP(parts.hostname, address, port=port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json", "User-Agent": "authmd-jwks/1"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise FetchError(f"JWKS answered HTTP {resp.status}")
        body = resp.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise FetchError(f"JWKS is larger than {max_bytes} bytes")
        cache_control = resp.getheader("Cache-Control") or ""
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"JWKS fetch failed: {exc.__class__.__name__}: {exc}") from None
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        raise FetchError("JWKS is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise FetchError("JWKS has no keys array")
    return data, cache_lifetime(cache_control)


def _local_jwks(url: str):
    """The development provider's keys are read from disk, never fetched from ourselves
    (a single sync worker fetching its own URL would wait on itself)."""
    if not current_app.config.get("DEV_PROVIDER"):
        return None
    try:
        from . import devprovider
    except ImportError:
        return None
    if url != devprovider.jwks_url():
        return None
    return devprovider.jwks()


def cache_lifetime(cache_control: str) -> timedelta:
    """Cache-Control max-age clamped to [10 min, 24 h]; no-store / no-cache count as the minimum."""
    cc = cache_control.lower()
    if "no-store" in cc or "no-cache" in cc:
        return CACHE_MIN
    m = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", cc)
    life = timedelta(seconds=int(m.group(1))) if m else CACHE_DEFAULT
    return max(CACHE_MIN, min(CACHE_MAX, life))


def _import_keys(jwks: dict) -> dict:
    """kid -> (joserfc key, jwk dict); keys we cannot use (private parts, oct, bad params) are skipped."""
    out = {}
    for i, entry in enumerate(jwks.get("keys", [])):
        if not isinstance(entry, dict) or entry.get("kty") not in ("EC", "RSA", "OKP"):
            continue
        if any(p in entry for p in ("d", "p", "q", "k")) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = KeySet.import_key_set({"keys": [entry]}).keys[0]
        except (JoseError, ValueError, TypeError, KeyError, binascii.Error):
            continue
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) else f"#{i}"
        out.setdefault(kid, (key, entry))
    return out


@dataclass
class _Entry:
    keys: dict = field(default_factory=dict)
    expires_at: datetime | None = None
    failed_at: datetime | None = None  # the last fetch failed: retry at most once a minute
    kid_refetch_at: datetime | None = None  # the last refetch for an unknown kid: at most once a minute
    lock: threading.Lock = field(default_factory=threading.Lock)


# Shared by every request of this worker; the lock guards the dict, each entry's lock its fetches.
_cache: dict = {}
_cache_lock = threading.Lock()


def _entry(cache_key) -> _Entry:
    with _cache_lock:
        entry = _cache.get(cache_key)
        if entry is None:
            entry = _cache[cache_key] = _Entry()
        return entry


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def forget(issuer: str) -> None:
    with _cache_lock:
        for k in [k for k in _cache if k[0] == issuer]:
            del _cache[k]


def _refresh(row: TrustedIssuer, entry: _Entry, now: datetime) -> None:
    """One fetch; on failure the keys already cached keep working."""
    try:
        jwks, life = fetch_jwks(jwks_uri_of(row), allow_private=bool(row.allow_private_jwks))
    except FetchError as exc:
        entry.failed_at = now
        log.warning("JWKS for %s unavailable: %s", row.issuer, exc)
        if not entry.keys:
            raise
        return
    entry.keys = _import_keys(jwks)
    entry.expires_at = now + life
    # an empty key set counts as a failure, so it is not refetched on every request
    entry.failed_at = None if entry.keys else now


def keys_for(row: TrustedIssuer, kid: str | None) -> list:
    """The issuer's keys matching kid (all of them when the token names none). Fetches when the cache is
    empty or past its lifetime; refetches on an unknown kid at most once a minute; a failing issuer is
    retried at most once a minute while its cached keys keep working."""
    entry = _entry((row.issuer, jwks_uri_of(row), bool(row.allow_private_jwks)))
    with entry.lock:
        now = utcnow()
        backing_off = entry.failed_at is not None and now - entry.failed_at < REFETCH_INTERVAL
        stale = not entry.keys or (entry.expires_at is not None and now >= entry.expires_at)
        fetched = False
        if stale and not backing_off:
            _refresh(row, entry, now)
            fetched = True
        elif not entry.keys:
            raise FetchError("the issuer's JWKS failed less than a minute ago")
        if (kid is not None and kid not in entry.keys and not fetched and not backing_off
                and (entry.kid_refetch_at is None or now - entry.kid_refetch_at >= REFETCH_INTERVAL)):
            entry.kid_refetch_at = now
            _refresh(row, entry, now)
        if kid is None:
            return [k for k, _ in entry.keys.values()]
        found = entry.keys.get(kid)
        return [found[0]] if found else []


def test_issuer(issuer_row: TrustedIssuer) -> dict:
    """Fetch the issuer's JWKS now, bypassing the cache (for the console's "test" button)."""
    try:
        jwks, _life = fetch_jwks(jwks_uri_of(issuer_row), allow_private=bool(issuer_row.allow_private_jwks))
    except FetchError as exc:
        return {"ok": False, "keys": [], "error": str(exc)}
    keys = [{"kid": e.get("kid"), "kty": e.get("kty"), "alg": e.get("alg")} for _k, e in _import_keys(jwks).values()]
    if not keys:
        return {"ok": False, "keys": [], "error": "the JWKS holds no usable public signing key"}
    return {"ok": True, "keys": keys, "error": None}


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
        value = json.loads(_b64decode(part).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
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
    logout = kind == "logout"
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
    if exp is None and (not logout or "exp" in claims):
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
    if logout:
        _check_logout_claims(claims)
    keep_until = datetime(1970, 1, 1) + timedelta(seconds=exp) + skew
    return Verified(header=header, claims=claims, issuer=row, jti_keep_until=keep_until)


def _check_logout_claims(claims: dict) -> None:
    events = claims.get("events")
    if not isinstance(events, dict) or not (REVOKED_EVENT in events or BACKCHANNEL_EVENT in events):
        raise ProtocolError(400, "invalid_request",
                            f"The logout token's events must contain {REVOKED_EVENT} or {BACKCHANNEL_EVENT}.")
    if "nonce" in claims:
        raise ProtocolError(400, "invalid_request", "A logout token must not carry nonce.")


_ON_CONFLICT: dict = {}


def on_conflict_do_nothing(dialect: str, table, *returning):
    """INSERT … ON CONFLICT DO NOTHING [RETURNING returning] for a dialect (PostgreSQL and SQLite ≥ 3.24
    both have it): the unique constraint decides a race without a SAVEPOINT; RETURNING says who won.
    Built once per dialect: building it (and its cache key) anew cost as much as running it."""
    key = (dialect, table, returning)
    stmt = _ON_CONFLICT.get(key)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table).on_conflict_do_nothing()
        if returning:
            stmt = stmt.returning(*returning)
        _ON_CONFLICT[key] = stmt
    return stmt


def insert_on_conflict_do_nothing(table, *returning):
    """on_conflict_do_nothing() for this session's dialect."""
    return on_conflict_do_nothing(db.session.get_bind().dialect.name, table, *returning)


_INSERT_JTI = Prepared(lambda dialect: on_conflict_do_nothing(dialect, SeenJti.__table__, SeenJti.__table__.c.jti))


def insert_jti(iss: str, jti: str, keep_until: datetime, connection=None) -> None:
    """The replay store as one Core INSERT … ON CONFLICT DO NOTHING: the database's unique (iss, jti)
    decides, across workers and nodes (on PostgreSQL a concurrent twin waits for the first transaction,
    then sees the conflict; on SQLite the writer lock serializes them); no row returned means a replay
    (RETURNING, not rowcount: rowcount did not say 1 here on PostgreSQL through the ORM session).
    connection: the session's, when the caller already holds it (rawsql.Prepared)."""
    if _INSERT_JTI.first(dict(iss=iss, jti=jti, expires_at=keep_until), connection) is None:
        raise ProtocolError(400, "replay_detected", "This token was already used; every token is accepted once.")


def record_rejection(exc: ProtocolError, token, kind: str, *, ip=None, user_agent=None) -> None:
    """assertion.rejected with the error code (never the token), written after the error handler has
    rolled the request back (tx.keep_on_error)."""
    iss = sub = None
    try:
        _h, claims = parse(token)
        iss = claims.get("iss") if isinstance(claims.get("iss"), str) else None
        sub = claims.get("sub") if isinstance(claims.get("sub"), str) else None
    except ProtocolError:
        pass
    tx.keep_on_error(audit.record, "assertion.rejected", "provider" if kind == "logout" else "agent",
                     iss=printable(iss, 500), sub=printable(sub, 255), ip=ip, user_agent=user_agent,
                     error=exc.code, kind=kind)
