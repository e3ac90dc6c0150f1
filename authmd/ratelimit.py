"""Rate-limit room: the spec's §6 limits on Flask-Limiter, keyed by IP, email, registration or service-wide.

Counters live in AUTHMD_RATELIMIT_STORAGE_URI: `memory://` (the default) counts per worker process, so with
N workers a client gets up to N times the limit; `redis://host:port/db` shares the counters between workers
and nodes. When the store is down the limits fail open (the request goes through) and a line is logged.
"""
import hashlib
import logging
import math
import time

from flask import current_app, request
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from .extensions import client_ip, limiter

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
}


def limit_value(key: str):
    """A callable flask-limiter evaluates per request, so a config change needs no code change."""
    return lambda: current_app.config.get(key) or DEFAULTS[key]


def body() -> dict:
    """The JSON body when it is a JSON object, else {} (the view itself answers the bad body)."""
    if request.mimetype != "application/json":
        return {}
    try:
        data = request.get_json(silent=True)
    except HTTPException:  # e.g. 413: the view answers it
        return {}
    return data if isinstance(data, dict) else {}


def registration_kind() -> str | None:
    kind = body().get("type")
    return kind if kind in ("anonymous", "identity_assertion") else None


def _hashed(value) -> str | None:
    # keys never hold a token or an address in clear: the store may be shared and inspected
    if not isinstance(value, str) or not value or len(value) > 400:
        return None
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def field_key(name: str, *, lower: bool = False):
    """Key function: a digest of one body field (claim_token, claim_attempt_token, email)."""
    def key():
        value = body().get(name)
        if lower and isinstance(value, str):
            value = value.strip().lower()
        return _hashed(value) or "-"
    return key


def lacks_field(name: str):
    return lambda: _hashed(body().get(name)) is None


def claim_mail_email() -> str | None:
    """The address a claim email would go to, for the per-address limit."""
    data = body()
    if request.path == "/agent/auth":
        if data.get("type") != "identity_assertion" or data.get("assertion_type") != "verified_email":
            return None
        value = data.get("assertion")
    else:
        value = data.get("email")
    return value.strip().lower() if isinstance(value, str) else None


def claim_mail_key() -> str:
    return _hashed(claim_mail_email()) or "-"


# one counter per address across every endpoint that sends a claim email
claim_mail_limit = limiter.shared_limit(limit_value("RATELIMIT_CLAIM_MAIL_PER_EMAIL"), scope="claim-mail-email",
                                        key_func=claim_mail_key, exempt_when=lambda: claim_mail_email() is None)


def init_app(app) -> None:
    """Bind the shared limiter to this app; its state is per process, so re-read every setting here."""
    cfg = app.config
    for key, value in DEFAULTS.items():
        cfg.setdefault(key, value)
    if str(cfg.get("RATELIMIT_STORAGE_URI", "")).startswith(("redis://", "rediss://")):
        # a store that hangs must not hang every request: give up fast and fail open
        cfg.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 0.5, "socket_timeout": 0.5})
    # flask-limiter keeps storage and flags on the (module level) extension object and only fills
    # unset ones from config; forget the previous app's, so the newest app's config is what counts.
    limiter._storage_uri = None
    limiter._swallow_errors = None
    limiter._storage_dead = False
    limiter.enabled = True
    limiter.init_app(app)
    if not limiter.enabled:
        return
    _log_store_failures()

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc):
        from . import tx
        from .protocol.errors import json_error
        tx.rollback()
        return json_error(429, "rate_limited", "Too many requests; wait Retry-After seconds and retry.",
                          {"Retry-After": str(retry_after())})


def retry_after() -> int:
    current = limiter.current_limit
    if current is None:
        return 60
    try:
        return max(1, math.ceil(current.window[0] - time.time()))
    except Exception:  # noqa: BLE001 - the store may have gone away in between
        return 60


class _FailOpenFilter(logging.Filter):
    """flask-limiter logs a traceback per request when its store is down; say it once, plainly."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Swallowing error" in record.getMessage():
            exc = record.exc_info[1] if record.exc_info else None
            log.warning("rate-limit store unreachable (%s): failing open, request not limited",
                        type(exc).__name__ if exc else "error")
            return False
        return True


def _log_store_failures() -> None:
    flog = logging.getLogger("flask-limiter")
    if not any(isinstance(f, _FailOpenFilter) for f in flog.filters):
        flog.addFilter(_FailOpenFilter())


__all__ = ["client_ip", "limit_value", "field_key", "lacks_field", "registration_kind", "claim_mail_email",
           "init_app", "DEFAULTS"]
