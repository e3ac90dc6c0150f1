"""authmd_resource: authmd's JWT access tokens (RFC 9068, typ at+jwt, ES256) verified in the API's own process
with the keys authmd publishes at its jwks_uri.

No call to authmd per request: the price is that a token revoked at authmd is still accepted here until its
exp (authmd keeps JWT lifetimes short for that reason; introspection and forward auth refuse it at once).

Needs joserfc (and cryptography under it), which authmd itself depends on; without it the Client sends JWTs
to introspection like opaque tokens.
"""
import base64
import binascii
import json
import logging
import re
import threading
import urllib.error
import urllib.request

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

log = logging.getLogger("authmd_resource")

ALG = "ES256"
TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 §4: what the resource server must see in typ
_REGISTRY = jws.JWSRegistry(algorithms=[ALG])
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
UNKNOWN_KEY = object()  # verify(): the token names a key this process does not know (and may not refetch now)


def _json_part(part: str):
    if not _B64URL.fullmatch(part):
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):  # json's errors are ValueErrors, bad UTF-8 too
        return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


class Keys:
    """authmd's published signing keys, fetched from jwks_uri and kept by kid.

    A kid not known yet makes one fetch, and then no other for `refetch_seconds` (a stream of tokens with
    made-up kids cannot turn into a stream of fetches); keys older than `max_age` are fetched again on the
    next use (a key authmd stopped publishing stops working here). Bounded: at most `max_keys` keys from a
    document of at most `max_bytes`. A failed fetch keeps the keys known so far.
    """

    def __init__(self, uri: str, *, opener, timeout: float, clock, refetch_seconds: float = 60.0,
                 max_age: float = 3600.0, max_keys: int = 16, max_bytes: int = 64 * 1024):
        self.uri, self.opener, self.timeout, self.clock = uri, opener, timeout, clock
        self.refetch_seconds, self.max_age = refetch_seconds, max_age
        self.max_keys, self.max_bytes = max_keys, max_bytes
        self._keys: dict = {}
        self._fetched_at = None   # clock time of the last successful fetch
        self._tried_at = None     # clock time of the last attempt, successful or not
        self._lock = threading.Lock()
        self.fetches = 0          # attempts so far (for operators' metrics)

    def ready(self, kid) -> bool:
        """Whether get(kid) can answer without a fetch."""
        fetched = self._fetched_at
        return kid in self._keys and fetched is not None and self.clock() - fetched < self.max_age

    def get(self, kid):
        """The key named kid, or None when authmd does not publish it (as far as may be asked now)."""
        if self.ready(kid):
            return self._keys[kid]
        with self._lock:
            now = self.clock()
            fresh = self._fetched_at is not None and now - self._fetched_at < self.max_age
            if not (fresh and kid in self._keys):
                if self._tried_at is None or now - self._tried_at >= self.refetch_seconds:
                    self._tried_at = now
                    self._fetch(now)
            return self._keys.get(kid)

    def _fetch(self, now) -> None:
        self.fetches += 1
        request = urllib.request.Request(self.uri, headers={"Accept": "application/json"})
        try:
            with self.opener.open(request, timeout=self.timeout) as resp:
                body = resp.read(self.max_bytes + 1)
            if len(body) > self.max_bytes:
                raise ValueError(f"the key set is larger than {self.max_bytes} bytes")
            document = json.loads(body)
            found = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(found, list):
                raise ValueError("the document has no list of keys")
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts; not JSON; too large
            log.error("authmd's key set (%s) could not be fetched: %s", self.uri, type(exc).__name__)
            return
        keys = {}
        for jwk in found:
            if len(keys) >= self.max_keys:
                log.warning("authmd's key set has more than %d keys; the rest are ignored", self.max_keys)
                break
            if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
                continue
            kid = jwk.get("kid")
            if not isinstance(kid, str) or jwk.get("alg", ALG) != ALG or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[kid] = ECKey.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk})
            except (JoseError, ValueError, TypeError):
                continue
        self._keys, self._fetched_at = keys, now


class Verifier:
    """Checks an at+jwt: ES256 only, typ, signed by one of authmd's published keys, iss, aud, exp (with
    `leeway` seconds of clock skew), nbf and iat not in the future, and the claims the Identity is built from."""

    def __init__(self, issuer: str, keys: Keys, clock, leeway: float = 30.0):
        self.issuer, self.keys, self.clock, self.leeway = issuer, keys, clock, leeway

    def header(self, token: str):
        """The JOSE header when this is a token to check here at all (else None)."""
        parts = token.split(".")
        header = _json_part(parts[0]) if len(parts) == 3 else None
        return header if isinstance(header, dict) else None

    def ready(self, token: str) -> bool:
        """Whether verify(token) needs no network (the key is known): it may then run on an event loop."""
        header = self.header(token)
        return header is None or self.keys.ready(header.get("kid"))

    def verify(self, token: str, audience: str):
        """The token's claims when valid for `audience`; None when not; UNKNOWN_KEY when it names a key
        authmd does not publish as far as this process may ask now (the caller asks introspection)."""
        header = self.header(token)
        if header is None:
            return None
        if header.get("alg") != ALG:  # the one algorithm authmd signs with: nothing else is even tried
            return None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in TYPES:
            return None  # e.g. authmd's own identity assertion (oauth-id-jag+jwt), signed by the same keys
        if "crit" in header:
            return None  # authmd uses no critical extensions: one we do not understand must refuse
        kid = header.get("kid")
        if not isinstance(kid, str) or len(kid) > 200:
            return None
        key = self.keys.get(kid)
        if key is None:
            return UNKNOWN_KEY
        try:
            payload = jws.deserialize_compact(token, key, algorithms=[ALG], registry=_REGISTRY).payload
            claims = json.loads(payload)
        except (JoseError, ValueError, TypeError):
            return None
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer:
            return None
        if not _audience_matches(claims.get("aud"), audience):
            return None
        now, leeway = self.clock(), self.leeway
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", None)
        if not _number(exp) or now >= exp + leeway:
            return None
        if not _number(iat) or iat > now + leeway:
            return None
        if nbf is not None and (not _number(nbf) or nbf > now + leeway):
            return None
        if not all(isinstance(claims.get(name), str) and claims[name] for name in ("sub", "client_id")):
            return None
        if not isinstance(claims.get("scope", ""), str):
            return None
        return claims


def _same_resource(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")  # authmd accepts a resource with or without its final slash


def _audience_matches(aud, audience: str) -> bool:
    if isinstance(aud, str):
        return _same_resource(aud, audience)
    if isinstance(aud, list):
        return any(isinstance(a, str) and _same_resource(a, audience) for a in aud)
    return False
