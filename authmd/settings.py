"""Settings room: runtime settings kept in the database, read once per request."""
import json

from flask import g, has_request_context

from . import audit
from .extensions import db
from .models import Setting
from .rawsql import Prepared

DEFAULTS = {
    "service_name": "authmd",
    "logo_uri": "",
    "anonymous_enabled": True,
    "verified_email_enabled": True,
    "id_jag_enabled": True,
    "registration_ttl": 24 * 3600,
    "claim_link_ttl": 10 * 60,
    "otp_ttl": 10 * 60,
    "access_token_ttl": 3600,
    "otp_max_per_attempt": 5,
    "otp_max_failures_per_attempt": 5,
    "otp_max_failures_per_registration": 20,
    "claim_max_attempts_per_hour": 10,  # per registration: new claim emails (spec §6), across every worker
    "existing_users_only": False,
    # the latest protocol (/agent/identity, /oauth2/token)
    "assertion_ttl": 3600,           # the service-signed identity assertion
    "refresh_token_ttl": 30 * 86400,  # sliding: each rotation starts a fresh period
    "user_code_ttl": 600,            # the code the claim page shows after Authorize
    "id_jag_max_auth_age": 3600,     # max_age: how old an ID-JAG's auth_time may be at /agent/identity
    # off: an ID-JAG whose verified email matches a user with no delegation from that (iss, sub) needs
    # that user's confirmation (the takeover guard); on: v0.1's silent link by email
    "link_identities_by_email": False,
    # the latest protocol's access tokens: "opaque" (at_…, checked at authmd) or "jwt" (RFC 9068 at+jwt,
    # also verifiable by an API on its own, which then cannot see a revocation before exp: hence short)
    "access_token_format": "opaque",
    "jwt_access_token_ttl": 300,
}


_ALL = db.select(Setting.key, Setting.value)  # columns, built once: no ORM identity work per request
_ALL_RAW = Prepared(_ALL)


def all_settings(connection=None) -> dict:
    """Every setting, read once per request. Given the session's connection (the registration paths),
    the read runs through rawsql, in the same transaction, without SQLAlchemy's per-statement work (no
    autoflush: only where no ORM object is pending)."""
    if has_request_context() and "authmd_settings" in g:
        return g.authmd_settings
    values = dict(DEFAULTS)
    rows = _ALL_RAW.all(connection=connection) if connection is not None else db.session.execute(_ALL)
    for key, value in rows:
        if key in DEFAULTS:
            values[key] = json.loads(value)
    if has_request_context():
        g.authmd_settings = values
    return values


def get(key: str):
    return all_settings()[key]


def update(changes: dict, *, actor_kind: str = "system", user_id=None, actor_id=None, ip=None,
           user_agent=None) -> dict:
    """Write the changed settings and one settings.changed audit row with before and after, in the caller's
    transaction; returns {key: (before, after)} (empty when nothing changed: no row then)."""
    from . import authdoc  # authdoc reads settings: imported here, not at the top
    current = all_settings()
    diff = {}
    for key, value in changes.items():
        if key not in DEFAULTS:
            raise KeyError(key)
        if current.get(key) != value:
            diff[key] = (current.get(key), value)
            db.session.merge(Setting(key=key, value=json.dumps(value)))
    if has_request_context():
        g.pop("authmd_settings", None)
    if diff:
        audit.record("settings.changed", actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent,
                     user_id=user_id, before={k: v[0] for k, v in diff.items()},
                     after={k: v[1] for k, v in diff.items()})
        authdoc.config_changed()
    return diff
