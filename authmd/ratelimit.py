"""Rate-limit room: the spec's §6 limits on Flask-Limiter, keyed by IP, email, registration or service-wide.

Counters live in AUTHMD_RATELIMIT_STORAGE_URI: `memory://` (the default) counts per worker process, so with
N workers a client gets up to N times the limit; `redis://host:port/db` shares the counters between workers
and nodes. When the store is down the limits fail open (the request goes through) and a line is logged.
Nothing else fails open: the key and exempt functions read the body through protocol.body (parsed once,
never raising), and any other error inside a limit check refuses the request (500) instead of skipping it.

Views declare limits with `extensions.limiter.limit(...)` / `.shared_limit(...)` (Flask-Limiter's own
signatures); init_app builds this app's Limiter and applies them, so several apps in one process (the
tests, a CLI next to a server) never share a limiter's storage or settings. A shared limit declared here
(registration_limited, claim_mail_limit) is one set of counters for every view it decorates: the latest
protocol's registrations at /agent/identity count on the same budgets as v0.1's at /agent/auth.

A refusal is 429 with Retry-After, its body in the words of the endpoint's protocol (too_many): v0.1's
`rate_limited`, the latest protocol's `rate_limit_exceeded` with `retry_after` (decision 10); the latest
blueprints register their own handler for it.
"""
import functools
import hashlib
import logging
import math
import time

from flask import current_app, has_request_context, jsonify, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from limits import parse_many
from limits.errors import StorageError

from .extensions import client_ip, limiter as declarations
from .protocol.body import peek

log = logging.getLogger("authmd.ratelimit")

# config key -> default; every value is a flask-limiter string ("5/hour", "5 per hour; 100 per day")
DEFAULTS = {
    "RATELIMIT_ANONYMOUS_PER_IP": "5/hour",
    "RATELIMIT_ASSERTION_PER_IP": "60/hour",
    "RATELIMIT_ANONYMOUS_GLOBAL": "100/hour",
    "RATELIMIT_ASSERTION_GLOBAL": "1000/hour",
    "RATELIMIT_CLAIM_MAIL_PER_EMAIL": "5/hour",
    "RATELIMIT_CLAIM_PER_IP": "30/hour",
    "RATELIMIT_CLAIM_PER_REGISTRATION": "10/hour",
    "RATELIMIT_CHALLENGE_PER_IP": "60/hour",
    "RATELIMIT_CHALLENGE_PER_REGISTRATION": "20/hour",
    "RATELIMIT_COMPLETE_PER_IP": "120/hour",
    "RATELIMIT_COMPLETE_PER_REGISTRATION": "30/hour",
    # refused logout tokens only (see refused()): a provider revoking many users from one address is
    # never slowed down, while junk posted to an unauthenticated endpoint is
    "RATELIMIT_REVOKE_PER_IP": "120/hour",
    # the latest protocol (its registrations at /agent/identity share the four registration limits above:
    # anonymous with anonymous, identity_assertion and service_auth with identity_assertion)
    "RATELIMIT_REFRESH_PER_IP": "600/hour",
    "RATELIMIT_IDENTITY_CLAIM_PER_IP": "30/hour",
    "RATELIMIT_IDENTITY_CLAIM_PER_REGISTRATION": "10/hour",
    # an agent may retry /complete while the person has not pressed Authorize yet (claim_not_confirmed):
    # room for a retry every 30 seconds; wrong codes have their own hard caps in the domain (5 and 20)
    "RATELIMIT_IDENTITY_COMPLETE_PER_IP": "600/hour",
    "RATELIMIT_IDENTITY_COMPLETE_PER_REGISTRATION": "120/hour",
    # the exchange runs at every assertion renewal and after every 401 of a client: generous
    "RATELIMIT_OAUTH_TOKEN_PER_IP": "600/hour",
    "RATELIMIT_OAUTH_REVOKE_PER_IP": "600/hour",
    "RATELIMIT_EVENTS_PER_IP": "120/hour",  # refused SETs only, as RATELIMIT_REVOKE_PER_IP
}
_APP_KEY = "authmd.limiter"
_CHECK_FAILED = "authmd.limit_check_failed"


def limit_value(key: str):
    """A callable flask-limiter evaluates per request, so a config change needs no code change."""
    return lambda: current_app.config.get(key) or DEFAULTS[key]


# which registration budget a body's `type` counts on, per registration endpoint
_KINDS = {"/agent/auth": {"anonymous": "anonymous", "identity_assertion": "identity_assertion"},
          "/agent/identity": {"anonymous": "anonymous", "identity_assertion": "identity_assertion",
                              "service_auth": "identity_assertion", "refresh": "refresh"}}


def registration_kind() -> str | None:
    """anonymous | identity_assertion | refresh (latest only) | None (a body no limit counts: the view
    refuses it)."""
    kind = peek().get("type")
    return _KINDS.get(request.path, {}).get(kind) if isinstance(kind, str) else None


def _unless(kind: str):
    return lambda: registration_kind() != kind


# the registration limits of both protocols: one set of counters for /agent/auth and /agent/identity
_REGISTRATION_LIMITS = (
    declarations.shared_limit(limit_value("RATELIMIT_ANONYMOUS_PER_IP"), scope="register-anonymous-ip",
                              exempt_when=_unless("anonymous")),
    declarations.shared_limit(limit_value("RATELIMIT_ASSERTION_PER_IP"), scope="register-assertion-ip",
                              exempt_when=_unless("identity_assertion")),
    declarations.shared_limit(limit_value("RATELIMIT_ANONYMOUS_GLOBAL"), scope="register-anonymous-global",
                              key_func=lambda: "service", exempt_when=_unless("anonymous")),
    declarations.shared_limit(limit_value("RATELIMIT_ASSERTION_GLOBAL"), scope="register-assertion-global",
                              key_func=lambda: "service", exempt_when=_unless("identity_assertion")),
)


def registration_limited(view):
    """Decorator: the per-IP and service-wide registration limits, counted by registration_kind()."""
    for declaration in _REGISTRATION_LIMITS:
        view = declaration(view)
    return view


def _hashed(value) -> str | None:
    # keys never hold a token or an address in clear: the store may be shared and inspected
    if not isinstance(value, str) or not value or len(value) > 400:
        return None
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def field_key(name: str):
    """Key function: a digest of one body field (claim_token, claim_attempt_token)."""
    return lambda: _hashed(peek().get(name)) or "-"


def lacks_field(name: str):
    return lambda: _hashed(peek().get(name)) is None


_MAIL = "authmd.claim_mail_email"


def claim_mail_email() -> str | None:
    """The address a claim email would go to, in the one normalised form the mail is sent to
    (users.normalize_email), so no spelling of an address (case, full-width letters, an IDN domain in
    punycode) counts apart from another; None when the body names none or one that does not normalise
    (the view refuses that body anyway). Worked out once per request."""
    env = request.environ
    if _MAIL not in env:
        env[_MAIL] = _claim_mail_email()
    return env[_MAIL]


def _claim_mail_email() -> str | None:
    from .users import normalize_email  # users pulls in the domain; the limiter is built before it is needed
    from .util import ProtocolError
    data = peek()
    if request.path == "/agent/auth":
        if data.get("type") != "identity_assertion" or data.get("assertion_type") != "verified_email":
            return None
        value = data.get("assertion")
    else:
        value = data.get("email")
    try:
        return normalize_email(value)
    except ProtocolError:
        return None


def claim_mail_key() -> str:
    return _hashed(claim_mail_email()) or "-"


def refused(response) -> bool:
    """deduct_when: count a request against the limit only when it was refused."""
    return response.status_code >= 400


# one counter per address across every endpoint that sends a claim email
claim_mail_limit = declarations.shared_limit(limit_value("RATELIMIT_CLAIM_MAIL_PER_EMAIL"), scope="claim-mail-email",
                                             key_func=claim_mail_key, exempt_when=lambda: claim_mail_email() is None)


def init_app(app) -> None:
    """Build this app's Limiter and apply the limits its views declared. Call it after every blueprint is
    registered (it reads app.view_functions)."""
    cfg = app.config
    for key, value in DEFAULTS.items():
        cfg.setdefault(key, value)
    for key in DEFAULTS:
        try:  # a typo in a limit would otherwise switch that limit off quietly, request after request
            parse_many(str(cfg[key]))
        except ValueError:
            raise ValueError(f"{key}={cfg[key]!r} is not a rate limit like '5/hour' or '5 per hour; 50 per day'") from None
    options = dict(cfg.get("RATELIMIT_STORAGE_OPTIONS") or {})
    if str(cfg.get("RATELIMIT_STORAGE_URI", "")).startswith(("redis://", "rediss://")):
        # a store that hangs must not hang every request: give up fast and fail open
        options.setdefault("socket_connect_timeout", 0.5)
        options.setdefault("socket_timeout", 0.5)
    options["wrap_exceptions"] = True  # a store failure arrives as limits' StorageError: the only kind that fails open
    cfg["RATELIMIT_STORAGE_OPTIONS"] = options
    limiter = Limiter(key_func=client_ip)
    limiter.init_app(app)
    app.extensions[_APP_KEY] = limiter
    if not limiter.enabled:
        return
    _apply_declarations(app, limiter)
    _log_store_failures()

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc):
        return too_many("v0.1")


MESSAGE = "Too many requests; wait Retry-After seconds and retry."


def too_many(style: str):
    """The 429 answer to a request over a limit (the request's transaction rolled back), with Retry-After:
    "v0.1": {"error": "rate_limited", "message"} (v0.1's endpoints and the console's forms);
    "latest": {"error": "rate_limit_exceeded", "message", "retry_after"} (decision 10);
    "oauth": the same plus error_description (RFC 6749 has no code for it: the latest protocol's, in both
    of the fields the official client reads), with the token endpoint's no-store headers;
    "set": {"err": "rate_limit_exceeded", "description"} (RFC 8935 has no code for it either: its shape)."""
    from . import tx
    from .protocol.errors import json_error
    tx.rollback()
    seconds = retry_after()
    headers = {"Retry-After": str(seconds)}
    if style == "v0.1":
        return json_error(429, "rate_limited", MESSAGE, headers)
    if style == "set":
        resp = jsonify({"err": "rate_limit_exceeded", "description": MESSAGE})
        resp.status_code = 429
        resp.headers.update({**headers, "Cache-Control": "no-store"})
        return resp
    extra = {"retry_after": seconds}
    if style == "oauth":
        extra["error_description"] = MESSAGE
        headers["Pragma"] = "no-cache"
    return json_error(429, "rate_limit_exceeded", MESSAGE, headers, extra)


def _apply_declarations(app, limiter: Limiter) -> None:
    built = {}  # id(declaration) -> its RouteLimit in this app: a shared limit is one object on every view
    for endpoint, view in list(app.view_functions.items()):
        found = getattr(view, declarations.ATTR, None)
        if not found:
            continue
        wrapped = _refuse_if_check_failed(view)
        for declaration in found:
            route_limit = built.get(id(declaration))
            if route_limit is None:
                route_limit = built[id(declaration)] = _build(limiter, declaration)
            wrapped = route_limit(wrapped)
        app.view_functions[endpoint] = wrapped


def _build(limiter: Limiter, declaration):
    shared, value, kwargs = declaration
    kwargs = dict(kwargs)
    if "key_func" in kwargs:
        kwargs["key_func"] = _never_raises(kwargs["key_func"], "-")
    if "exempt_when" in kwargs:
        kwargs["exempt_when"] = _never_raises(kwargs["exempt_when"], False)
    if shared:
        return limiter.shared_limit(value, kwargs.pop("scope"), **kwargs)
    return limiter.limit(value, **kwargs)


def _never_raises(fn, fallback):
    """A key or exempt function that cannot raise: Flask-Limiter would skip every limit of the route. On a
    bug the limit still applies (one shared bucket, not exempt) and the log says so."""
    @functools.wraps(fn)
    def safe():
        try:
            return fn()
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("rate-limit key or exempt function failed on %s: limiting with a shared key",
                          request.path)
            return fallback
    return safe


def _refuse_if_check_failed(view):
    """Innermost wrapper: Flask-Limiter swallows any error of a check (RATELIMIT_SWALLOW_ERRORS, for a store
    that is down); when the error was not the store's (_FailOpenFilter marks the request), the request is
    refused rather than served unlimited."""
    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if request.environ.get(_CHECK_FAILED):
            raise RuntimeError("a rate-limit check failed for a reason other than its store: refusing the request")
        return view(*args, **kwargs)
    return guarded


def app_limiter(app=None) -> Limiter | None:
    return (app or current_app).extensions.get(_APP_KEY)


def retry_after() -> int:
    limiter = app_limiter()
    current = limiter.current_limit if limiter is not None else None
    if current is None:
        return 60
    try:
        return max(1, math.ceil(current.window[0] - time.time()))
    except Exception:  # noqa: BLE001 - the store may have gone away in between
        return 60


class _FailOpenFilter(logging.Filter):
    """flask-limiter logs a traceback per request when a check raises and it swallows the error. A store
    that is down is said once a request, plainly (failing open); anything else is a bug: it is logged with
    its traceback and the request is marked, so _refuse_if_check_failed refuses it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Swallowing error" not in record.getMessage():
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (StorageError, ConnectionError, TimeoutError)):
            log.warning("rate-limit store unreachable (%s): failing open, request not limited",
                        type(exc.storage_error if isinstance(exc, StorageError) else exc).__name__)
            return False
        if has_request_context():
            request.environ[_CHECK_FAILED] = True
        log.error("rate-limit check failed (%s), not a store error: refusing the request",
                  type(exc).__name__ if exc else "error", exc_info=record.exc_info)
        return False


def _log_store_failures() -> None:
    flog = logging.getLogger("flask-limiter")
    if not any(isinstance(f, _FailOpenFilter) for f in flog.filters):
        flog.addFilter(_FailOpenFilter())


__all__ = ["client_ip", "limit_value", "field_key", "lacks_field", "registration_kind", "registration_limited",
           "claim_mail_email", "refused", "init_app", "app_limiter", "too_many", "DEFAULTS"]
