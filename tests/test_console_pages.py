"""Console pages: every page renders, forms validate beside the field, actions are audited, no secret shows."""
import json
import re
from datetime import timedelta

from authmd.extensions import db
from authmd.models import AuditEvent, AuthDocVersion, Credential, Registration, Scope, TrustedIssuer, User
from authmd.util import utcnow
from tests.fixtures.console import csrf_token, post_form

PAGES = ["/console/", "/console/authmd", "/console/authmd/history", "/console/issuers", "/console/issuers/new",
         "/console/scopes", "/console/registrations", "/console/delegations", "/console/users", "/console/audit",
         "/console/settings", "/console/outbox"]


# the latest protocol's lifetimes at their defaults, as the settings page sends them
LATEST_SETTINGS = {"assertion_ttl": "3600", "refresh_token_ttl": "2592000", "user_code_ttl": "600",
                   "id_jag_max_auth_age": "3600"}


def register(client, **body):
    r = client.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key", **body})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def audit_rows(app, event):
    with app.app_context():
        return list(db.session.execute(db.select(AuditEvent).where(AuditEvent.event == event)).scalars())


def test_every_page_renders_and_no_stored_secret_ever_shows(app, admin_client):
    agent = app.test_client()
    reg = register(agent)
    claim = agent.post("/agent/auth/claim", json={"claim_token": reg["claim_token"], "email": "ada@example.com"})
    assert claim.status_code == 200
    urls = PAGES + [f"/console/registrations/{reg['registration_id']}", "/console/outbox/1"]
    with app.app_context():
        urls.append(f"/console/users/{db.session.execute(db.select(User.id)).scalar()}")
    secrets = [reg["credential"], reg["claim_token"], reg["credential"][3:]]
    for url in urls:
        r = admin_client.get(url)
        assert r.status_code == 200, url
        html = r.get_data(as_text=True)
        for s in secrets:
            assert s not in html, f"{url} shows a secret"
    detail = admin_client.get(f"/console/registrations/{reg['registration_id']}").get_data(as_text=True)
    assert "registration.created" in detail and "claim.requested" in detail
    with app.app_context():
        prefix = db.session.execute(db.select(Credential.prefix)).scalar()
    assert prefix + "…" in detail
    exported = admin_client.get("/console/audit/export.jsonl").get_data(as_text=True)
    for s in secrets:
        assert s not in exported


def test_dashboard_counts_charts_and_warnings(app, admin_client):
    register(app.test_client())
    html = admin_client.get("/console/").get_data(as_text=True)
    assert "No trusted issuer is enabled" in html
    assert "Mail is not configured" in html
    assert "SECRET_KEY is generated or a well-known default" in html
    assert "Registrations: anonymous <span class=\"muted\">(1)</span>" in html
    assert html.count("<svg") == 6
    assert "registration.created" in html


def test_issuer_add_validates_beside_the_field_then_edit_disable_remove(app, admin_client):
    r = post_form(admin_client, "/console/issuers/new", {"issuer": "http://provider.example", "algorithms": "HS256"})
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    assert 'id="issuer-error"' in html and "Use https://" in html
    assert 'id="algorithms-error"' in html and "Not allowed: HS256" in html
    r = post_form(admin_client, "/console/issuers/new", {"issuer": "https://provider.example", "name": "Prov",
                                                         "algorithms": "ES256 RS256", "enabled": "y"})
    assert r.status_code == 302
    with app.app_context():
        row = db.session.execute(db.select(TrustedIssuer)).scalar()
        iid = row.id
        assert row.enabled and row.algorithms == "ES256 RS256"
    dup = post_form(admin_client, "/console/issuers/new", {"issuer": "https://provider.example", "algorithms": "ES256"})
    assert dup.status_code == 400 and "already in the list" in dup.get_data(as_text=True)
    r = post_form(admin_client, f"/console/issuers/{iid}/edit", {"issuer": "https://provider.example",
                                                                  "name": "Renamed", "algorithms": "ES256", "enabled": "y"})
    assert r.status_code == 302
    post_form(admin_client, "/console/issuers", {}, post_url=f"/console/issuers/{iid}/toggle")
    with app.app_context():
        row = db.session.get(TrustedIssuer, iid)
        assert row.name == "Renamed" and not row.enabled
    assert admin_client.get("/.well-known/oauth-authorization-server").get_json()["agent_auth"]["trusted_issuers"] == []
    test = post_form(admin_client, "/console/issuers", {}, post_url=f"/console/issuers/{iid}/test")
    assert test.status_code == 200 and "Test result" in test.get_data(as_text=True)
    confirm = admin_client.get(f"/console/issuers/{iid}/remove")
    assert "Remove https://provider.example?" in confirm.get_data(as_text=True)
    post_form(admin_client, f"/console/issuers/{iid}/remove", {})
    with app.app_context():
        assert db.session.get(TrustedIssuer, iid) is None
    assert [e.event for e in audit_rows(app, "issuer.added")] == ["issuer.added"]
    assert len(audit_rows(app, "issuer.updated")) == 1 and len(audit_rows(app, "issuer.disabled")) == 1
    assert len(audit_rows(app, "issuer.removed")) == 1


def test_scope_in_use_cannot_be_deleted_only_disabled(app, admin_client):
    r = post_form(admin_client, "/console/scopes", {"name": "bad name!", "post_claim": "y"})
    assert r.status_code == 400 and 'id="name-error"' in r.get_data(as_text=True)
    assert post_form(admin_client, "/console/scopes", {"name": "invoices.read", "description": "Invoices",
                                                       "position": "5", "post_claim": "y", "enabled": "y"}).status_code == 302
    dup = post_form(admin_client, "/console/scopes", {"name": "invoices.read", "post_claim": "y", "enabled": "y"})
    assert dup.status_code == 400 and "A scope named invoices.read exists." in dup.get_data(as_text=True)
    register(app.test_client())  # holds api.read
    with app.app_context():
        read = db.session.execute(db.select(Scope).where(Scope.name == "api.read")).scalar().id
        inv = db.session.execute(db.select(Scope).where(Scope.name == "invoices.read")).scalar().id
    blocked = admin_client.get(f"/console/scopes/{read}/delete")
    html = blocked.get_data(as_text=True)
    assert blocked.status_code == 409 and "cannot be deleted" in html and "Disable scope" in html
    # the one implementation (authmd.scopes.remove, as `flask scopes remove`): held, so disabled, not deleted
    r = admin_client.post(f"/console/scopes/{read}/delete", data={"csrf_token": csrf_token(html)})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/console/scopes/{read}/edit")
    with app.app_context():
        assert db.session.get(Scope, read).enabled is False
    assert [json.loads(e.data)["scope"] for e in audit_rows(app, "scope.disabled")] == ["api.read"]
    assert "api.read" not in admin_client.get("/.well-known/oauth-protected-resource").get_json()["scopes_supported"]
    assert "disabled already" in admin_client.get(f"/console/scopes/{read}/delete").get_data(as_text=True)
    r = post_form(admin_client, f"/console/scopes/{read}/edit", {"description": "Read", "position": "0",
                                                                 "pre_claim": "y", "enabled": "y"})
    assert r.status_code == 302
    with app.app_context():
        row = db.session.get(Scope, read)
        assert row.enabled is True and row.description == "Read" and row.post_claim is False
    assert len(audit_rows(app, "scope.enabled")) == 1
    post_form(admin_client, f"/console/scopes/{inv}/delete", {})
    with app.app_context():
        assert db.session.get(Scope, inv) is None
    assert len(audit_rows(app, "scope.removed")) == 1


def test_authmd_preview_publish_diff_and_rollback(app, admin_client):
    page = admin_client.get("/console/authmd").get_data(as_text=True)
    assert "{{ register_uri }}" in page and "markdown" in page
    token = csrf_token(page)
    preview = admin_client.post("/console/authmd", data={"csrf_token": token, "action": "preview",
                                                         "body": "# Hi {{ service_name }}\n<script>x()</script>\n\nSee /agent/nowhere and `api.delete`: \"scopes\": [\"api.delete\"]"})
    html = preview.get_data(as_text=True)
    assert "<h1>Hi authmd</h1>" in html and "<script>x()" not in html
    assert "/agent/nowhere" in html and "api.delete, which is not an enabled scope" in html
    bad = admin_client.post("/console/authmd", data={"csrf_token": token, "action": "publish", "body": "{% for %}"})
    assert bad.status_code == 400 and 'id="body-error"' in bad.get_data(as_text=True)
    sandbox = admin_client.post("/console/authmd", data={"csrf_token": token, "action": "publish",
                                                         "body": "{{ ''.__class__.__mro__ }}"})
    assert sandbox.status_code == 400
    r = admin_client.post("/console/authmd", data={"csrf_token": token, "action": "publish", "note": "first",
                                                   "body": "# Version one for {{ service_name }}\n"})
    assert r.status_code == 302
    assert admin_client.get("/auth.md").get_data(as_text=True) == "# Version one for authmd\n"
    admin_client.post("/console/authmd", data={"csrf_token": token, "action": "publish", "note": "second",
                                               "body": "# Version two\n"})
    assert admin_client.get("/auth.md").get_data(as_text=True) == "# Version two\n"
    with app.app_context():
        first, second = [v.id for v in db.session.execute(db.select(AuthDocVersion).order_by(AuthDocVersion.id)).scalars()]
    diff = admin_client.get(f"/console/authmd/versions/{second}").get_data(as_text=True)
    assert '<span class="del">-# Version one for {{ service_name }}</span>' in diff
    assert '<span class="add">+# Version two</span>' in diff
    live = admin_client.post("/console/authmd/preview", data={"csrf_token": token, "body": "*x*"})
    assert "<em>x</em>" in live.get_data(as_text=True)
    admin_client.post(f"/console/authmd/versions/{first}/rollback", data={"csrf_token": token})
    assert admin_client.get("/auth.md").get_data(as_text=True) == "# Version one for authmd\n"
    published = audit_rows(app, "authmd.published")
    assert len(published) == 3 and json.loads(published[-1].data)["rollback_of"] == first


def test_settings_change_is_validated_and_audited_with_before_and_after(app, admin_client):
    page = admin_client.get("/console/settings").get_data(as_text=True)
    token = csrf_token(page)
    form = {"csrf_token": token, "service_name": "Acme", "anonymous_enabled": "y", "id_jag_enabled": "y",
            "registration_ttl": "7200", "claim_link_ttl": "600", "otp_ttl": "600", "access_token_ttl": "3600",
            "otp_max_per_attempt": "5", "otp_max_failures_per_attempt": "5", "otp_max_failures_per_registration": "20",
            **LATEST_SETTINGS}
    bad = admin_client.post("/console/settings", data={**form, "otp_ttl": "5"})
    assert bad.status_code == 400 and 'id="otp_ttl-error"' in bad.get_data(as_text=True)
    assert admin_client.post("/console/settings", data=form).status_code == 302
    meta = admin_client.get("/.well-known/oauth-authorization-server").get_json()
    assert meta["agent_auth"]["identity_types_supported"] == ["anonymous"]
    assert admin_client.get("/.well-known/oauth-protected-resource").get_json()["resource_name"] == "Acme"
    row = audit_rows(app, "settings.changed")[0]
    data = json.loads(row.data)
    assert data["before"] == {"service_name": "authmd", "verified_email_enabled": True, "registration_ttl": 86400}
    assert data["after"] == {"service_name": "Acme", "verified_email_enabled": False, "registration_ttl": 7200}


def test_revoking_a_registration_asks_first_then_the_key_answers_401(app, admin_client):
    agent = app.test_client()
    reg = register(agent)
    auth = {"Authorization": "Bearer " + reg["credential"]}
    assert agent.get("/api/resource", headers=auth).status_code == 200
    confirm = admin_client.get(f"/console/revoke?kind=registration&target={reg['registration_id']}")
    html = confirm.get_data(as_text=True)
    assert "<strong>1</strong> live credential(s) will stop working" in html
    assert agent.get("/api/resource", headers=auth).status_code == 200  # the GET changed nothing
    r = admin_client.post("/console/revoke", data={"csrf_token": csrf_token(html), "kind": "registration",
                                                   "target": reg["registration_id"]})
    assert r.status_code == 302
    after = agent.get("/api/resource", headers=auth)
    assert after.status_code == 401 and after.get_json()["error"] == "invalid_token"
    with app.app_context():
        assert db.session.get(Registration, reg["registration_id"]).status == "revoked"
    row = audit_rows(app, "registration.revoked")[0]
    assert row.actor_kind == "admin" and row.actor_id == "root@example.com"


def test_revoke_all_of_a_user_counts_and_stops_every_key(app, admin_client):
    from authmd import revocation
    agent = app.test_client()
    regs = [register(agent) for _ in range(3)]
    with app.app_context():
        user = User(email="bob@example.com", email_verified=True, created_at=utcnow())
        db.session.add(user)
        db.session.flush()
        for r in regs[:2]:
            db.session.get(Registration, r["registration_id"]).user_id = user.id
        db.session.commit()
        uid = user.id
        assert revocation.count_user(uid) == 2
    html = admin_client.get(f"/console/revoke?kind=user&target={uid}").get_data(as_text=True)
    assert "<strong>2</strong> live credential(s)" in html and "<strong>2</strong> registration(s)" in html
    admin_client.post("/console/revoke", data={"csrf_token": csrf_token(html), "kind": "user", "target": uid})
    codes = [agent.get("/api/resource", headers={"Authorization": "Bearer " + r["credential"]}).status_code for r in regs]
    assert codes == [401, 401, 200]


def test_disabling_a_user_stops_their_credentials(app, admin_client):
    agent = app.test_client()
    reg = register(agent)
    with app.app_context():
        user = User(email="carol@example.com", email_verified=True, created_at=utcnow())
        db.session.add(user)
        db.session.flush()
        db.session.execute(db.update(Credential).values(user_id=user.id))
        db.session.commit()
        uid = user.id
    page = admin_client.get(f"/console/users/{uid}/disable")
    assert page.status_code == 200 and "Disable carol@example.com?" in page.get_data(as_text=True)
    admin_client.post(f"/console/users/{uid}/disable", data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    assert agent.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]}).status_code == 401
    page = admin_client.get(f"/console/users/{uid}/promote")
    admin_client.post(f"/console/users/{uid}/promote", data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    with app.app_context():
        u = db.session.get(User, uid)
        assert not u.is_active and u.is_admin


def seed_registrations(app, n, start=None):
    start = start or utcnow() - timedelta(days=2)
    with app.app_context():
        db.session.execute(db.insert(Registration), [
            {"id": f"reg_{i:08d}", "type": "anonymous" if i % 3 else "email-verification",
             "status": "pending" if i % 2 else "claimed", "created_at": start + timedelta(minutes=i // 2),
             "email": f"u{i % 7}@example.com", "requested_credential_type": "api_key", "failed_otp_count": 0}
            for i in range(n)])
        db.session.commit()


def test_registrations_keyset_pages_cover_every_row_once_and_filters_work(app, admin_client):
    seed_registrations(app, 130)  # pairs share a created_at: the id breaks ties
    seen, url = [], "/console/registrations"
    while url:
        html = admin_client.get(url).get_data(as_text=True)
        seen += re.findall(r'<code>(reg_\d{8})</code>', html)
        nxt = re.search(r'href="([^"]+)" rel="next"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert len(seen) == 130 and len(set(seen)) == 130
    assert seen == sorted(seen, reverse=True)
    html = admin_client.get("/console/registrations?flow=email-verification&status=claimed").get_data(as_text=True)
    ids = re.findall(r'<code>(reg_(\d{8}))</code>', html)
    assert ids and all(int(n) % 3 == 0 and int(n) % 2 == 0 for _, n in ids)
    bad = admin_client.get("/console/registrations?from=yesterday")
    assert 'id="f-from-error"' in bad.get_data(as_text=True)
    found = admin_client.get("/console/registrations?q=reg_00000007")
    assert found.status_code == 302 and found.headers["Location"].endswith("/console/registrations/reg_00000007")
    assert "No registration has this id" in admin_client.get("/console/registrations?q=reg_nope").get_data(as_text=True)


def test_audit_filter_and_streamed_exports(app, admin_client):
    agent = app.test_client()
    regs = [register(agent) for _ in range(3)]
    html = admin_client.get(f"/console/audit?registration={regs[0]['registration_id']}").get_data(as_text=True)
    assert regs[0]["registration_id"] in html and regs[1]["registration_id"] not in html
    r = admin_client.get("/console/audit/export.csv?event=registration.created")
    assert r.is_streamed and r.mimetype == "text/csv"
    lines = r.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("id,time,event") and len(lines) == 4
    jl = admin_client.get("/console/audit/export.jsonl?event=credential.*").get_data(as_text=True).splitlines()
    assert len(jl) == 3 and all(json.loads(x)["event"] == "credential.issued" for x in jl)
    assert admin_client.get("/console/audit?user=abc").status_code == 400


def test_audit_export_reads_every_matching_row_once_in_keyset_batches(app, admin_client, monkeypatch):
    from sqlalchemy import event

    from authmd import queries
    monkeypatch.setattr(queries, "EXPORT_BATCH", 2)
    agent = app.test_client()
    for _ in range(3):
        register(agent)  # registration.created + credential.issued each, after admin.created and admin.login
    with app.app_context():
        every = [i for (i,) in db.session.execute(db.select(AuditEvent.id).order_by(AuditEvent.id.desc()))]
        issued = [i for (i,) in db.session.execute(db.select(AuditEvent.id).where(
            AuditEvent.event == "credential.issued").order_by(AuditEvent.id.desc()))]
        engine = db.engine
    reads = []

    def count_reads(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "FROM audit_events" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", count_reads)
    try:
        rows = admin_client.get("/console/audit/export.jsonl").get_data(as_text=True).splitlines()
        batches = len(reads)
        filtered = admin_client.get("/console/audit/export.jsonl?event=credential.*").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", count_reads)
    assert len(every) == 8 and [json.loads(x)["id"] for x in rows] == every  # all of them, once, newest first
    assert batches >= 4, f"{len(every)} rows in batches of 2 took {batches} read(s)"
    # the filter holds in every batch, not only in the first
    assert [json.loads(x)["id"] for x in filtered.splitlines()] == issued and len(issued) == 3


def test_outbox_shows_held_mail(app, admin_client):
    reg = register(app.test_client())
    app.test_client().post("/agent/auth/claim", json={"claim_token": reg["claim_token"], "email": "ada@example.com"})
    html = admin_client.get("/console/outbox").get_data(as_text=True)
    assert "ada@example.com" in html
    msg = admin_client.get("/console/outbox/1")
    assert "/agent/auth/claim/view?token=cvt_" in msg.get_data(as_text=True)
    assert msg.headers["Cache-Control"] == "no-store"


def test_default_authmd_has_no_drift_whatever_the_flows(app, admin_client):
    from authmd import settings
    from authmd.console import docs
    for flags in ({}, {"anonymous_enabled": False}, {"verified_email_enabled": False, "id_jag_enabled": False}):
        with app.test_request_context():
            settings.update(flags)
            db.session.commit()
            assert docs.drift(docs.render_text(docs.authdoc.default_template())[0]) == []
    assert "drifts from the settings" not in admin_client.get("/console/").get_data(as_text=True)


def test_a_published_text_that_names_a_switched_off_flow_warns_on_the_dashboard(app, admin_client):
    page = admin_client.get("/console/authmd").get_data(as_text=True)
    admin_client.post("/console/authmd", data={"csrf_token": csrf_token(page), "action": "publish",
                                               "body": 'Send {"type": "anonymous"} to {{ register_uri }}'})
    assert "drifts from the settings" not in admin_client.get("/console/").get_data(as_text=True)
    from authmd import settings
    with app.test_request_context():
        settings.update({"anonymous_enabled": False})
        db.session.commit()
    html = admin_client.get("/console/").get_data(as_text=True)
    assert "auth.md drifts from the settings: The text describes the anonymous start flow" in html


def test_csv_export_defuses_formulas_from_agent_controlled_fields(app, admin_client):
    agent = app.test_client()
    agent.post("/agent/auth", json={"type": "anonymous"}, headers={"User-Agent": "=HYPERLINK(\"http://x\")"})
    body = admin_client.get("/console/audit/export.csv?event=registration.created").get_data(as_text=True)
    assert "'=HYPERLINK" in body and ",=HYPERLINK" not in body


# --- the console's domain doors, its safety and its polish -----------------------------------------------------
def test_the_revoke_page_goes_back_only_to_a_path_on_this_host(app, admin_client):
    reg = register(app.test_client())
    url = f"/console/revoke?kind=registration&target={reg['registration_id']}&back="
    ok = admin_client.get(url + "/console/users").get_data(as_text=True)
    assert '<a class="button" href="/console/users">Cancel</a>' in ok
    for bad in ("https://evil.example/x", "//evil.example", "/\\evil.example", "/\tevil.example", "javascript:x"):
        html = admin_client.get("/console/revoke", query_string={
            "kind": "registration", "target": reg["registration_id"], "back": bad}).get_data(as_text=True)
        assert '<a class="button" href="/console/registrations">Cancel</a>' in html, bad
        assert 'name="back" value="/console/registrations"' in html, bad
    r = admin_client.post("/console/revoke", data={"csrf_token": csrf_token(ok), "kind": "registration",
                                                   "target": reg["registration_id"], "back": "/\\evil.example"})
    assert r.status_code == 302 and r.headers["Location"] == "/console/registrations"


def test_an_admin_cannot_disable_or_demote_their_own_account(app, admin_client, admin_user):
    from authmd import users
    from authmd.util import ProtocolError
    for action in ("disable", "demote"):
        r = admin_client.get(f"/console/users/{admin_user}/{action}")
        assert r.status_code == 302 and r.headers["Location"].endswith(f"/console/users/{admin_user}")
        page = admin_client.get(f"/console/users/{admin_user}").get_data(as_text=True)
        assert "You cannot do that to your own account." in page
        admin_client.post(f"/console/users/{admin_user}/{action}", data={"csrf_token": csrf_token(page)})
    with app.app_context():
        me = db.session.get(User, admin_user)
        assert me.is_active and me.is_admin
        for fn in (users.disable, users.demote):  # the domain refuses it too, whoever calls it
            try:
                fn(admin_user, by_user_id=admin_user, actor_id="test")
                raise AssertionError(f"{fn.__name__} of oneself was allowed")
            except ProtocolError as exc:
                assert exc.status == 409
    assert audit_rows(app, "user.disabled") == [] and audit_rows(app, "user.demoted") == []


def test_dashboard_says_when_the_development_provider_is_on(make_app, app, admin_client, admin_user, tmp_path):
    from tests.fixtures.console import ADMIN_EMAIL, ADMIN_PASSWORD
    assert "development identity provider is ON" not in admin_client.get("/console/").get_data(as_text=True)
    dev = make_app(DEV_PROVIDER=True, DEV_PROVIDER_KEY_FILE=str(tmp_path / "dev.pem"))
    client = dev.test_client()
    post_form(client, "/console/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    html = client.get("/console/").get_data(as_text=True)
    attention = html.split('id="warn-title"', 1)[1].split("</section>", 1)[0]
    assert "The development identity provider is ON (AUTHMD_DEV_PROVIDER)" in attention


def test_dashboard_counts_read_as_sentences_and_each_chart_has_a_title_and_axes(app, admin_client):
    agent = app.test_client()
    regs = [register(agent) for _ in range(2)]
    agent.post("/agent/auth/claim", json={"claim_token": regs[0]["claim_token"], "email": "ada@example.com"})
    html = admin_client.get("/console/").get_data(as_text=True)
    assert '<span class="num">1</span> claim waiting' in html and '<span class="num">2</span> registrations' in html
    assert '<span class="num">1</span> user</div>' in html and "1</span> users" not in html  # the admin
    agent.post("/agent/auth/claim", json={"claim_token": regs[1]["claim_token"], "email": "bob@example.com"})
    assert '<span class="num">2</span> claims waiting' in admin_client.get("/console/").get_data(as_text=True)
    with app.app_context():
        today = utcnow().date()
    first, last = (today - timedelta(days=29)).isoformat(), today.isoformat()
    charts = re.findall(r'<figure class="chart">(.*?)</figure>', html, re.S)
    assert len(charts) == 6
    for chart in charts:
        assert re.search(r"<figcaption>[A-Z][^<]+ <span", chart), "a chart without a title"
        assert f'<div class="x-axis" aria-hidden="true"><span>{first}</span><span>{last}</span></div>' in chart
    anonymous = next(c for c in charts if "Registrations: anonymous" in c)
    assert '<div class="y-axis" aria-hidden="true"><span>2</span><span>0</span></div>' in anonymous


def test_every_page_links_the_favicon_and_it_is_served(app, admin_client):
    page = admin_client.get("/console/").get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in page
    icon = admin_client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml" and b"<svg" in icon.data
    assert 'rel="icon"' in app.test_client().get("/portal/login").get_data(as_text=True)


def test_the_issuer_revoke_button_says_what_it_revokes(app, admin_client):
    seed_registrations(app, 1)
    with app.app_context():
        db.session.get(Registration, "reg_00000000").iss = "https://idp.example"
        db.session.commit()
    html = admin_client.get("/console/registrations/reg_00000000").get_data(as_text=True)
    assert ">Revoke everything this issuer vouched for</a>" in html and "this issuer's<" not in html


def test_a_template_error_names_its_line_in_the_admins_text(app, admin_client):
    from authmd.console import docs
    page = admin_client.get("/console/authmd").get_data(as_text=True)
    six = "".join(f"Line {n} of the document.\r\n" for n in range(1, 7))  # a browser's textarea sends CRLF
    for bad in ("{{ service_name.nope.deeper }}", "{{ 1 / 0 }}", "{% if %}", "{{ ''.__class__.__mro__ }}",
                "{{ range(10 ** 9) | list }}"):
        for action in ("preview", "publish"):
            r = admin_client.post("/console/authmd", data={"csrf_token": csrf_token(page), "action": action,
                                                           "body": six + bad + "\r\nLine 8.\r\n"})
            error = r.get_data(as_text=True).split('id="body-error"', 1)[1].split("</p>", 1)[0]
            assert r.status_code == 400 and "on line 7" in error, (bad, action, error)
        with app.test_request_context():
            assert "on line 7:" in docs.render_text(six.replace("\r\n", "\n") + bad)[1]
    with app.app_context():
        assert db.session.execute(db.select(AuthDocVersion)).first() is None  # nothing was published
    assert len(admin_client.get("/auth.md").data) > 1000


def test_lifetimes_read_in_minutes_hours_and_days(app, admin_client, clock):
    from tests.fixtures.flows import email_body
    settings_page = admin_client.get("/console/settings").get_data(as_text=True)
    for said in ("Now 86400 seconds = 1 day.", "Now 600 seconds = 10 minutes.", "Now 3600 seconds = 1 hour.",
                 "between 60 (1 minute) and 2592000 (30 days)."):
        assert said in settings_page
    clock.frozen = clock()
    reg = app.test_client().post("/agent/auth", json=email_body("ada@example.com", "access_token")).get_json()
    with app.test_request_context():  # the access token a completed claim would issue
        from authmd import credentials
        credentials.issue(db.session.get(Registration, reg["registration_id"]), "access_token", ["api.read"])
        db.session.commit()
    detail = admin_client.get(f"/console/registrations/{reg['registration_id']}").get_data(as_text=True)
    assert "(in 1 day; a claim window of 1 day)" in detail and "(lifetime 1 hour)" in detail
    assert "86400" not in detail and "3600" not in detail


def test_tables_clip_long_ids_and_emails_with_the_whole_text_in_a_title(app, admin_client):
    long_email = "margaret.hamilton.long-address@apollo-guidance.example.com"
    seed_registrations(app, 1)
    with app.app_context():
        db.session.get(Registration, "reg_00000000").email = long_email
        db.session.commit()
    html = admin_client.get("/console/registrations").get_data(as_text=True)
    assert f'<span class="clip " title="{long_email}">{long_email}</span>' in html
    assert ('<a class="clip id" href="/console/registrations/reg_00000000" title="reg_00000000">'
            '<code>reg_00000000</code></a>') in html
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+Z"><span class="nowrap">\d{4}-\d\d-\d\d</span> '
                     r'<span class="nowrap">\d\d:\d\d UTC</span></time>', html)


def test_console_changes_are_audited_with_who_asked(app, admin_client):
    """The domain functions take the admin, the address and the browser from the view: they read no request."""
    headers = {"User-Agent": "AdminBrowser/1.0"}
    page = admin_client.get("/console/scopes").get_data(as_text=True)
    admin_client.post("/console/scopes", data={"csrf_token": csrf_token(page), "name": "files.read",
                                               "post_claim": "y", "enabled": "y"}, headers=headers)
    admin_client.post("/console/authmd", data={"csrf_token": csrf_token(page), "action": "publish",
                                               "body": "# hi\n"}, headers=headers)
    for event in ("scope.added", "authmd.published"):
        [row] = audit_rows(app, event)
        assert (row.actor_kind, row.actor_id, row.user_agent) == ("admin", "root@example.com", "AdminBrowser/1.0")
        assert row.ip == "127.0.0.1"
