"""Signing keys room: the service's own ES256 keys (kept in the database, private parts encrypted with a key
derived from SECRET_KEY), signing and verifying the service's own JWTs, and the published JWKS.

Every node reads the same table, so every node signs with the same key and accepts every published one.
The newest key that is not retired signs. `rotate()` adds a new key and retires the old one, which stays
published (and accepted) until `publish_until`: the last moment a token it signed can still be valid.

Per worker, the keys are kept in memory: signing reads the table at most once every CACHE_SECONDS (config
SIGNING_KEY_CACHE_SECONDS; 0 reads it every time. A rotation on another node or by the CLI is picked up within
that time; the old key stays valid meanwhile), and a token
naming a kid this worker has not seen re-reads the table at once (at most once a second), so a key made
on another node is accepted immediately.
"""
import base64
import json
import os
import threading
import time
from datetime import timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from . import audit, settings
from .extensions import db
from .models import SigningKey
from .util import utcnow

ALG = "ES256"
CACHE_SECONDS = 60
_INFO = b"authmd signing key v1"
_REGISTRY = jws.JWSRegistry(algorithms=[ALG])


class KeyError_(Exception):
    """The key table cannot be used (e.g. SECRET_KEY changed without the old one as a fallback)."""


# ---------------------------------------------------------------- encryption of the private part

def _wrapping_keys() -> list[bytes]:
    """AES-256 keys derived from SECRET_KEY and then each SECRET_KEY_FALLBACKS entry (newest first)."""
    cfg = current_app.config
    secrets = [cfg["SECRET_KEY"], *(cfg.get("SECRET_KEY_FALLBACKS") or ())]
    return [HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(str(s).encode())
            for s in secrets]


def _seal(kid: str, pem: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_wrapping_keys()[0]).encrypt(nonce, pem, kid.encode())
    return "v1." + base64.urlsafe_b64encode(nonce + sealed).decode()


def _open(kid: str, blob: str) -> bytes:
    if not blob.startswith("v1."):
        raise KeyError_(f"signing key {kid}: unknown format")
    raw = base64.urlsafe_b64decode(blob[3:])
    for key in _wrapping_keys():
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], kid.encode())
        except Exception:  # noqa: BLE001 - InvalidTag: try the next (older) secret
            continue
    raise KeyError_(f"signing key {kid} cannot be decrypted: SECRET_KEY changed (keep the old one in "
                    "AUTHMD_SECRET_KEY_FALLBACKS, or run `flask --app app keys rotate`)")


# ---------------------------------------------------------------- the table

def _public_jwk(key: ECKey) -> dict:
    out = key.as_dict(private=False)
    out.update({"kid": key.thumbprint(), "alg": ALG, "use": "sig"})
    return out


def create(now=None) -> SigningKey:
    """A new signing key (it signs from now on). Caller commits."""
    now = now or utcnow()
    key = ECKey.generate_key("P-256")
    kid = key.thumbprint()
    row = SigningKey(kid=kid, alg=ALG, public_jwk=json.dumps(_public_jwk(key), sort_keys=True),
                     private_key=_seal(kid, key.as_pem(private=True)), created_at=now)
    db.session.add(row)
    db.session.flush()
    _cache().forget()
    return row


def ensure(now=None) -> SigningKey | None:
    """Create the first key when there is none (init-db). Returns the new row, or None. Caller commits."""
    if db.session.execute(db.select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1)).first():
        return None
    return create(now)


def _overlap() -> timedelta:
    """How long a retired key stays valid: the longest lifetime of a token it signed (an identity assertion,
    a JWT access token), plus clock skew."""
    cfg = current_app.config
    longest = max(int(settings.get("assertion_ttl")), int(settings.get("jwt_access_token_ttl")))
    return timedelta(seconds=longest + int(cfg.get("CLOCK_SKEW", 60)))


def rotate(*, actor_kind="admin", actor_id="cli", ip=None, user_agent=None, now=None) -> tuple[SigningKey, list[str]]:
    """A new active key; every other unretired key retires and stays published until tokens it signed
    have expired. Returns (the new key, the kids retired). Caller commits."""
    now = now or utcnow()
    until = now + _overlap()
    old = list(db.session.execute(db.select(SigningKey).where(SigningKey.retired_at.is_(None))).scalars())
    for row in old:
        row.retired_at, row.publish_until = now, until
    new = create(now)
    audit.record("key.rotated", actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent, kid=new.kid,
                 retired=[r.kid for r in old], published_until=until.isoformat())
    return new, [r.kid for r in old]


def list_keys(now=None) -> list[dict]:
    """Every key with its state: active (signs), retired (published until …), expired (no longer published)."""
    now = now or utcnow()
    rows = db.session.execute(db.select(SigningKey).order_by(SigningKey.created_at.desc())).scalars()
    out, signing = [], None
    for row in rows:
        if row.retired_at is None and signing is None:
            state, signing = "active", row.kid
        elif row.retired_at is None:
            state = "standby"  # an older unretired key (two nodes created one at once): valid, does not sign
        elif row.publish_until is not None and row.publish_until > now:
            state = "retired"
        else:
            state = "expired"
        out.append({"kid": row.kid, "alg": row.alg, "state": state, "created_at": row.created_at,
                    "retired_at": row.retired_at, "publish_until": row.publish_until})
    return out


def purge_expired(now=None) -> int:
    """Delete keys no token can be valid under any more (for `flask expire`). Caller commits."""
    now = now or utcnow()
    n = db.session.execute(db.delete(SigningKey).where(SigningKey.publish_until.is_not(None),
                                                       SigningKey.publish_until <= now)).rowcount or 0
    if n:
        _cache().forget()
    return n


# ---------------------------------------------------------------- per-worker cache

class _Cache:
    """One per app (app.extensions): what this worker knows of the key table."""

    def __init__(self):
        self.lock = threading.Lock()
        self.loaded_at = None      # monotonic time of the last read
        self.secret = None         # the SECRET_KEY the private key was decrypted with
        self.public = {}           # kid -> (joserfc key, publish_until or None)
        self.signer = None         # (kid, private joserfc key)
        self.kid_reload_at = 0.0   # monotonic time of the last re-read for an unknown kid

    def forget(self):
        with self.lock:
            self.loaded_at = None

    def _fresh(self, secret) -> bool:
        return (self.loaded_at is not None and self.secret == secret
                and time.monotonic() - self.loaded_at
                < float(current_app.config.get("SIGNING_KEY_CACHE_SECONDS", CACHE_SECONDS)))

    def load(self, force: bool = False):
        secret = current_app.config["SECRET_KEY"]
        with self.lock:
            if not force and self._fresh(secret):
                return self
            now = utcnow()
            rows = list(db.session.execute(db.select(SigningKey).order_by(SigningKey.created_at.desc())).scalars())
            public, signer = {}, None
            for row in rows:
                if row.publish_until is not None and row.publish_until <= now:
                    continue
                public[row.kid] = (ECKey.import_key(json.loads(row.public_jwk)), row.publish_until)
                if signer is None and row.retired_at is None:
                    signer = (row.kid, ECKey.import_key(_open(row.kid, row.private_key)))
            self.public, self.signer, self.loaded_at, self.secret = public, signer, time.monotonic(), secret
            return self


def _cache() -> _Cache:
    cache = current_app.extensions.get("authmd_keys")
    if cache is None:
        cache = current_app.extensions.setdefault("authmd_keys", _Cache())
    return cache


def forget() -> None:
    """Make this worker re-read the key table on next use."""
    _cache().forget()


def jwks() -> dict:
    """The published key set: every key a valid token can be signed with, read from the table on every call
    (public parts only, no decryption). Not from this worker's cache: a key made a moment ago by another
    worker or node may already sign, and whoever verifies with this document must find it here."""
    now = utcnow()
    rows = db.session.execute(db.select(SigningKey.public_jwk, SigningKey.publish_until)
                              .order_by(SigningKey.created_at.desc()))
    return {"keys": [json.loads(jwk) for jwk, until in rows if until is None or until > now]}


def sign(claims: dict, typ: str) -> str:
    """A compact JWS of claims, signed with the active key (created now if there is none yet)."""
    cache = _cache().load()
    if cache.signer is None:
        create()
        cache = _cache().load(force=True)
    kid, key = cache.signer
    return jwt.encode({"alg": ALG, "typ": typ, "kid": kid}, claims, key, algorithms=[ALG], registry=_REGISTRY)


def public_key(kid: str):
    """The published key with this kid, or None; re-reads the table once for a kid not seen yet."""
    cache = _cache().load()
    found = cache.public.get(kid)
    if found is None:
        now = time.monotonic()
        with cache.lock:
            due = now - cache.kid_reload_at >= 1.0
            if due:
                cache.kid_reload_at = now
        if due:
            found = cache.load(force=True).public.get(kid)
    if found is None:
        return None
    key, until = found
    if until is not None and until <= utcnow():
        return None
    return key


def verify_signature(token: str, header: dict) -> bool:
    """Whether token (already parsed: header given) is signed by one of the service's published keys."""
    kid = header.get("kid")
    if header.get("alg") != ALG or not isinstance(kid, str):
        return False
    key = public_key(kid)
    if key is None:
        return False
    try:
        jws.deserialize_compact(token, key, algorithms=[ALG], registry=_REGISTRY)
        return True
    except (JoseError, ValueError, TypeError):
        return False
