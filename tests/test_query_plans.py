"""Every statement an agent-facing request runs reaches its rows through an index (SQLite's plans).

The agent and resource-server endpoints must cost the same with a hundred registrations or a million.
SQLite plans without statistics, so a statement that looks indexed can still walk a table (a subquery beside
`status = 'active'` once walked every active registration on each provider revocation). Here the flows of
both protocol versions run with sqlite3's trace callback on, and each statement they ran is explained:
no step may SCAN a table that grows with use. Small configuration tables (settings, scopes, issuers, keys,
resource servers) may be read whole.
"""
import sqlite3
import time

import pytest
from tests.fixtures.provider import REVOKED_EVENT, trust
from tests.fixtures.resource import add_resource_server
from tests.fixtures.tracing import sqlite_path, sqlite_statements
from tests.fixtures.latest import add_person as _user, authorize as _authorize

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# tables that grow with registrations, calls and time
GROWING = {"registrations", "credentials", "delegations", "users", "audit_events", "refresh_tokens",
           "claim_attempts", "seen_jtis", "outbox", "login_links", "login_failures"}


@pytest.fixture
def traced(app):
    with sqlite_statements(app) as statements:
        yield statements
    path = sqlite_path(app)
    conn = sqlite3.connect(path)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert GROWING <= tables  # (a renamed table would otherwise drop out of the check unseen)
        walks = []
        seen = set()
        for sql in statements:
            head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if head not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH") or sql in seen:
                continue
            seen.add(sql)
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
                step = row[3]
                words = step.split()
                if words[:1] == ["SCAN"] and len(words) > 1 and words[1] in GROWING:
                    walks.append((step, sql))
                if "ix_registrations_status_created (status=?)" in step:
                    walks.append((step, sql))
        assert len(seen) > 20, statements
        assert not walks, "\n\n".join(f"{step}\n  in {sql}" for step, sql in walks)
    finally:
        conn.close()


def test_the_v01_flows_find_their_rows_by_index(app, client, provider, traced):
    trust(app, provider)
    rs = add_resource_server(app)
    anon = client.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()
    auth = {"Authorization": "Bearer " + anon["credential"]}
    assert client.get("/api/resource", headers=auth).status_code == 200
    assert client.get("/auth/forward", headers={**auth, "X-Authmd-Required-Scope": "api.read"}).status_code == 200
    assert client.post("/oauth2/introspect", data={"token": anon["credential"]},
                       headers=rs.basic).get_json()["active"] is True
    claim = client.post("/agent/auth/claim", json={"claim_token": anon["claim_token"], "email": "ada@example.com"})
    assert claim.status_code == 200, claim.get_data(as_text=True)
    wrong = client.post("/agent/auth/claim/complete", json={"claim_token": anon["claim_token"], "otp": "000000"})
    assert wrong.status_code in (400, 401), wrong.get_data(as_text=True)
    verified = client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                                "assertion": provider.id_jag(),
                                                "requested_credential_type": "access_token"})
    assert verified.status_code == 200, verified.get_data(as_text=True)
    assert client.get("/api/resource", headers={
        "Authorization": "Bearer " + verified.get_json()["credential"]}).status_code == 200
    revoked = client.post("/agent/auth/revoke", data=provider.logout_token("user-123"),
                          content_type="application/logout+jwt")
    assert revoked.get_json() == {"revoked": 1}


def test_the_latest_flows_find_their_rows_by_index(app, client, provider, traced):
    trust(app, provider)
    rs = add_resource_server(app)
    reg = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    pre = client.post("/oauth2/token", data={"grant_type": JWT_BEARER,
                                             "assertion": reg["identity"]["assertion"]}).get_json()
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + pre["access_token"]}).status_code == 200
    assert client.post("/oauth2/introspect", data={"token": pre["access_token"]},
                       headers=rs.basic).get_json()["active"] is True
    start = client.post("/agent/identity/claim", json={"type": "service_auth", "claim_token": reg["claim"]["token"],
                                                       "login_hint": "ada@example.com"}).get_json()
    code = _authorize(app, start["attempt"]["verification_uri"], _user(app))["user_code"]
    claimed = client.post("/agent/identity/claim/complete", json={"claim_token": reg["claim"]["token"],
                                                                  "user_code": code}).get_json()
    refresh = claimed["identity"]["refresh_token"]["value"]
    again = client.post("/agent/identity", json={"type": "refresh", "refresh_token": refresh})
    assert again.status_code == 200, again.get_data(as_text=True)
    reused = client.post("/agent/identity", json={"type": "refresh", "refresh_token": refresh})
    assert reused.status_code == 400, reused.get_data(as_text=True)  # a spent one: the family is revoked
    assert client.post("/oauth2/revoke", data={"token": pre["access_token"]}).status_code == 200

    got = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                               "assertion": provider.id_jag(sub="set-leaver",
                                                                            auth_time=int(time.time()) - 60)})
    assert got.status_code == 200, got.get_data(as_text=True)
    token = client.post("/oauth2/token", data={"grant_type": JWT_BEARER,
                                               "assertion": got.get_json()["identity"]["assertion"]}).get_json()
    assert "access_token" in token, token
    now = int(time.time())
    set_token = provider.sign({"iss": provider.issuer, "sub": "set-leaver", "aud": "http://localhost:8000",
                               "iat": now, "jti": f"set-{now}", "events": {REVOKED_EVENT: {}}}, typ="secevent+jwt")
    sent = client.post("/agent/event/notify", data=set_token, content_type="application/secevent+jwt")
    assert sent.status_code == 202, sent.get_data(as_text=True)


def test_the_revocations_an_admin_or_a_person_starts_find_their_rows_by_index(app, client, provider, traced):
    """Revoking a registration, a delegation, everything of a person or of an issuer, and disabling a person:
    each holds SQLite's writer lock while it runs, so none may walk the registrations or credentials."""
    from authmd import revocation, users
    from authmd.extensions import db
    from authmd.models import Delegation
    trust(app, provider)
    anon = client.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()
    for sub in ("user-1", "user-2"):
        r = client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                             "assertion": provider.id_jag(sub=sub, email=f"{sub}@example.com"),
                                             "requested_credential_type": "access_token"})
        assert r.status_code == 200, r.get_data(as_text=True)
    person = _user(app, "someone@example.com")
    with app.app_context():
        delegation = db.session.execute(db.select(Delegation.id).where(Delegation.iss == provider.issuer,
                                                                       Delegation.sub == "user-1")).scalar_one()
        revocation.revoke_registration(anon["registration_id"], actor_id="test")
        revocation.revoke_delegation(delegation, actor_id="test")
        revocation.revoke_user(person, actor_id="test")
        users.disable(person, actor_id="test")
        revocation.revoke_issuer(provider.issuer, actor_id="test")
        db.session.commit()
