"""authmd_resource: let your API accept the credentials authmd issues to agents.

The API asks authmd whether a presented credential is live (RFC 7662 token introspection, authenticated
with the API's resource-server client_id and secret), keeps each answer for a short time, and answers
agents with the same 401/403 challenges and JSON bodies authmd itself does. JWT access tokens (RFC 9068,
when authmd issues them) are verified in this process with the keys authmd publishes, without a call per
request (``authmd_resource.jwt_access``). It also describes the API to agents (RFC 9728 protected resource
metadata naming authmd as the authorization server).

Standard library only, but for joserfc to verify JWTs locally (without it they are introspected). The
framework adapters are small modules of their own:
``authmd_resource.flask`` (a Flask extension), ``authmd_resource.starlette`` (a Starlette / FastAPI
dependency) and ``authmd_resource.wsgi`` (a plain WSGI middleware).
"""
import base64
import hashlib
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import quote_plus, urlencode, urlsplit

__all__ = ["Client", "Identity", "Denied", "Unavailable", "PRM_PATH", "check_scopes"]

log = logging.getLogger("authmd_resource")

PRM_PATH = "/.well-known/oauth-protected-resource"
SCOPE_RE = re.compile(r"[A-Za-z0-9._:\-]{1,100}")
_MISS = object()
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.\-:\[\]]")


def check_scopes(scopes) -> tuple:
    """The scope names a route requires, checked once when the route is declared (they go into headers)."""
    if isinstance(scopes, str):
        scopes = scopes.split()
    scopes = tuple(scopes)
    for name in scopes:
        if not isinstance(name, str) or not SCOPE_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a scope name (letters, digits and . _ : -)")
    return scopes


@dataclass(frozen=True)
class Identity:
    """Who is calling, as authmd described the credential."""
    sub: str  # user:<id> once a person owns the credential, registration:<id> before
    scopes: tuple
    client_id: str  # the agent's registration id
    registration_type: str | None = None
    protocol: str | None = None
    agent_iss: str | None = None  # for credentials a provider vouched for (ID-JAG): the provider
    agent_sub: str | None = None  # ... and its id of the user
    exp: int | None = None
    claims: dict = field(default_factory=dict, repr=False, compare=False)

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class Denied(Exception):
    """The answer for the agent: 401 or 403 with authmd's challenge and JSON body."""

    def __init__(self, status: int, error: str, message: str, challenge: str):
        super().__init__(message)
        self.status, self.error, self.message, self.challenge = status, error, message, challenge

    @property
    def body(self) -> bytes:
        return json.dumps({"error": self.error, "message": self.message}).encode()

    @property
    def headers(self) -> list:
        return [("Content-Type", "application/json"), ("WWW-Authenticate", self.challenge),
                ("Cache-Control", "no-store")]


class Unavailable(Exception):
    """authmd could not be asked (down, slow, or refusing this API's own credentials): answer 503."""

    status, error = 503, "service_unavailable"
    message = "The credential cannot be checked right now; retry shortly."

    @property
    def body(self) -> bytes:
        return json.dumps({"error": self.error, "message": self.message}).encode()

    @property
    def headers(self) -> list:
        return [("Content-Type", "application/json"), ("Retry-After", "5"), ("Cache-Control", "no-store")]


class _Cache:
    """A bounded LRU of introspection answers keyed by the token's SHA-256 (never the token itself)."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes, now: float):
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return _MISS
            until, value = item
            if now >= until:
                del self._data[key]
                return _MISS
            self._data.move_to_end(key)
            return value

    def put(self, key: bytes, value, until: float) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = (until, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self):
        return len(self._data)


class Client:
    """Checks bearer credentials with authmd's introspection endpoint, with a short cache.

    issuer: authmd's public URL (its ISSUER), named to agents as the authorization server and checked
    against the `iss` of every answer. client_id, client_secret: this API's resource-server credentials
    (`flask resource-servers add NAME` on authmd, or the console). resource: this API's public URL
    (default: the request's own). introspection_endpoint: where to reach authmd, when not
    <issuer>/oauth2/introspect (e.g. an internal address). cache_seconds / negative_cache_seconds: how long
    a live / dead answer is kept (a live one never past the credential's own exp; a revocation shows here
    at the latest after cache_seconds). cache_size: answers kept at most (least recently used go first).
    clock: seconds since the epoch (tests inject one).

    JWT access tokens: local_jwt None (default) verifies them here when joserfc is installed, True requires
    it, False introspects them like opaque tokens. jwks_uri: authmd's published keys (default
    <issuer>/.well-known/jwks.json). jwt_leeway: seconds of clock skew allowed on exp, nbf and iat.
    jwks_refetch_seconds: at most one fetch of the keys this often for a token naming an unknown key (such a
    token goes to introspection meanwhile). The token's aud must be this API's resource.
    """

    def __init__(self, issuer: str, client_id: str, client_secret: str, *, resource: str | None = None,
                 introspection_endpoint: str | None = None, scopes_supported=None,
                 resource_name: str | None = None, cache_seconds: float = 30.0,
                 negative_cache_seconds: float = 5.0, cache_size: int = 10_000, timeout: float = 5.0,
                 clock=time.time, opener=None, max_token_length: int = 4096, local_jwt: bool | None = None,
                 jwks_uri: str | None = None, jwt_leeway: float = 30.0, jwks_refetch_seconds: float = 60.0):
        if not issuer or not client_id or not client_secret:
            raise ValueError("issuer, client_id and client_secret are required")
        self.issuer = issuer.rstrip("/")
        self.introspection_endpoint = introspection_endpoint or self.issuer + "/oauth2/introspect"
        self.resource = resource
        if isinstance(scopes_supported, str):
            scopes_supported = scopes_supported.split()
        self.scopes_supported = list(scopes_supported) if scopes_supported is not None else None
        self.resource_name = resource_name
        self.cache_seconds, self.negative_cache_seconds = float(cache_seconds), float(negative_cache_seconds)
        self.timeout, self.clock, self.max_token_length = timeout, clock, max_token_length
        self._opener = opener or urllib.request.build_opener()
        self._cache = _Cache(cache_size)
        raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"  # RFC 6749 §2.3.1
        self._authorization = "Basic " + base64.b64encode(raw.encode()).decode()
        self.jwks_uri = jwks_uri or self.issuer + "/.well-known/jwks.json"
        self._jwt = self._verifier(local_jwt, jwt_leeway, jwks_refetch_seconds)

    def _verifier(self, local_jwt, leeway, refetch_seconds):
        if local_jwt is False:
            return None
        try:
            from . import jwt_access
        except ImportError:
            if local_jwt:
                raise
            log.warning("joserfc is not installed: JWT access tokens are introspected, not verified locally")
            return None
        self._unknown_key = jwt_access.UNKNOWN_KEY
        keys = jwt_access.Keys(self.jwks_uri, opener=self._opener, timeout=self.timeout, clock=self.clock,
                               refetch_seconds=refetch_seconds)
        return jwt_access.Verifier(self.issuer, keys, self.clock, leeway)

    # ------------------------------------------------------------------ checking a token
    def check(self, token: str, base_url: str = "") -> dict | None:
        """What is known of token when live (authmd's introspection answer, or a JWT's verified claims),
        else None. A JWT access token is verified here; anything else is introspected (cached). Raises
        Unavailable when authmd must be asked and cannot be."""
        if self._jwt is not None and len(token) <= self.max_token_length and _is_jwt(token):
            claims = self._jwt.verify(token, self.resource_for(base_url))
            if claims is not self._unknown_key:
                return claims
            # a key this process does not know, and may not fetch again yet: authmd knows its own tokens
        return self.introspect(token)

    def ready(self, token: str, base_url: str = ""):
        """check(token)'s answer when it needs no network (a cached introspection answer, or a JWT whose
        key is known), else MISS: what an event loop may run inline."""
        if self._jwt is not None and len(token) <= self.max_token_length and _is_jwt(token):
            return self.check(token, base_url) if self._jwt.ready(token) else _MISS
        return self.cached(token)

    # ------------------------------------------------------------------ asking authmd
    def cached(self, token: str):
        """The cached answer for token (a dict, or None for a dead one), or MISS without one."""
        return self._cache.get(_key(token), self.clock())

    def introspect(self, token: str) -> dict | None:
        """authmd's answer for token when live (its claims), else None; cached. Raises Unavailable."""
        if len(token) > self.max_token_length:
            return None
        key, now = _key(token), self.clock()
        hit = self._cache.get(key, now)
        if hit is not _MISS:
            return hit
        answer = self._ask(token)
        now = self.clock()
        if answer is None:
            self._cache.put(key, None, now + self.negative_cache_seconds)
            return None
        until = now + self.cache_seconds
        exp = answer.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            if exp <= now:
                self._cache.put(key, None, now + self.negative_cache_seconds)
                return None
            until = min(until, exp)
        self._cache.put(key, answer, until)
        return answer

    def _ask(self, token: str) -> dict | None:
        request = urllib.request.Request(
            self.introspection_endpoint, data=urlencode({"token": token}).encode(), method="POST",
            headers={"Authorization": self._authorization, "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                payload = resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                log.error("authmd refused this API's resource-server credentials (invalid_client): "
                          "check client_id and client_secret")
            else:
                log.error("authmd's introspection endpoint answered %s", exc.code)
            raise Unavailable() from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets
            log.error("authmd's introspection endpoint could not be reached: %s", type(exc).__name__)
            raise Unavailable() from None
        try:
            answer = json.loads(payload)
        except ValueError:
            log.error("authmd's introspection endpoint answered something that is not JSON")
            raise Unavailable() from None
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            log.error("authmd's introspection answer has no boolean 'active'")
            raise Unavailable()
        if answer["active"] is not True:
            return None
        if answer.get("iss") not in (None, self.issuer):
            log.error("an introspection answer names another issuer; treated as inactive")
            return None
        return answer

    # ------------------------------------------------------------------ deciding for a request
    def token_from(self, authorization: str | None, base_url: str) -> str:
        """The bearer token of an Authorization header, else Denied 401 unauthorized."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Denied(401, "unauthorized",
                         "Send Authorization: Bearer <credential>; see the resource metadata to get one.",
                         self.challenge(base_url))
        return token

    def decide(self, answer: dict | None, scopes: tuple, base_url: str) -> Identity:
        """The caller's Identity when the answer is live and holds every scope, else Denied."""
        if answer is None:
            raise Denied(401, "invalid_token", "The credential is not known, revoked or expired.",
                         self.challenge(base_url, 'error="invalid_token", '))
        granted = tuple(str(answer.get("scope") or "").split())
        if any(name not in granted for name in scopes):
            needed = " ".join(scopes)
            raise Denied(403, "insufficient_scope", f"This call needs the scope {needed}.",
                         self.challenge(base_url, f'error="insufficient_scope", scope="{needed}", '))
        exp = answer.get("exp")
        return Identity(sub=str(answer.get("sub") or ""), scopes=granted, client_id=str(answer.get("client_id") or ""),
                        registration_type=answer.get("registration_type"), protocol=answer.get("protocol"),
                        agent_iss=answer.get("agent_iss"), agent_sub=answer.get("agent_sub"),
                        exp=exp if isinstance(exp, int) else None, claims=answer)

    def identify(self, authorization: str | None, scopes=(), base_url: str = "") -> Identity:
        """The caller behind an Authorization header, holding every scope; else Denied (or Unavailable)."""
        token = self.token_from(authorization, base_url)
        return self.decide(self.check(token, base_url), tuple(scopes), base_url)

    # ------------------------------------------------------------------ describing the API (RFC 9728)
    def resource_for(self, base_url: str) -> str:
        """This API's resource identifier: the configured one, else the request's own origin (its Host
        header, reduced to the characters a host may have, since it goes into a quoted header value)."""
        if self.resource:
            return self.resource
        parts = urlsplit(base_url)
        scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
        return f"{scheme}://{_HOST_UNSAFE.sub('', parts.netloc)}/"

    def metadata_paths(self) -> list[str]:
        """Where the metadata is served: the well-known path, and RFC 9728's form for a resource with a path."""
        paths = [PRM_PATH]
        if self.resource:
            path = urlsplit(self.resource).path
            if path not in ("", "/"):
                paths.append(PRM_PATH + path)
        return paths

    def metadata_url(self, base_url: str) -> str:
        parts = urlsplit(self.resource_for(base_url))
        return f"{parts.scheme}://{parts.netloc}{self.metadata_paths()[-1]}"

    def metadata(self, base_url: str) -> dict:
        doc = {"resource": self.resource_for(base_url)}
        if self.resource_name:
            doc["resource_name"] = self.resource_name
        doc["authorization_servers"] = [self.issuer]
        if self.scopes_supported is not None:
            doc["scopes_supported"] = self.scopes_supported
        doc["bearer_methods_supported"] = ["header"]
        doc["resource_documentation"] = self.issuer + "/auth.md"  # how an agent gets a credential
        return doc

    def metadata_body(self, base_url: str) -> bytes:
        return json.dumps(self.metadata(base_url)).encode()

    def challenge(self, base_url: str, extra: str = "") -> str:
        return f'Bearer {extra}resource_metadata="{self.metadata_url(base_url)}"'


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _is_jwt(token: str) -> bool:
    """A compact JWS: '{"' in base64url, then three parts. authmd's opaque tokens (sk_…, at_…) never are."""
    return token.startswith("eyJ") and token.count(".") == 2


MISS = _MISS
