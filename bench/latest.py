"""Benchmark room: what the latest protocol's rows send, made before they run.

- Identity assertions for POST /oauth2/token: the exchange does not spend an assertion (no jti is kept;
  an agent re-exchanges its assertion whenever its access token expires or is refused, authmd/tokens.py
  exchange), so a pool of pending anonymous registrations made through POST /agent/identity, each with the
  assertion it was handed, is cycled like the hot path's keys.
- Refresh tokens for POST /agent/identity {"type": "refresh"}: rotation spends a token and a spent token
  presented again revokes its family, so every request needs a token never sent. They belong to
  registrations claimed by a bench person (a refresh token exists only after a claim) and are bulk-loaded,
  each the head of its own family, as authmd/tokens.py issue_refresh writes them.
"""
import uuid
from datetime import timedelta

FORM_JWT_BEARER = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
REFRESH_COLS = ["digest", "prefix", "family_id", "registration_id", "user_id", "created_at", "expires_at"]


def anonymous_identities(app, count: int) -> list[tuple[str, str]]:
    """(registration id, assertion) of count new anonymous registrations, made through POST /agent/identity
    in-process (the bench app: rate limits off), so they are exactly what an agent holds."""
    client = app.test_client()
    out = []
    for _ in range(count):
        r = client.post("/agent/identity", json={"type": "anonymous"})
        assert r.status_code == 200, r.get_data(as_text=True)
        body = r.get_json()
        out.append((body["id"], body["identity"]["assertion"]))
    return out


def claim(app, db, reg_ids: list[str]) -> int:
    """Mark the registrations claimed by one bench person, with the columns the claim's completion sets
    (identity.complete_claim: status, user_id, claimed_at, email); the claim ceremony itself (a person on
    the /claim page) is not what the refresh row measures. Returns the person's user id."""
    from sqlalchemy import update
    from authmd.models import Registration, User
    from authmd.util import utcnow
    with app.app_context():
        now = utcnow()
        user = User(email=f"bench-person-{uuid.uuid4().hex[:8]}@example.com", email_verified=True, is_active=True,
                    created_at=now, source="bench")
        db.session.add(user)
        db.session.flush()
        db.session.execute(update(Registration).where(Registration.id.in_(reg_ids))
                           .values(status="claimed", user_id=user.id, claimed_at=now, email=user.email))
        db.session.commit()
        return user.id


def refresh_tokens(loader, reg_ids: list[str], user_id: int, count: int) -> list[str]:
    """count fresh refresh tokens spread over the registrations, each the head of a new family, loaded in bulk
    (the rows issue_refresh would write: digest, display prefix, family, expiry of refresh_token_ttl)."""
    from authmd import settings
    from authmd.secrets import digest, display_prefix, new_token
    from authmd.tokens import REFRESH_PREFIX
    ttl = timedelta(seconds=int(settings.DEFAULTS["refresh_token_ttl"]))
    now = loader.now
    tokens = [new_token(REFRESH_PREFIX, 32) for _ in range(count)]
    rows = ((digest(t), display_prefix(t), "rtf_" + uuid.uuid4().hex, reg_ids[n % len(reg_ids)], user_id,
             loader._ts(now), loader._ts(now + ttl)) for n, t in enumerate(tokens))
    loader._bulk("refresh_tokens", REFRESH_COLS, rows)
    return tokens
