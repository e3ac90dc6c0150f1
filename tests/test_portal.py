"""Portal: passwordless sign-in by emailed link, pending claims (show code / this wasn't me), my agents."""
import re

from authmd.extensions import db
from authmd.models import AuditEvent, ClaimAttempt, LoginLink, Registration
from tests.fixtures.console import csrf_token, post_form

LINK = r"https?://\S+/portal/login/link\?token=\S+"


def portal_sign_in(client, smtp, email):
    r = post_form(client, "/portal/login", {"email": email})
    assert r.status_code == 200
    link = smtp.last_link(email, LINK).replace("http://localhost:8000", "")
    page = client.get(link)
    assert page.status_code == 200
    token = link.split("token=")[1]
    return client.post("/portal/login/link", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                   "token": token})


def anonymous_claim(app, email):
    agent = app.test_client()
    reg = agent.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()
    r = agent.post("/agent/auth/claim", json={"claim_token": reg["claim_token"], "email": email})
    assert r.status_code == 200
    return agent, reg, r.get_json()


def test_same_answer_for_known_and_unknown_addresses(app, smtp):
    known = app.test_client()
    portal_sign_in(known, smtp, "known@example.com")
    a = post_form(app.test_client(), "/portal/login", {"email": "known@example.com"}).get_data(as_text=True)
    b = post_form(app.test_client(), "/portal/login", {"email": "nobody@example.com"}).get_data(as_text=True)
    strip = lambda h: re.sub(r'value="[^"]+"', "", h)  # noqa: E731
    assert strip(a) == strip(b)
    bad = post_form(app.test_client(), "/portal/login", {"email": "not an email"})
    assert bad.status_code == 400 and 'id="email-error"' in bad.get_data(as_text=True)


def test_sign_in_link_works_once_stored_as_digest_and_expires(app, smtp, clock):
    client = app.test_client()
    r = portal_sign_in(client, smtp, "ada@example.com")
    assert r.status_code == 302 and r.headers["Location"].endswith("/portal/")
    assert client.get("/portal/").status_code == 200
    link = smtp.last_link("ada@example.com", LINK)
    token = link.split("token=")[1]
    with app.app_context():
        assert db.session.execute(db.select(LoginLink.digest)).scalar() != token
    again = app.test_client()
    page = again.get("/portal/login/link?token=" + token)
    assert page.status_code == 410
    post_form(app.test_client(), "/portal/login", {"email": "late@example.com"})
    late = smtp.last_link("late@example.com", LINK).split("token=")[1]
    clock.advance(minutes=16)
    assert app.test_client().get("/portal/login/link?token=" + late).status_code == 410


def test_a_get_on_the_link_does_not_spend_it(app, smtp):
    post_form(app.test_client(), "/portal/login", {"email": "scan@example.com"})
    path = smtp.last_link("scan@example.com", LINK).replace("http://localhost:8000", "")
    scanner = app.test_client()
    assert scanner.get(path).status_code == 200
    assert scanner.get("/portal/").status_code == 302  # looking is not signing in
    assert app.test_client().get(path).status_code == 200


def test_pending_claim_code_from_the_portal_completes_the_claim(app, smtp):
    agent, reg, attempt = anonymous_claim(app, "ada@example.com")
    user = app.test_client()
    portal_sign_in(user, smtp, "ada@example.com")
    home = user.get("/portal/").get_data(as_text=True)
    assert "Agents asking to act for you" in home and "api.read, api.write" in home
    assert reg["claim_token"] not in home and reg["credential"] not in home
    r = user.post(f"/portal/claims/{attempt['claim_attempt_id']}/code", data={"csrf_token": csrf_token(home)})
    assert r.headers["Cache-Control"] == "no-store"
    code = re.search(r'id="otp"[^>]*>(\d{6})<', r.get_data(as_text=True)).group(1)
    done = agent.post("/agent/auth/claim/complete", json={"claim_token": reg["claim_token"], "otp": code})
    assert done.status_code == 200 and done.get_json()["status"] == "claimed"
    with app.app_context():
        gen = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "otp.generated")).scalar()
        assert gen.actor_kind == "user" and code not in (gen.data or "")
    home = user.get("/portal/").get_data(as_text=True)
    assert "No agent is waiting for you." in home and reg["registration_id"] in home


def test_someone_else_cannot_mint_a_code_for_my_claim(app, smtp):
    _, _, attempt = anonymous_claim(app, "ada@example.com")
    mallory = app.test_client()
    portal_sign_in(mallory, smtp, "mallory@example.com")
    home = mallory.get("/portal/").get_data(as_text=True)
    r = mallory.post(f"/portal/claims/{attempt['claim_attempt_id']}/code", data={"csrf_token": csrf_token(home)})
    assert r.status_code == 404 and 'id="otp"' not in r.get_data(as_text=True)
    assert mallory.get(f"/portal/claims/{attempt['claim_attempt_id']}/deny").status_code == 404


def test_this_was_not_me_denies_and_keeps_the_pre_claim_key(app, smtp):
    agent, reg, attempt = anonymous_claim(app, "ada@example.com")
    user = app.test_client()
    portal_sign_in(user, smtp, "ada@example.com")
    confirm = user.get(f"/portal/claims/{attempt['claim_attempt_id']}/deny")
    assert confirm.status_code == 200 and "This wasn&#39;t you?" in confirm.get_data(as_text=True)
    user.post(f"/portal/claims/{attempt['claim_attempt_id']}/deny",
              data={"csrf_token": csrf_token(confirm.get_data(as_text=True))})
    with app.app_context():
        assert db.session.get(ClaimAttempt, attempt["claim_attempt_id"]).status == "denied"
        assert db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "claim.denied")).scalar()
    key = {"Authorization": "Bearer " + reg["credential"]}
    assert agent.get("/api/resource", headers=key).status_code == 200
    again = agent.post("/agent/auth/claim", json={"claim_token": reg["claim_token"], "email": "ada@example.com"})
    assert again.status_code == 403 and again.get_json()["error"] == "claim_denied"


def test_my_agents_revoke_after_confirmation(app, smtp):
    agent, reg, attempt = anonymous_claim(app, "ada@example.com")
    user = app.test_client()
    portal_sign_in(user, smtp, "ada@example.com")
    home = user.get("/portal/").get_data(as_text=True)
    r = user.post(f"/portal/claims/{attempt['claim_attempt_id']}/code", data={"csrf_token": csrf_token(home)})
    code = re.search(r'id="otp"[^>]*>(\d{6})<', r.get_data(as_text=True)).group(1)
    agent.post("/agent/auth/claim/complete", json={"claim_token": reg["claim_token"], "otp": code})
    other = app.test_client()
    portal_sign_in(other, smtp, "eve@example.com")
    assert other.get(f"/portal/agents/{reg['registration_id']}/revoke").status_code == 404
    confirm = user.get(f"/portal/agents/{reg['registration_id']}/revoke")
    assert "<strong>1</strong>" in confirm.get_data(as_text=True)
    user.post(f"/portal/agents/{reg['registration_id']}/revoke",
              data={"csrf_token": csrf_token(confirm.get_data(as_text=True))})
    assert agent.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]}).status_code == 401
    with app.app_context():
        assert db.session.get(Registration, reg["registration_id"]).status == "revoked"
        row = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "registration.revoked")).scalar()
        assert row.actor_kind == "user"


def test_my_provider_delegation_revokes_through_the_same_confirmation(app, smtp, provider, register_id_jag):
    from authmd.models import Delegation
    from tests.fixtures.provider import trust
    trust(app, provider)
    agent = app.test_client()
    r = register_id_jag(agent, provider.id_jag(email="ada@example.com", sub="ada-at-idp"))
    assert r.status_code == 200, r.get_json()
    key = {"Authorization": "Bearer " + r.get_json()["credential"]}
    with app.app_context():
        dele = db.session.execute(db.select(Delegation)).scalar_one().id
    other = app.test_client()
    portal_sign_in(other, smtp, "eve@example.com")
    assert other.get(f"/portal/delegations/{dele}/revoke").status_code == 404
    home = other.get("/portal/").get_data(as_text=True)
    assert other.post(f"/portal/delegations/{dele}/revoke", data={"csrf_token": csrf_token(home)}).status_code == 404
    assert agent.get("/api/resource", headers=key).status_code == 200  # eve changed nothing
    user = app.test_client()
    portal_sign_in(user, smtp, "ada@example.com")
    confirm = user.get(f"/portal/delegations/{dele}/revoke").get_data(as_text=True)
    assert "Revoke this provider delegation?" in confirm and "<strong>1</strong> live credential(s)" in confirm
    assert '<a class="button" href="/portal/">Cancel</a>' in confirm
    done = user.post(f"/portal/delegations/{dele}/revoke", data={"csrf_token": csrf_token(confirm)})
    assert done.status_code == 302 and done.headers["Location"] == "/portal/"
    assert "Revoked: 1 credential(s) stopped working." in user.get("/portal/").get_data(as_text=True)
    assert agent.get("/api/resource", headers=key).status_code == 401
    with app.app_context():
        assert db.session.get(Delegation, dele).revoked_at is not None
        row = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "registration.revoked")).scalar()
        assert row.actor_kind == "user"


def test_the_portal_shows_every_time_in_one_format(app, smtp):
    agent, reg, attempt = anonymous_claim(app, "ada@example.com")
    user = app.test_client()
    portal_sign_in(user, smtp, "ada@example.com")
    home = user.get("/portal/").get_data(as_text=True)
    r = user.post(f"/portal/claims/{attempt['claim_attempt_id']}/code", data={"csrf_token": csrf_token(home)})
    for page in (home, r.get_data(as_text=True)):
        shown = re.sub(r"<[^>]+>", "", page)  # the text a reader sees (datetime= attributes hold the ISO form)
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", shown), "an ISO timestamp shown as text"
        times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)? UTC", shown)
        assert len(times) >= 2 and len(times) == len(re.findall(r"\d{4}-\d\d-\d\d", shown))
    assert re.search(r"It is valid until <time datetime=\"[^\"]+Z\">", r.get_data(as_text=True))
