"""Audit rows tagged with their protocol (decision 12): every row an agent- or provider-facing path writes says
"v0.1" or "latest", the console's and the operators' own rows say nothing; checked row by row on whole flows."""
import time

from authmd import revocation
from authmd.extensions import db
from authmd.models import AuditEvent, User
from authmd.util import utcnow
from tests.fixtures.flows import Agent, Person, audit_rows, link_token, set_settings
from tests.fixtures.latest import authorize
from tests.fixtures.provider import REVOKED_EVENT, trust

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def wrong(code):
    return f"{(int(code) + 1) % 1_000_000:06d}"


def trail(app, registration_id):
    """(event, actor kind, protocol) of every row about one registration, oldest first."""
    with app.app_context():
        return [tuple(r) for r in db.session.execute(
            db.select(AuditEvent.event, AuditEvent.actor_kind, AuditEvent.protocol)
            .where(AuditEvent.registration_id == registration_id).order_by(AuditEvent.id)).all()]


def admin_revokes(app, registration_id):
    with app.test_request_context():
        revocation.revoke_registration(registration_id, actor_kind="admin", actor_id="root@example.com")
        db.session.commit()


def test_v01_flows_tag_every_row_v01(app, capp, smtp, clock, provider):
    agent, person = Agent(capp), Person(capp, smtp)
    # anonymous → claim by email → code → a wrong one → the right one → an admin revokes it
    reg = agent.register_anonymous()
    assert agent.claim(reg["claim_token"], "ada@example.com").status_code == 200
    code = person.reveal(person.link("ada@example.com"))
    assert agent.complete(reg["claim_token"], wrong(code)).status_code == 401
    assert agent.complete(reg["claim_token"], code).status_code == 200
    admin_revokes(app, reg["registration_id"])
    assert trail(app, reg["registration_id"]) == [
        ("registration.created", "agent", "v0.1"), ("credential.issued", "agent", "v0.1"),
        ("claim.requested", "agent", "v0.1"), ("otp.generated", "user", "v0.1"), ("otp.failed", "agent", "v0.1"),
        ("claim.confirmed", "agent", "v0.1"), ("registration.revoked", "admin", "v0.1")]

    # email required → the person refuses
    bob = agent.register_email("bob@example.com")
    assert person.deny(person.link("bob@example.com")).status_code == 200
    assert trail(app, bob["registration_id"]) == [
        ("registration.created", "agent", "v0.1"), ("claim.requested", "agent", "v0.1"),
        ("claim.denied", "user", "v0.1")]

    # a claim mail that cannot be delivered; a registration locked by wrong codes; one that expires
    mail = agent.register_anonymous()
    smtp.refuse = True
    assert agent.claim(mail["claim_token"], "carol@example.com").status_code == 503
    smtp.refuse = False
    set_settings(app, otp_max_failures_per_registration=1)
    locked = agent.register_anonymous()
    agent.claim(locked["claim_token"], "dan@example.com")
    challenge = agent.post("/agent/auth/claim/attempt/challenge",
                           {"claim_attempt_token": link_token(person.link("dan@example.com"))}).json()["challenge"]
    assert agent.complete(locked["claim_token"], wrong(challenge)).status_code == 401
    late = agent.register_anonymous()
    clock.advance(hours=25)
    assert agent.api(late["credential"]).status_code == 401
    assert trail(app, mail["registration_id"])[2:] == [("claim.requested", "agent", "v0.1"),
                                                       ("claim.mail_failed", "system", "v0.1")]
    assert trail(app, locked["registration_id"])[-2:] == [("otp.failed", "agent", "v0.1"),
                                                          ("claim.locked", "system", "v0.1")]
    assert trail(app, late["registration_id"])[-1] == ("registration.expired", "system", "v0.1")
    clock.advance(hours=-25)

    # agent verified by an ID-JAG; one refused; the provider's logout token
    trust(app, provider)
    r = agent.post("/agent/auth", {"type": "identity_assertion", "assertion_type": ID_JAG,
                                   "assertion": provider.id_jag(email="erin@example.com"),
                                   "requested_credential_type": "api_key"})
    assert r.status_code == 200, r.text
    agent_reg = r.json()["registration_id"]
    bad = agent.post("/agent/auth", {"type": "identity_assertion", "assertion_type": ID_JAG,
                                     "assertion": provider.id_jag(aud="https://elsewhere.example"),
                                     "requested_credential_type": "api_key"})
    assert bad.status_code == 400
    out = capp.post("/agent/auth/revoke", data=provider.logout_token(), content_type="application/logout+jwt")
    assert out.status_code == 200, out.text
    assert trail(app, agent_reg) == [("registration.created", "agent", "v0.1"),
                                     ("credential.issued", "agent", "v0.1"),
                                     ("registration.revoked", "provider", "v0.1")]
    rejected = audit_rows(app, "assertion.rejected")
    assert [(e["actor_kind"], e["protocol"], e["iss"]) for e in rejected] == [("agent", "v0.1", provider.issuer)]


def _authorize(app, uri, user_id):
    return authorize(app, uri, user_id)["user_code"]


def test_latest_flows_tag_every_row_latest(app, client, clock, provider):
    with app.app_context():
        user = User(email="ada@example.com", email_verified=True, created_at=utcnow(), source="test")
        db.session.add(user)
        db.session.commit()
        uid = user.id
    # anonymous → token → claim → the person authorizes → a wrong code → the right one → refresh → reuse
    reg = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    pre = client.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": reg["identity"]["assertion"]})
    assert pre.status_code == 200
    start = client.post("/agent/identity/claim", json={"type": "service_auth", "claim_token": reg["claim"]["token"],
                                                       "login_hint": "ada@example.com"})
    uri = start.get_json()["attempt"]["verification_uri"]
    code = _authorize(app, uri, uid)
    done = {"claim_token": reg["claim"]["token"], "user_code": wrong(code)}
    assert client.post("/agent/identity/claim/complete", json=done).status_code == 401
    claimed = client.post("/agent/identity/claim/complete", json={**done, "user_code": code}).get_json()
    first = claimed["identity"]["refresh_token"]["value"]
    assert client.post("/agent/identity", json={"type": "refresh", "refresh_token": first}).status_code == 200
    reused = client.post("/agent/identity", json={"type": "refresh", "refresh_token": first})
    assert reused.get_json()["error"] == "invalid_refresh_token"
    assert client.post("/oauth2/revoke", data={"token": pre.get_json()["access_token"]}).status_code == 200
    admin_revokes(app, reg["id"])
    assert trail(app, reg["id"]) == [
        ("registration.created", "agent", "latest"), ("assertion.issued", "agent", "latest"),
        ("token.issued", "agent", "latest"), ("claim.requested", "agent", "latest"),
        ("user_code.revealed", "user", "latest"), ("otp.failed", "agent", "latest"),
        ("claim.confirmed", "agent", "latest"), ("assertion.issued", "agent", "latest"),
        ("assertion.issued", "agent", "latest"), ("assertion.refreshed", "agent", "latest"),
        ("refresh_token.reused", "system", "latest")]
    # (the reuse ended the registration too, so the admin's revocation found nothing live left to end)
    # (the access token was revoked with the family at the reuse: /oauth2/revoke found nothing left to revoke)

    # a holder's revocation of a live access token; an anonymous registration that expires unclaimed
    other = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    token = client.post("/oauth2/token", data={"grant_type": JWT_BEARER,
                                               "assertion": other["identity"]["assertion"]}).get_json()
    assert client.post("/oauth2/revoke", data={"token": token["access_token"]}).status_code == 200
    clock.advance(hours=25)
    late = client.post("/agent/identity/claim", json={"type": "service_auth", "claim_token": other["claim"]["token"],
                                                      "login_hint": "ada@example.com"})
    assert late.status_code == 410 and late.get_json()["error"] == "claim_expired"
    clock.advance(hours=-25)
    assert trail(app, other["id"])[-2:] == [("token.revoked", "agent", "latest"),
                                            ("registration.expired", "system", "latest")]

    # a provider's ID-JAG; one refused (no recent sign-in); its Security Event Token
    trust(app, provider)
    now = int(time.time())
    r = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                             "assertion": provider.id_jag(email="erin@example.com", auth_time=now)})
    assert r.status_code == 200, r.text
    agent_reg = r.get_json()["id"]
    old = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                               "assertion": provider.id_jag(auth_time=now - 86400)})
    assert old.status_code == 401
    event = provider.sign({"iss": provider.issuer, "sub": "user-123", "aud": "http://localhost:8000", "iat": now,
                           "jti": f"set-{now}", "events": {REVOKED_EVENT: {}}}, typ="secevent+jwt")
    assert client.post("/agent/event/notify", data=event,
                       content_type="application/secevent+jwt").status_code == 202
    assert trail(app, agent_reg) == [("registration.created", "agent", "latest"),
                                     ("assertion.issued", "agent", "latest"),
                                     ("registration.revoked", "provider", "latest")]
    rejected = audit_rows(app, "assertion.rejected")
    assert [(e["actor_kind"], e["protocol"], e["data"]["error"]) for e in rejected] == [
        ("agent", "latest", "login_required")]


def test_console_and_operator_rows_carry_no_protocol_and_every_agent_row_does(app, admin_client, client):
    from tests.fixtures.console import csrf_token
    client.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"})
    client.post("/agent/identity", json={"type": "anonymous"})
    page = admin_client.get("/console/keys/rotate").get_data(as_text=True)
    assert admin_client.post("/console/keys/rotate", data={"csrf_token": csrf_token(page)}).status_code == 302
    set_settings(app, service_name="Acme")
    rows = audit_rows(app)
    untagged = {e["event"] for e in rows if e["protocol"] is None}
    assert untagged == {"admin.created", "admin.login", "key.rotated", "settings.changed"}
    assert all(e["protocol"] in ("v0.1", "latest") for e in rows if e["actor_kind"] in ("agent", "provider"))
