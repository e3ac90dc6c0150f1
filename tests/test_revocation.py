"""Revocation room: one UPDATE per revoke, registration status, audit rows, and counts that match."""
from authmd import credentials, revocation
from authmd.extensions import db
from authmd.models import AuditEvent, Delegation, Registration, User
from authmd.util import utcnow
from tests.fixtures.console import csrf_token


def provider_agent(app, iss="https://idp.example", sub="sub-1", email="ada@example.com"):
    """An ID-JAG style registration with its delegation and an access token, as the idjag room makes them."""
    with app.app_context():
        now = utcnow()
        user = db.session.execute(db.select(User).where(User.email == email)).scalar()
        if user is None:
            user = User(email=email, email_verified=True, created_at=now)
            db.session.add(user)
            db.session.flush()
        reg_id = f"reg_{sub}"
        dele = Delegation(iss=iss, sub=sub, aud="http://localhost:8000", user_id=user.id, registration_id=reg_id,
                          agent_platform="ChatGPT", first_seen=now, last_seen=now)
        db.session.add(dele)
        db.session.flush()
        reg = Registration(id=reg_id, type="agent-provider", status="active", user_id=user.id, delegation_id=dele.id,
                           created_at=now, iss=iss, requested_credential_type="access_token")
        db.session.add(reg)
        cred, secret = credentials.issue(reg, "access_token", ["api.read"], user_id=user.id, delegation_id=dele.id)
        db.session.commit()
        return {"registration_id": reg_id, "delegation_id": dele.id, "user_id": user.id, "credential": secret}


def api(app, secret):
    return app.test_client().get("/api/resource", headers={"Authorization": "Bearer " + secret}).status_code


def test_revoke_issuer_counts_then_stops_every_credential_it_vouched_for(app):
    a = provider_agent(app, sub="s1")
    b = provider_agent(app, sub="s2", email="bob@example.com")
    other = provider_agent(app, iss="https://other.example", sub="s3")
    with app.app_context():
        assert revocation.count_issuer("https://idp.example") == 2
        assert revocation.count_registrations_of_issuer("https://idp.example") == 2
        assert revocation.revoke_issuer("https://idp.example", actor_id="root") == 2
        db.session.commit()
        assert revocation.count_issuer("https://idp.example") == 0
        statuses = {r.id: r.status for r in db.session.execute(db.select(Registration)).scalars()}
        assert statuses == {"reg_s1": "revoked", "reg_s2": "revoked", "reg_s3": "active"}
        assert all(d.revoked_at for d in db.session.execute(
            db.select(Delegation).where(Delegation.iss == "https://idp.example")).scalars())
        revoked = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "registration.revoked")).scalars().all()
        assert {e.registration_id for e in revoked} == {"reg_s1", "reg_s2"}
    assert [api(app, x["credential"]) for x in (a, b, other)] == [401, 401, 200]


def test_revoke_delegation_and_credential(app):
    a = provider_agent(app, sub="s1")
    with app.app_context():
        reg = db.session.get(Registration, a["registration_id"])
        second, secret2 = credentials.issue(reg, "api_key", ["api.read"], user_id=a["user_id"])
        db.session.commit()
        assert revocation.count_registration(reg.id) == 2
        assert revocation.revoke_credential(second.id, actor_id="root") == 1
        assert revocation.revoke_credential(second.id, actor_id="root") == 0  # twice changes nothing
        db.session.commit()
    assert api(app, secret2) == 401 and api(app, a["credential"]) == 200
    with app.app_context():
        assert revocation.count_delegation(a["delegation_id"]) == 1
        assert revocation.revoke_delegation(a["delegation_id"], actor_kind="user", actor_id=a["user_id"]) == 1
        db.session.commit()
        assert db.session.get(Registration, a["registration_id"]).status == "revoked"
    assert api(app, a["credential"]) == 401


def test_expired_credentials_are_not_counted_as_live(app, clock):
    provider_agent(app, sub="s1")
    clock.advance(hours=2)  # past the access token's hour
    with app.app_context():
        assert revocation.count_issuer("https://idp.example") == 0
        assert revocation.count_user(db.session.execute(db.select(User.id)).scalar()) == 0


def test_console_pages_show_a_provider_agent_and_revoke_its_delegation(app, admin_client):
    a = provider_agent(app, sub="s1")
    for url in (f"/console/registrations/{a['registration_id']}", "/console/delegations",
                f"/console/users/{a['user_id']}", "/console/registrations?issuer=https://idp.example"):
        html = admin_client.get(url).get_data(as_text=True)
        assert "https://idp.example" in html, url
        assert a["credential"] not in html and a["credential"][3:] not in html
    page = admin_client.get(f"/console/revoke?kind=delegation&target={a['delegation_id']}").get_data(as_text=True)
    assert "<strong>1</strong> live credential(s)" in page
    admin_client.post("/console/revoke", data={"csrf_token": csrf_token(page), "kind": "delegation",
                                               "target": a["delegation_id"]})
    assert api(app, a["credential"]) == 401
    issuer_page = admin_client.get("/console/revoke?kind=issuer&target=https://idp.example").get_data(as_text=True)
    assert "<strong>0</strong> live credential(s)" in issuer_page
