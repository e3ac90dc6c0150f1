"""The person's side of the latest claim over real HTTP: GET /claim and POST /claim/confirm against a live server,
the sign-in round trip with the portal's link read from the real SMTP server, the agent's completion and the
token exchange; the gates (unknown, no session, wrong account, claimed, expired, superseded, denied), CSRF,
headers, and the code kept out of logs and out of later pages."""
import logging
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from authmd.extensions import db
from authmd.models import AuditEvent, Delegation, LoginLink, User
from authmd.util import utcnow
from tests.conftest import count_rows
from tests.fixtures.latest import add_person as _user
from tests.fixtures.person import Browser, Page, user_code
from tests.fixtures.provider import trust

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class Agent:
    """The agent's side, over real HTTP."""

    def __init__(self, base):
        self.base = base
        self.http = requests.Session()

    def post(self, path, **kw):
        return self.http.post(self.base + path, timeout=10, **kw)

    def get(self, path, **kw):
        return self.http.get(self.base + path, timeout=10, **kw)

    def service_auth(self, email):
        r = self.post("/agent/identity", json={"type": "service_auth", "login_hint": email})
        assert r.status_code == 200, r.text
        body = r.json()
        return body, body["claim"]["token"], body["claim"]["attempt"]["verification_uri"]

    def anonymous_then_claim(self, email):
        r = self.post("/agent/identity", json={"type": "anonymous"})
        assert r.status_code == 200, r.text
        body = r.json()
        uri = self.claim(body["claim"]["token"], email)
        return body, body["claim"]["token"], uri

    def claim(self, claim_token, email):
        r = self.post("/agent/identity/claim", json={"type": "service_auth", "claim_token": claim_token,
                                                     "login_hint": email})
        assert r.status_code == 200, r.text
        return r.json()["attempt"]["verification_uri"]

    def complete(self, claim_token, code):
        return self.post("/agent/identity/claim/complete", json={"claim_token": claim_token, "user_code": code})

    def exchange(self, assertion):
        return self.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": assertion})

    def api(self, token):
        return self.get("/api/resource", headers={"Authorization": "Bearer " + token})


def _private(resp):
    for key, value in PRIVATE.items():
        assert resp.headers.get(key) == value, (key, resp.headers.get(key), resp.status_code)
    assert resp.headers["Content-Type"].startswith("text/html")


def _confirm_form(html):
    """The page's one form to /claim/confirm, exactly as the contract names its fields and buttons."""
    page = Page(html)
    form = page.form("/claim/confirm")
    assert form.method == "post"
    assert set(form.fields) == {"csrf_token", "claim_attempt_token"}
    assert sorted(form.buttons) == [("action", "authorize"), ("action", "deny")]
    return form


def _press(person, page_html, action):
    form = _confirm_form(page_html)
    return person.submit(form, ("action", action))


def _csrf(person) -> str:
    """A CSRF token of this browser's session (the portal's sign-out form carries one)."""
    return Page(person.get("/portal/").text).form("/logout").fields["csrf_token"]


def _attempt(app, uri):
    from authmd import latest_claims
    with app.test_request_context():
        attempt = latest_claims.attempt_by_token(uri.split("claim_attempt_token=", 1)[1])
        return {"id": attempt.id, "status": attempt.status, "confirmed_at": attempt.confirmed_at,
                "otp_digest": attempt.otp_digest, "minted": attempt.otp_minted_count}


@pytest.mark.parametrize("kind", ["service_auth", "anonymous"])
def test_the_person_signs_in_authorizes_and_the_agent_completes(app, live_server, smtp, caplog, kind):
    caplog.set_level(logging.DEBUG)
    agent, person = Agent(live_server.url), Browser(live_server.url)
    start = agent.service_auth if kind == "service_auth" else agent.anonymous_then_claim
    reg, claim_token, uri = start("Ada@Example.com")
    assert uri.startswith("http://localhost:8000/claim?claim_attempt_token=cvt_")
    attempt_token = uri.split("=", 1)[1]

    # no session: to the portal's sign-in, the address prefilled, and back once the mailed link is used
    back = person.sign_in_from(uri, smtp, "ada@example.com")
    assert back.status_code == 302 and back.headers["Location"] == person.local(uri)
    sign_in_token = smtp.last_link("ada@example.com", r"sil_\S+")

    page = person.get(back.headers["Location"])
    assert page.status_code == 200
    _private(page)
    form = _confirm_form(page.text)
    assert form.fields["claim_attempt_token"] == attempt_token
    assert "(self-reported, not verified)" in page.text and "python-requests" in page.text
    assert "127.0.0.1" in page.text and "api.read, api.write" in page.text
    assert user_code(page.text) is None

    early = agent.complete(claim_token, "000000")
    assert early.status_code == 409 and early.json()["error"] == "claim_not_confirmed"

    shown = person.submit(form, ("action", "authorize"))
    assert shown.status_code == 200
    _private(shown)
    code = user_code(shown.text)
    assert code is not None
    with app.app_context():
        stored = _attempt(app, uri)
        assert stored["confirmed_at"] is not None and stored["otp_digest"] not in (None, code)
        data = " ".join(str(d) for (d,) in db.session.execute(db.select(AuditEvent.data)))
        assert code not in data and attempt_token not in data
        assert db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "user_code.revealed")).scalar()

    # a reload shows no code, and offers Authorize again
    reload = person.get(back.headers["Location"])
    assert reload.status_code == 200 and user_code(reload.text) is None and code not in reload.text
    _confirm_form(reload.text)

    done = agent.complete(claim_token, code)
    assert done.status_code == 200, done.text
    claimed = done.json()
    assert claimed["status"] == "claimed" and claimed["id"] == reg["id"]
    token = agent.exchange(claimed["identity"]["assertion"])
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "api.read api.write"
    who = agent.api(token.json()["access_token"])
    assert who.status_code == 200 and who.json()["user"]["email"] == "ada@example.com"

    after = person.get(back.headers["Location"])
    assert after.status_code == 200 and "claimed" in Page(after.text).ids
    _private(after)

    # nothing secret in any log line: not the code, not the attempt token, not the sign-in link's token
    # (the server's loggers: the test's own HTTP client, urllib3, logs its URLs at DEBUG)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    assert "GET /claim?" in logged and "GET /portal/login?next=" in logged  # the request log was captured
    for secret in (code, attempt_token, sign_in_token.split("token=")[-1]):
        assert secret not in logged


def test_wrong_account_is_403_changes_nothing_and_offers_to_sign_out(app, live_server, smtp):
    agent, mallory = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, uri = agent.service_auth("ada@example.com")
    back = mallory.sign_in_from(uri, smtp, "ada@example.com", as_email="mallory@example.com")
    assert back.status_code == 302
    page = mallory.get(uri)
    assert page.status_code == 403
    _private(page)
    parsed = Page(page.text)
    assert "ada@example.com" in parsed.ids["wrong-account"] and "mallory@example.com" in parsed.ids["wrong-account"]
    assert not [f for f in parsed.forms if f.action == "/claim/confirm"]
    sign_out = parsed.form("/logout")

    before = count_rows(app)
    # a hand-made confirm (the token and a valid CSRF token of Mallory's session) is refused the same way
    r = mallory.post("/claim/confirm", data={"csrf_token": sign_out.fields["csrf_token"],
                                             "claim_attempt_token": uri.split("=", 1)[1], "action": "authorize"})
    assert r.status_code == 403 and user_code(r.text) is None
    r = mallory.post("/claim/confirm", data={"csrf_token": sign_out.fields["csrf_token"],
                                             "claim_attempt_token": uri.split("=", 1)[1], "action": "deny"})
    assert r.status_code == 403 and "denied" not in Page(r.text).ids
    assert count_rows(app) == before
    assert _attempt(app, uri)["confirmed_at"] is None and _attempt(app, uri)["status"] == "initiated"
    assert agent.complete(claim_token, "123456").json()["error"] == "claim_not_confirmed"

    # signing out comes back to the claim page, which sends the browser to sign in as the right person
    out = mallory.submit(sign_out)
    assert out.status_code == 302 and out.headers["Location"] == mallory.local(uri)
    again = mallory.get(out.headers["Location"])
    assert again.status_code == 302
    assert parse_qs(urlsplit(again.headers["Location"]).query)["email"] == ["ada@example.com"]


def test_this_was_not_me_then_the_agent_is_refused(app, live_server, smtp):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, uri = agent.service_auth("ada@example.com")
    person.sign_in_from(uri, smtp, "ada@example.com")
    r = _press(person, person.get(uri).text, "deny")
    assert r.status_code == 200 and "denied" in Page(r.text).ids and user_code(r.text) is None
    _private(r)
    refused = agent.complete(claim_token, "123456")
    assert refused.status_code == 403 and refused.json()["error"] == "claim_denied"
    with app.app_context():
        assert db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "claim.denied")).scalar()
    gone = person.get(uri)
    assert gone.status_code == 410 and not [f for f in Page(gone.text).forms if f.action == "/claim/confirm"]
    # the button pressed again (a page kept open) changes nothing
    before = count_rows(app)
    late = person.post("/claim/confirm", data={"csrf_token": _csrf(person),
                                               "claim_attempt_token": uri.split("=", 1)[1], "action": "authorize"})
    assert late.status_code == 410 and user_code(late.text) is None
    assert count_rows(app) == before


def test_an_expired_request_is_410(app, live_server, smtp, clock):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, uri = agent.service_auth("ada@example.com")
    person.sign_in_from(uri, smtp, "ada@example.com")
    open_page = person.get(uri).text
    clock.advance(seconds=601)  # claim_link_ttl is 600 s
    page = person.get(uri)
    assert page.status_code == 410 and "expired" in Page(page.text).ids
    _private(page)
    before = count_rows(app)
    r = _press(person, open_page, "authorize")
    assert r.status_code == 410 and user_code(r.text) is None
    assert count_rows(app) == before and _attempt(app, uri)["minted"] == 0
    assert agent.complete(claim_token, "123456").json()["error"] == "claim_expired"


def test_a_second_claim_request_makes_the_old_link_410(app, live_server, smtp):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, first = agent.service_auth("ada@example.com")
    person.sign_in_from(first, smtp, "ada@example.com")
    old_page = person.get(first).text
    second = agent.claim(claim_token, "ada@example.com")
    assert second != first
    page = person.get(first)
    assert page.status_code == 410 and "expired" in Page(page.text).ids and "newer request" in page.text
    assert _press(person, old_page, "authorize").status_code == 410
    shown = _press(person, person.get(second).text, "authorize")
    assert shown.status_code == 200
    assert agent.complete(claim_token, user_code(shown.text)).status_code == 200


def test_unknown_tokens_are_404_with_or_without_a_session(app, live_server, smtp):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    v01 = agent.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).json()
    agent.post("/agent/auth/claim", json={"claim_token": v01["claim_token"], "email": "ada@example.com"})
    v01_link = smtp.last_link("ada@example.com")  # v0.1's emailed link: a cvt_ token too, of the other family
    v01_token = v01_link.split("token=", 1)[1]
    for path in ("/claim?claim_attempt_token=cvt_unknown", "/claim?claim_attempt_token=" + v01_token,
                 "/claim?claim_attempt_token=" + "x" * 300):
        r = person.get(path, headers={"Accept": "application/json"})
        assert r.status_code == 404 and "unknown" in Page(r.text).ids, path
        _private(r)
    assert person.get("/claim").status_code == 400
    person.sign_in(smtp, "ada@example.com")
    r = person.get("/claim?claim_attempt_token=" + v01_token)
    assert r.status_code == 404
    # and v0.1's page does not know a latest attempt
    _, _, uri = agent.service_auth("ada@example.com")
    assert person.get("/agent/auth/claim/view?token=" + uri.split("=", 1)[1]).status_code == 404


def test_a_confirm_without_a_session_goes_to_sign_in(app, live_server):
    agent, stranger = Agent(live_server.url), Browser(live_server.url)
    _, _, uri = agent.service_auth("ada@example.com")
    token = uri.split("=", 1)[1]
    before = count_rows(app)
    # no session, hence no CSRF token either: refused before anything is read
    r = stranger.post("/claim/confirm", data={"claim_attempt_token": token, "action": "authorize"})
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/html")
    assert count_rows(app) == before


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_a_confirm_without_its_csrf_token_is_400_and_changes_nothing(app, live_server, smtp, csrf):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, uri = agent.service_auth("ada@example.com")
    person.sign_in_from(uri, smtp, "ada@example.com")
    form = _confirm_form(person.get(uri).text)
    before = count_rows(app)
    for action in ("authorize", "deny"):
        data = {"claim_attempt_token": form.fields["claim_attempt_token"], "action": action}
        if csrf:
            data["csrf_token"] = csrf
        r = person.post("/claim/confirm", data=data, headers={"Accept": "application/json"})
        assert r.status_code == 400 and user_code(r.text) is None
        _private(r)  # HTML (a person's page, whatever the client asks for), never cached
    assert count_rows(app) == before
    assert _attempt(app, uri)["confirmed_at"] is None
    assert agent.complete(claim_token, "123456").json()["error"] == "claim_not_confirmed"


def test_codes_per_attempt_are_capped(app, live_server, smtp):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, uri = agent.service_auth("ada@example.com")
    person.sign_in_from(uri, smtp, "ada@example.com")
    codes = []
    for _ in range(5):
        r = _press(person, person.get(uri).text, "authorize")
        assert r.status_code == 200
        codes.append(user_code(r.text))
    sixth = _press(person, person.get(uri).text, "authorize")
    assert sixth.status_code == 429 and user_code(sixth.text) is None
    if codes[-2] != codes[-1]:  # a newer code replaces the older one
        assert agent.complete(claim_token, codes[-2]).json()["error"] == "invalid_user_code"
    assert agent.complete(claim_token, codes[-1]).status_code == 200


def _id_jag(provider, **claims):
    claims.setdefault("auth_time", int(time.time()) - 60)
    return provider.id_jag(**claims)


def test_an_id_jag_step_up_shows_the_provider_and_completes_with_the_code(app, live_server, smtp, provider):
    trust(app, provider)
    with app.app_context():
        from authmd.models import TrustedIssuer
        db.session.execute(db.update(TrustedIssuer).values(name="Test Provider"))
        db.session.commit()
    owner = _user(app, "user@example.com")
    agent, person = Agent(live_server.url), Browser(live_server.url)
    r = agent.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                            "assertion": _id_jag(provider, agent_platform="Evil https://x.example")})
    assert r.status_code == 401 and r.json()["error"] == "interaction_required", r.text
    body = r.json()
    uri = body["claim"]["attempt"]["verification_uri"]
    person.sign_in_from(uri, smtp, "user@example.com")
    page = person.get(uri)
    assert page.status_code == 200
    assert "Test Provider" in page.text and provider.issuer in page.text
    assert "(verified: its token was signed by a provider this service trusts)" in page.text
    assert "Evil https[:]//x[.]example" in page.text and "https://x.example" not in page.text
    shown = _press(person, page.text, "authorize")
    assert shown.status_code == 200 and "linked" not in Page(shown.text).ids
    done = agent.complete(body["claim"]["token"], user_code(shown.text))
    assert done.status_code == 200, done.text
    token = agent.exchange(done.json()["identity"]["assertion"]).json()
    assert agent.api(token["access_token"]).json()["user"]["id"] == owner


def test_a_step_up_born_at_v01_is_linked_at_once(app, live_server, smtp, provider):
    trust(app, provider)
    owner = _user(app, "user@example.com")
    agent, person = Agent(live_server.url), Browser(live_server.url)

    def v01_register():
        return agent.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                               "assertion": provider.id_jag(), "requested_credential_type": "api_key"})

    r = v01_register()
    assert r.status_code == 401 and r.json()["error"] == "interaction_required", r.text
    uri = r.json()["verification_uri"]
    person.sign_in_from(uri, smtp, "user@example.com")
    page = person.get(uri)
    assert page.status_code == 200 and "linked to that provider identity at once" in page.text
    # not linked until the owner presses Authorize: the agent's retry gets a new link, the old one is dead
    retry = v01_register()
    assert retry.status_code == 401 and retry.json()["verification_uri"] != uri
    assert person.get(uri).status_code == 410
    uri = retry.json()["verification_uri"]
    page = person.get(uri)
    linked = _press(person, page.text, "authorize")
    assert linked.status_code == 200 and "linked" in Page(linked.text).ids and user_code(linked.text) is None
    _private(linked)
    with app.app_context():
        assert db.session.execute(db.select(Delegation)).scalar_one().user_id == owner
    ok = v01_register()
    assert ok.status_code == 200, ok.text
    assert agent.api(ok.json()["credential"]).json()["user"]["id"] == owner
    assert "claimed" in Page(person.get(uri).text).ids


# ---------------------------------------------------------------- the sign-in round trip's own checks

@pytest.mark.parametrize("target", ["https://evil.example/claim", "//evil.example/claim", "/\\evil.example",
                                    "javascript:alert(1)", "/claim\t?x", "claim"])
def test_a_next_that_is_not_a_path_here_is_never_kept_nor_followed(app, live_server, smtp, target):
    person = Browser(live_server.url)
    page = person.get("/portal/login", params={"next": target, "email": "ada@example.com"})
    form = Page(page.text).form("/portal/login")
    assert "next" not in form.fields and form.fields["email"] == "ada@example.com"
    # a browser that posts it anyway
    smtp.clear()
    assert person.submit(form, next=target).status_code == 200
    with app.app_context():
        assert db.session.execute(db.select(LoginLink.next_path)).scalar_one() is None
    r = person.use_sign_in_link(smtp, "ada@example.com")
    assert r.status_code == 302 and r.headers["Location"] == "/portal/"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/ok\n"])
def test_send_login_link_keeps_only_a_path_here(app, smtp, target):
    """The store-side check, for every caller of send_login_link (not only the form, which checks first)."""
    from authmd.console.auth import send_login_link
    with app.test_request_context():
        assert send_login_link("ada@example.com", utcnow(), next_path=target)
        assert db.session.execute(db.select(LoginLink.next_path)).scalar_one() is None
        db.session.rollback()


def test_a_stored_next_is_checked_again_when_the_link_is_used(app, live_server, smtp):
    person = Browser(live_server.url)
    page = person.get("/portal/login", params={"next": "/claim?claim_attempt_token=cvt_x"})
    form = Page(page.text).form("/portal/login")
    assert form.fields["next"] == "/claim?claim_attempt_token=cvt_x"
    smtp.clear()
    person.submit(form, email="ada@example.com")
    with app.app_context():
        row = db.session.execute(db.select(LoginLink)).scalar_one()
        assert row.next_path == "/claim?claim_attempt_token=cvt_x"
        row.next_path = "//evil.example/"  # whatever wrote the row
        db.session.commit()
    r = person.use_sign_in_link(smtp, "ada@example.com")
    assert r.status_code == 302 and r.headers["Location"] == "/portal/"


def test_the_prefilled_address_is_only_ever_an_address(app, live_server):
    person = Browser(live_server.url)
    page = person.get("/portal/login", params={"email": '"><script>alert(1)</script>'})
    assert Page(page.text).form("/portal/login").fields["email"] == "" and "<script>alert" not in page.text
    page = person.get("/portal/login", params={"email": " Ada@Example.COM "})
    assert Page(page.text).form("/portal/login").fields["email"] == "ada@example.com"


def test_the_round_trip_opens_a_portal_session_only(app, live_server, smtp, admin_user):
    from tests.fixtures.console import ADMIN_EMAIL
    agent, admin = Agent(live_server.url), Browser(live_server.url)
    _, _, uri = agent.service_auth(ADMIN_EMAIL)
    admin.sign_in_from(uri, smtp, ADMIN_EMAIL)
    assert admin.get(uri).status_code == 200
    console = admin.get("/console/")
    assert console.status_code == 302 and console.headers["Location"].startswith("/console/login")


# ---------------------------------------------------------------- the portal: both families, each its own

def _v01_claim(agent, email):
    reg = agent.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).json()
    r = agent.post("/agent/auth/claim", json={"claim_token": reg["claim_token"], "email": email})
    assert r.status_code == 200, r.text
    return reg, r.json()["claim_attempt_id"]


def test_the_portal_lists_both_kinds_and_each_family_sees_only_its_own(app, live_server, smtp):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    v01_reg, v01_id = _v01_claim(agent, "ada@example.com")
    v01_link = smtp.last_link("ada@example.com")
    _, claim_token, uri = agent.service_auth("ada@example.com")
    latest_id = _attempt(app, uri)["id"]
    person.sign_in(smtp, "ada@example.com")

    home = person.get("/portal/")
    assert home.status_code == 200
    page = Page(home.text)
    assert f"att-{v01_id}" in page.ids and f"att-{latest_id}" in page.ids
    actions = {f.action for f in page.forms}
    assert f"/portal/claims/{v01_id}/code" in actions and f"/portal/latest-claims/{latest_id}/authorize" in actions
    assert f"/portal/claims/{latest_id}/code" not in actions
    assert f"/portal/latest-claims/{v01_id}/authorize" not in actions
    assert f'href="/portal/latest-claims/{latest_id}/deny"' in home.text
    assert "(self-reported, not verified)" in home.text

    # each family's buttons refuse the other's attempts, as attempts that do not exist
    csrf = _csrf(person)
    before = count_rows(app)
    r = person.post(f"/portal/claims/{latest_id}/code", data={"csrf_token": csrf})
    assert r.status_code == 404 and 'id="otp"' not in r.text and user_code(r.text) is None
    assert person.get(f"/portal/claims/{latest_id}/deny").status_code == 404
    assert person.post(f"/portal/claims/{latest_id}/deny", data={"csrf_token": csrf}).status_code == 404
    r = person.post(f"/portal/latest-claims/{v01_id}/authorize", data={"csrf_token": csrf})
    assert r.status_code == 404 and user_code(r.text) is None and 'id="otp"' not in r.text
    assert person.get(f"/portal/latest-claims/{v01_id}/deny").status_code == 404
    assert person.post(f"/portal/latest-claims/{v01_id}/deny", data={"csrf_token": csrf}).status_code == 404
    # nor do the emailed v0.1 link's page and the latest claim page know the other's token
    assert person.get("/agent/auth/claim/view?token=" + uri.split("=", 1)[1]).status_code == 404
    assert person.get("/claim?claim_attempt_token=" + v01_link.split("token=", 1)[1]).status_code == 404
    assert count_rows(app) == before

    # Authorize in the portal: the same domain call as the claim page
    shown = person.submit(page.form(f"/portal/latest-claims/{latest_id}/authorize"))
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    code = user_code(shown.text)
    assert code is not None and 'id="otp"' not in shown.text
    with app.app_context():
        assert db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "user_code.revealed")).scalar()
    assert agent.complete(claim_token, code).status_code == 200
    # and v0.1's Show code still serves v0.1's agent
    otp = person.submit(Page(person.get("/portal/").text).form(f"/portal/claims/{v01_id}/code"))
    challenge = Page(otp.text).ids["otp"]
    done = agent.post("/agent/auth/claim/complete", json={"claim_token": v01_reg["claim_token"], "otp": challenge})
    assert done.status_code == 200, done.text
    assert "No agent is waiting for you." in person.get("/portal/").text


def test_this_was_not_me_in_the_portal_refuses_a_latest_claim(app, live_server, smtp):
    agent, person = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, uri = agent.service_auth("ada@example.com")
    latest_id = _attempt(app, uri)["id"]
    person.sign_in(smtp, "ada@example.com")
    confirm = person.get(f"/portal/latest-claims/{latest_id}/deny")
    assert confirm.status_code == 200 and "python-requests" in confirm.text
    r = person.submit(Page(confirm.text).form(f"/portal/latest-claims/{latest_id}/deny"))
    assert r.status_code == 302 and r.headers["Location"] == "/portal/"
    refused = agent.complete(claim_token, "123456")
    assert refused.status_code == 403 and refused.json()["error"] == "claim_denied"
    assert person.get(uri).status_code == 410


def test_someone_else_cannot_answer_my_latest_claim_in_the_portal(app, live_server, smtp):
    agent, mallory = Agent(live_server.url), Browser(live_server.url)
    _, claim_token, uri = agent.service_auth("ada@example.com")
    latest_id = _attempt(app, uri)["id"]
    mallory.sign_in(smtp, "mallory@example.com")
    home = mallory.get("/portal/")
    assert f"att-{latest_id}" not in Page(home.text).ids and "No agent is waiting for you." in home.text
    csrf = _csrf(mallory)
    before = count_rows(app)
    r = mallory.post(f"/portal/latest-claims/{latest_id}/authorize", data={"csrf_token": csrf})
    assert r.status_code == 404 and user_code(r.text) is None
    assert mallory.get(f"/portal/latest-claims/{latest_id}/deny").status_code == 404
    assert mallory.post(f"/portal/latest-claims/{latest_id}/deny", data={"csrf_token": csrf}).status_code == 404
    assert count_rows(app) == before
    assert agent.complete(claim_token, "123456").json()["error"] == "claim_not_confirmed"


def test_the_domain_refuses_a_person_the_attempt_does_not_name(app, client):
    """Behind the page's and the portal's gates, authorize and deny check the person themselves."""
    from authmd import latest_claims
    from authmd.util import ProtocolError
    r = client.post("/agent/identity", json={"type": "service_auth", "login_hint": "ada@example.com"})
    uri = r.get_json()["claim"]["attempt"]["verification_uri"]
    other = _user(app, "mallory@example.com")
    with app.test_request_context():
        attempt = latest_claims.attempt_by_token(uri.split("=", 1)[1])
        for act in (latest_claims.authorize, latest_claims.deny):
            with pytest.raises(ProtocolError) as refused:
                act(attempt, db.session.get(User, other))
            assert refused.value.status == 403 and refused.value.code == "wrong_account"
        db.session.rollback()
    assert _attempt(app, uri)["confirmed_at"] is None and _attempt(app, uri)["status"] == "initiated"
