"""The console and the latest protocol: the protocol on registrations and audit rows, a latest registration's
access and refresh tokens and claim attempts, revocation ending refresh tokens, the signing keys page, the
latest settings and the takeover guard's warning."""
import csv
import io
import json
import re
import time

from authmd.extensions import db
from authmd.models import AuditEvent, RefreshToken, Registration, SigningKey
from tests.conftest import count_rows
from tests.fixtures.console import csrf_token, post_form
from tests.fixtures.latest import add_person as _user, authorize
from tests.fixtures.provider import trust

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
RESOURCE = "http://localhost:8000/api/"


def _exchange(client, assertion, **extra):
    return client.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": assertion, **extra})


def _api(client, token):
    return client.get("/api/resource", headers={"Authorization": "Bearer " + token}).status_code


def _authorize(app, uri, user_id):
    return authorize(app, uri, user_id)["user_code"]


def claimed_latest(app, client, email="ada@example.com"):
    """A latest anonymous registration claimed by a person: (registration id, the pre-claim access token,
    the answer of /complete, the user's id, the claim attempt token)."""
    uid = _user(app, email)
    reg = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    pre = _exchange(client, reg["identity"]["assertion"], resource=RESOURCE).get_json()["access_token"]
    start = client.post("/agent/identity/claim", json={"type": "service_auth", "claim_token": reg["claim"]["token"],
                                                       "login_hint": email}).get_json()
    uri = start["attempt"]["verification_uri"]
    code = _authorize(app, uri, uid)
    done = client.post("/agent/identity/claim/complete", json={"claim_token": reg["claim"]["token"], "user_code": code})
    assert done.status_code == 200, done.text
    return reg, pre, done.get_json(), uid, uri.split("claim_attempt_token=", 1)[1]


# --- registrations -----------------------------------------------------------------------------------------------
def test_the_list_shows_each_registrations_protocol_and_wire_type_and_filters_by_protocol(app, admin_client):
    agent = app.test_client()
    v01 = agent.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()
    anon = agent.post("/agent/identity", json={"type": "anonymous"}).get_json()
    svc = agent.post("/agent/identity", json={"type": "service_auth", "login_hint": "ada@example.com"}).get_json()

    def row(html, reg_id):
        found = re.search(r"<tr>(?:(?!</tr>).)*" + reg_id + r".*?</tr>", html, re.S)
        assert found, reg_id
        cells = re.findall(r'<td class="(flow|protocol)">([^<]*)</td>', found.group(0))
        return dict(cells)

    html = admin_client.get("/console/registrations").get_data(as_text=True)
    assert '<th scope="col">Protocol</th>' in html
    assert row(html, v01["registration_id"]) == {"flow": "anonymous", "protocol": "v0.1"}
    assert row(html, anon["id"]) == {"flow": "anonymous", "protocol": "latest"}
    assert row(html, svc["id"]) == {"flow": "service_auth", "protocol": "latest"}
    latest = admin_client.get("/console/registrations?protocol=latest").get_data(as_text=True)
    assert anon["id"] in latest and svc["id"] in latest and v01["registration_id"] not in latest
    only_v01 = admin_client.get("/console/registrations?protocol=v0.1").get_data(as_text=True)
    assert v01["registration_id"] in only_v01 and anon["id"] not in only_v01
    flow = admin_client.get("/console/registrations?flow=service-auth").get_data(as_text=True)
    assert svc["id"] in flow and anon["id"] not in flow
    bad = admin_client.get("/console/registrations?protocol=v9").get_data(as_text=True)
    assert 'id="f-protocol-error"' in bad and "Choose v0.1 or latest." in bad


def test_a_latest_registration_shows_its_tokens_and_claim_attempts_and_no_secret(app, admin_client):
    agent = app.test_client()
    reg, pre, done, uid, attempt_token = claimed_latest(app, agent)
    post = _exchange(agent, done["identity"]["assertion"]).get_json()["access_token"]
    first = done["identity"]["refresh_token"]["value"]
    second = agent.post("/agent/identity", json={"type": "refresh", "refresh_token": first}).get_json()
    html = admin_client.get(f"/console/registrations/{reg['id']}").get_data(as_text=True)

    assert "<dt>Protocol</dt><dd>latest</dd>" in html
    creds = html.split('<table class="credentials">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td class=\"nowrap\"><code>(at_[\w-]+)…</code></td>(.*?)</tr>", creds, re.S)
    assert [p for p, _ in rows] == [pre[:9], post[:9]]
    assert "latest" in rows[0][1] and RESOURCE in rows[0][1] and "revoked" in rows[0][1]  # the pre-claim token
    assert "latest" in rows[1][1] and '<span class="status active">live</span>' in rows[1][1] and "—" in rows[1][1]
    refresh = html.split('<table class="refresh-tokens">', 1)[1].split("</table>", 1)[0]
    with app.app_context():
        tokens = list(db.session.execute(db.select(RefreshToken).order_by(RefreshToken.id.desc())).scalars())
        digests = [t.digest for t in tokens]
        assert len({t.family_id for t in tokens}) == 1
    shown = re.findall(r"<code>(art_[\w-]+)…</code>.*?<span class=\"status (\w*)\">(\w+)</span>", refresh, re.S)
    assert [(p, s) for p, _, s in shown] == [(second["identity"]["refresh_token"]["value"][:10], "live"),
                                             (first[:10], "spent")]
    assert tokens[0].family_id in refresh
    latest = html.split('<table class="attempts-latest">', 1)[1].split("</table>", 1)[0]
    assert "ada@example.com" in latest and ">completed<" in latest
    assert f'href="/console/users/{uid}">#{uid} ada@example.com</a>' in latest
    assert 'class="attempts-v01"' not in html
    for secret in [pre, post, first, second["identity"]["refresh_token"]["value"], attempt_token,
                   reg["claim"]["token"], *digests]:
        assert secret not in html


def test_a_v01_registration_shows_its_emailed_attempts(app, admin_client, smtp):
    agent = app.test_client()
    reg = agent.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()
    assert agent.post("/agent/auth/claim", json={"claim_token": reg["claim_token"],
                                                 "email": "bob@example.com"}).status_code == 200
    html = admin_client.get(f"/console/registrations/{reg['registration_id']}").get_data(as_text=True)
    attempts = html.split('<table class="attempts-v01">', 1)[1].split("</table>", 1)[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", attempts, re.S)
    assert "bob@example.com" in cells[1] and ">open<" in cells[2] and cells[3] == "yes"
    assert cells[5:] == ["0", "0"]  # codes minted, wrong codes
    assert 'class="attempts-latest"' not in html and 'class="refresh-tokens"' not in html


def test_a_step_up_shows_who_confirmed_it(app, admin_client, provider):
    trust(app, provider)
    owner = _user(app, "user@example.com")
    agent = app.test_client()
    r = agent.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                            "assertion": provider.id_jag(auth_time=int(time.time()))})
    assert r.status_code == 401
    body = r.get_json()
    html = admin_client.get(f"/console/registrations/{body['id']}").get_data(as_text=True)
    assert "<dd>identity_assertion <span class=\"muted\">(agent-provider)</span></dd>" in html
    latest = html.split('<table class="attempts-latest">', 1)[1].split("</table>", 1)[0]
    assert ">open<" in latest and "user@example.com" in latest
    _authorize(app, body["claim"]["attempt"]["verification_uri"], owner)
    latest = admin_client.get(f"/console/registrations/{body['id']}").get_data(as_text=True) \
        .split('<table class="attempts-latest">', 1)[1].split("</table>", 1)[0]
    assert ">confirmed<" in latest and f"#{owner} user@example.com" in latest


# --- revocation ends refresh tokens -----------------------------------------------------------------------------
def test_an_admin_revoking_a_claimed_latest_registration_ends_its_refresh_and_access_tokens(app, admin_client):
    agent = app.test_client()
    reg, _, done, _, _ = claimed_latest(app, agent)
    access = _exchange(agent, done["identity"]["assertion"]).get_json()["access_token"]
    refresh = done["identity"]["refresh_token"]["value"]
    assert _api(agent, access) == 200
    page = admin_client.get(f"/console/revoke?kind=registration&target={reg['id']}").get_data(as_text=True)
    assert admin_client.post("/console/revoke", data={"csrf_token": csrf_token(page), "kind": "registration",
                                                      "target": reg["id"]}).status_code == 302
    assert _api(agent, access) == 401
    r = agent.post("/agent/identity", json={"type": "refresh", "refresh_token": refresh})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_refresh_token"
    with app.app_context():
        assert db.session.execute(db.select(RefreshToken.revoked_at)).scalar_one() is not None
        row = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "registration.revoked")).scalar_one()
        assert (row.protocol, row.actor_kind, row.registration_id) == ("latest", "admin", reg["id"])


def test_a_revoked_agent_provider_registration_brought_back_by_a_fresh_id_jag_keeps_its_old_refresh_tokens_dead(
        app, admin_client, provider):
    """A fresh ID-JAG revives a revoked agent-provider registration (one per delegation): the refresh tokens
    handed out before the revocation must not come back with it, whichever revocation ended it."""
    from authmd import revocation
    trust(app, provider)
    owner = _user(app, "user@example.com")
    agent = app.test_client()

    def step_up():
        r = agent.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                                "assertion": provider.id_jag(auth_time=int(time.time()))})
        return r
    first = step_up().get_json()
    code = _authorize(app, first["claim"]["attempt"]["verification_uri"], owner)
    done = agent.post("/agent/identity/claim/complete", json={"claim_token": first["claim"]["token"],
                                                              "user_code": code}).get_json()
    refresh = done["identity"]["refresh_token"]["value"]
    with app.app_context():
        delegation = db.session.get(Registration, first["id"]).delegation_id
    for kind, revoke, target in (("user", revocation.revoke_user, owner),
                                 ("issuer", revocation.revoke_issuer, provider.issuer),
                                 ("delegation", revocation.revoke_delegation, delegation),
                                 ("registration", revocation.revoke_registration, first["id"])):
        with app.test_request_context():
            revoke(target, actor_kind="admin", actor_id="root@example.com")
            db.session.commit()
        back = step_up()  # a clean match now (the delegation is the owner's): the registration revives
        assert back.status_code == 200 and back.get_json()["id"] == first["id"], (kind, back.text)
        r = agent.post("/agent/identity", json={"type": "refresh", "refresh_token": refresh})
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_refresh_token", kind
        with app.test_request_context():  # a fresh refresh token for the next round
            from authmd import tokens
            refresh, _ = tokens.issue_refresh(first["id"], owner)
            db.session.commit()


# --- the signing keys page ---------------------------------------------------------------------------------------
def test_the_keys_page_lists_the_keys_and_rotation_needs_the_confirmation_form(app, admin_client, clock):
    agent = app.test_client()
    reg = agent.post("/agent/identity", json={"type": "anonymous"}).get_json()  # signs: the first key exists
    with app.app_context():
        (old,) = db.session.execute(db.select(SigningKey.kid)).scalars().all()
    page = admin_client.get("/console/keys").get_data(as_text=True)
    assert 'href="/console/keys"' in page and ">Signing keys</a>" in page  # the nav link
    assert old in page.replace("<wbr>", "") and '<span class="status active">active</span>' in page
    assert "for 1 hour 1 minute (the assertion lifetime plus" in page

    before = count_rows(app)
    assert admin_client.post("/console/keys/rotate", data={}).status_code == 400  # no CSRF token
    assert admin_client.post("/console/keys/rotate", data={"csrf_token": "forged"}).status_code == 400
    assert count_rows(app) == before
    confirm = admin_client.get("/console/keys/rotate")
    html = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and "Rotate the signing key?" in html and count_rows(app) == before

    r = admin_client.post("/console/keys/rotate", data={"csrf_token": csrf_token(html)},
                          headers={"User-Agent": "AdminBrowser/1.0"}, environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/keys")
    with app.app_context():
        rows = {k.kid: k for k in db.session.execute(db.select(SigningKey)).scalars()}
        audit = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "key.rotated")).scalar_one()
    new = next(k for k in rows if k != old)
    assert rows[old].retired_at is not None and rows[new].retired_at is None
    assert (audit.actor_kind, audit.actor_id, audit.ip, audit.user_agent, audit.protocol) == (
        "admin", "root@example.com", "10.9.8.7", "AdminBrowser/1.0", None)
    assert json.loads(audit.data)["retired"] == [old]
    # the old key is still published, and what it signed still works; the new one signs from now on
    published = {k["kid"] for k in agent.get("/.well-known/jwks.json").get_json()["keys"]}
    assert published == {old, new}
    assert _exchange(agent, reg["identity"]["assertion"]).status_code == 200
    page = admin_client.get("/console/keys").get_data(as_text=True).replace("<wbr>", "")
    assert "Key " + new + " signs from now on." in page
    retired = page.split(old, 1)[1].split("</tr>", 1)[0]
    assert ">retired<" in retired and "in 1 hour" in retired


# --- settings and the dashboard ------------------------------------------------------------------------------------
def test_the_latest_settings_read_in_units_and_the_takeover_switch_warns_on_the_dashboard(app, admin_client):
    page = admin_client.get("/console/settings").get_data(as_text=True)
    for said in ("Now 3600 seconds = 1 hour.", "Now 2592000 seconds = 30 days.", "Now 600 seconds = 10 minutes.",
                 "between 60 (1 minute) and 31536000 (365 days)."):
        assert said in page
    switch = page.split('id="link_identities_by_email"', 1)
    assert len(switch) == 2 and "checked" not in switch[0].rsplit("<input", 1)[1]  # off by default
    assert ("anyone controlling a provider account that asserts someone&#39;s email gets that person&#39;s agent "
            "access") in page
    assert "link_identities_by_email" not in admin_client.get("/console/").get_data(as_text=True)

    form = {"service_name": "authmd", "anonymous_enabled": "y", "verified_email_enabled": "y", "id_jag_enabled": "y",
            "registration_ttl": "86400", "claim_link_ttl": "600", "otp_ttl": "600", "access_token_ttl": "3600",
            "otp_max_per_attempt": "5", "otp_max_failures_per_attempt": "5", "otp_max_failures_per_registration": "20",
            "assertion_ttl": "1800", "refresh_token_ttl": "604800", "user_code_ttl": "300",
            "id_jag_max_auth_age": "600", "link_identities_by_email": "y"}
    bad = post_form(admin_client, "/console/settings", {**form, "user_code_ttl": "7200"})
    assert bad.status_code == 400 and 'id="user_code_ttl-error"' in bad.get_data(as_text=True)
    assert post_form(admin_client, "/console/settings", form).status_code == 302
    with app.app_context():
        row = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "settings.changed")).scalar_one()
    data = json.loads(row.data)
    assert data["after"] == {"assertion_ttl": 1800, "refresh_token_ttl": 604800, "user_code_ttl": 300,
                             "id_jag_max_auth_age": 600, "link_identities_by_email": True}
    assert data["before"]["link_identities_by_email"] is False and row.protocol is None
    html = admin_client.get("/console/").get_data(as_text=True)
    attention = html.split('id="warn-title"', 1)[1].split("</section>", 1)[0]
    assert "without asking the account&#39;s owner (link_identities_by_email)" in attention
    assert 'href="/console/settings">Fix</a>' in attention
    assert "Now 1800 seconds = 30 minutes." in admin_client.get("/console/settings").get_data(as_text=True)


# --- the audit log -----------------------------------------------------------------------------------------------
def test_the_audit_log_shows_and_filters_by_protocol_and_the_exports_carry_it(app, admin_client, runner):
    agent = app.test_client()
    v01 = agent.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()
    latest = agent.post("/agent/identity", json={"type": "anonymous"}).get_json()
    html = admin_client.get("/console/audit").get_data(as_text=True)
    assert '<th scope="col">Protocol</th>' in html and 'id="f-protocol"' in html
    assert '<td class="protocol">latest</td>' in html and '<td class="protocol">v0.1</td>' in html
    assert '<td class="protocol">—</td>' in html  # admin.login

    def shown(url):
        page = admin_client.get(url).get_data(as_text=True)
        return set(re.findall(r'<td class="protocol">([^<]*)</td>', page)), page
    protocols, page = shown("/console/audit?protocol=latest")
    assert protocols == {"latest"} and latest["id"] in page and v01["registration_id"] not in page
    protocols, page = shown("/console/audit?protocol=v0.1")
    assert protocols == {"v0.1"} and v01["registration_id"] in page
    protocols, page = shown("/console/audit?protocol=none")
    assert protocols == {"—"} and "admin.login" in page
    bad = admin_client.get("/console/audit?protocol=v2")
    assert bad.status_code == 400 and 'id="f-protocol-error"' in bad.get_data(as_text=True)

    rows = list(csv.DictReader(io.StringIO(admin_client.get("/console/audit/export.csv").get_data(as_text=True))))
    assert list(rows[0])[-1] == "protocol"
    assert {r["event"]: r["protocol"] for r in rows if r["registration_id"] == latest["id"]} == {
        "registration.created": "latest", "assertion.issued": "latest"}
    lines = [json.loads(x) for x in admin_client.get("/console/audit/export.jsonl?protocol=v0.1")
             .get_data(as_text=True).splitlines()]
    assert lines and {x["protocol"] for x in lines} == {"v0.1"}

    out = runner.invoke(args=["export-audit", "--since", "2000-01-01", "--format", "csv"])
    assert out.exit_code == 0, out.output
    exported = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(exported[0])[-1] == "protocol"
    assert {(r["event"], r["protocol"]) for r in exported if r["registration_id"] == v01["registration_id"]} == {
        ("registration.created", "v0.1"), ("credential.issued", "v0.1")}
    assert {r["protocol"] for r in exported if r["event"] == "admin.login"} == {""}
    out = runner.invoke(args=["export-audit", "--since", "2000-01-01"])
    records = [json.loads(x) for x in out.stdout.splitlines()]
    assert {r["protocol"] for r in records if r["registration_id"] == latest["id"]} == {"latest"}
    assert {r["protocol"] for r in records if r["event"] == "admin.login"} == {None}
