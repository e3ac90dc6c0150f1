"""Discovery (spec §1): PRM, AS metadata with agent_auth from live settings, and the served /auth.md."""
import json
import re

import pytest

from authmd import authdoc
from authmd.extensions import db
from authmd.models import AuthDocVersion
from tests.fixtures.flows import ANON, email_body, set_settings

ISSUER = "http://localhost:8000"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


def test_protected_resource_metadata(client):
    r = client.get("/.well-known/oauth-protected-resource")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.headers["Cache-Control"] == "public, max-age=300"
    assert r.get_json() == {
        "resource": ISSUER + "/api/", "resource_name": "authmd",
        "authorization_servers": [ISSUER], "scopes_supported": ["api.read", "api.write"],
        "bearer_methods_supported": ["header"], "resource_documentation": ISSUER + "/auth.md"}


def test_prm_names_the_logo_and_service_name_from_settings(app, client):
    set_settings(app, service_name="Acme API", logo_uri="https://acme.example/logo.png")
    body = client.get("/.well-known/oauth-protected-resource").get_json()
    assert body["resource_name"] == "Acme API"
    assert body["resource_logo_uri"] == "https://acme.example/logo.png"


def test_authorization_server_metadata(client):
    r = client.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "public, max-age=300"
    assert r.get_json() == {
        "issuer": ISSUER, "resource": ISSUER + "/api/", "authorization_servers": [ISSUER],
        "scopes_supported": ["api.read", "api.write"], "bearer_methods_supported": ["header"],
        # the latest protocol's keys beside v0.1's (one document serves both)
        "token_endpoint": ISSUER + "/oauth2/token", "revocation_endpoint": ISSUER + "/oauth2/revoke",
        "jwks_uri": ISSUER + "/.well-known/jwks.json",
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint": ISSUER + "/oauth2/introspect",
        "agent_auth": {
            "skill": ISSUER + "/auth.md", "register_uri": ISSUER + "/agent/auth",
            "claim_uri": ISSUER + "/agent/auth/claim", "revocation_uri": ISSUER + "/agent/auth/revoke",
            "identity_endpoint": ISSUER + "/agent/identity", "claim_endpoint": ISSUER + "/agent/identity/claim",
            "events_endpoint": ISSUER + "/agent/event/notify",
            "identity_types_supported": ["anonymous", "identity_assertion", "service_auth"],
            "anonymous": {"credential_types_supported": ["api_key"]},
            # no trusted issuer yet, so the ID-JAG assertion type is not offered
            "identity_assertion": {"assertion_types_supported": ["verified_email"],
                                   "credential_types_supported": ["access_token", "api_key"]},
            "events_supported": ["https://schemas.workos.com/events/agent/auth/identity/assertion/revoked"],
            "trusted_issuers": []}}


def test_id_jag_is_offered_once_an_issuer_is_trusted(app, client):
    from datetime import datetime
    from authmd.models import TrustedIssuer
    with app.app_context():
        db.session.add(TrustedIssuer(issuer="https://idp.example", name="IdP", created_at=datetime(2026, 1, 1)))
        db.session.commit()
    block = client.get("/.well-known/oauth-authorization-server").get_json()["agent_auth"]
    assert block["identity_assertion"]["assertion_types_supported"] == [ID_JAG, "verified_email"]
    assert block["trusted_issuers"] == ["https://idp.example"]


def test_agent_auth_follows_live_settings(app, client):
    set_settings(app, anonymous_enabled=False)
    block = client.get("/.well-known/oauth-authorization-server").get_json()["agent_auth"]
    assert block["identity_types_supported"] == ["identity_assertion", "service_auth"] and "anonymous" not in block
    r = client.post("/agent/auth", json=ANON)
    assert r.status_code == 400 and r.get_json()["error"] == "anonymous_not_enabled"

    set_settings(app, verified_email_enabled=False)
    block = client.get("/.well-known/oauth-authorization-server").get_json()["agent_auth"]
    assert block["identity_types_supported"] == [] and "identity_assertion" not in block
    r = client.post("/agent/auth", json=email_body("a@example.com"))
    assert r.status_code == 400 and r.get_json()["error"] == "verified_email_not_enabled"

    set_settings(app, anonymous_enabled=True, verified_email_enabled=True)
    block = client.get("/.well-known/oauth-authorization-server").get_json()["agent_auth"]
    assert block["identity_types_supported"] == ["anonymous", "identity_assertion", "service_auth"]


def test_disabled_scopes_leave_the_metadata(app, client, runner):
    runner.invoke(args=["scopes", "add", "extra.scope"])
    assert "extra.scope" in client.get("/.well-known/oauth-protected-resource").get_json()["scopes_supported"]
    runner.invoke(args=["scopes", "remove", "extra.scope"])
    assert client.get("/.well-known/oauth-protected-resource").get_json()["scopes_supported"] == [
        "api.read", "api.write"]


def test_issuer_and_resource_come_from_config(make_app):
    other = make_app(ISSUER="https://auth.acme.example/", RESOURCE="https://api.acme.example/")
    c = other.test_client()
    prm = c.get("/.well-known/oauth-protected-resource").get_json()
    assert prm["resource"] == "https://api.acme.example/"
    assert prm["authorization_servers"] == ["https://auth.acme.example"]
    assert c.get("/.well-known/oauth-authorization-server").get_json()["agent_auth"]["register_uri"] == \
        "https://auth.acme.example/agent/auth"


# --- /auth.md ------------------------------------------------------------------------------------------------


def test_auth_md_is_markdown_with_an_etag(client):
    r = client.get("/auth.md")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/markdown; charset=utf-8"
    tag = r.headers["ETag"]
    assert tag
    again = client.get("/auth.md", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == tag
    weak = client.get("/auth.md", headers={"If-None-Match": "W/" + tag})
    assert weak.status_code == 304
    other = client.get("/auth.md", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.data == r.data


def test_the_etag_changes_with_the_document(app, client):
    tag = client.get("/auth.md").headers["ETag"]
    set_settings(app, service_name="Renamed")
    r = client.get("/auth.md", headers={"If-None-Match": tag})
    assert r.status_code == 200 and r.headers["ETag"] != tag and "Renamed" in r.get_data(as_text=True)


def _headings(text):
    return re.findall(r"^(#{1,3}) (.+)$", text, re.M)


def test_the_default_document_follows_the_spec_outline(client):
    text = client.get("/auth.md").get_data(as_text=True)
    assert text.startswith("# auth.md\n")
    titles = [t for _, t in _headings(text)]
    order = ["Step 1: Discover", "1a. Protected resource metadata", "1b. Authorization server metadata",
             "Step 2: Pick a method", "Step 3: Register", "Anonymous start", "Email required",
             "Step 4: Claim ceremony", "4a. Trigger the claim", "4b. Wait for the code", "4c. Submit the code",
             "Step 5: Use the credential", "Errors", "Revocation"]
    positions = []
    for want in order:
        found = [i for i, t in enumerate(titles) if t.startswith(want)]
        assert found, f"missing heading {want!r}"
        positions.append(found[0])
    assert positions == sorted(positions)
    assert "```http\nPOST http://localhost:8000/agent/auth\n" in text
    assert text.count("```http") >= 5 and text.count("```json") >= 5
    step1b = text.split("### 1b.", 1)[1].split("## Step 2", 1)[0]
    assert "```http\nGET http://localhost:8000/.well-known/oauth-authorization-server" in step1b
    live = json.loads(step1b.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert live["agent_auth"] == client.get("/.well-known/oauth-authorization-server").get_json()["agent_auth"]
    # the preamble names the real hosts
    preamble = text.split("## Step 1")[0]
    assert "localhost:8000" in preamble and "http://localhost:8000/api/" in preamble


def _emitted_codes():
    """Every error code the foundation can send an agent: read from the source, not typed by hand."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "authmd"
    codes = set()
    for path in list(root.glob("*.py")) + list((root / "protocol").glob("*.py")):
        src = path.read_text()
        codes |= set(re.findall(r'ProtocolError\(\s*\d{3},\s*"([a-z_]+)"', src))
        codes |= set(re.findall(r'json_error\(\s*\d{3},\s*"([a-z_]+)"', src))
    # generic HTTP answers on agent paths (spec §6)
    codes |= {"not_found", "method_not_allowed", "request_too_large", "unsupported_media_type", "server_error"}
    return codes


def test_the_errors_table_names_every_code_this_service_emits(client):
    text = client.get("/auth.md").get_data(as_text=True)
    errors = text.split("## Errors", 1)[1].split("## Revocation", 1)[0]
    in_table = set(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", errors, re.M))
    names = {c for c, _ in in_table}
    missing = _emitted_codes() - names
    assert not missing, f"codes missing from the Errors table: {sorted(missing)}"
    for code, status in [("invalid_claim_token", "401"), ("claimed_or_in_flight", "409"), ("claim_expired", "410"),
                         ("email_unavailable", "503"), ("otp_not_generated", "400"), ("otp_expired", "410"),
                         ("otp_invalid", "401"), ("previously_claimed", "409"), ("claim_superseded", "410"),
                         ("claim_completed", "409"), ("rate_limited", "429"), ("claim_denied", "403")]:
        assert (code, status) in in_table


def test_the_document_reflects_live_urls_scopes_and_flows(app, make_app, runner):
    text = app.test_client().get("/auth.md").get_data(as_text=True)
    assert "Anonymous start" in text and "files.read" not in text
    runner.invoke(args=["scopes", "add", "files.read", "--pre-claim", "--description", "Read files"])
    set_settings(app, anonymous_enabled=False)
    text2 = app.test_client().get("/auth.md").get_data(as_text=True)
    assert "`files.read`: Read files" in text2
    assert "### Anonymous start" not in text2 and "### Email required" in text2
    other = make_app(ISSUER="https://auth.acme.example")
    text3 = other.test_client().get("/auth.md").get_data(as_text=True)
    assert "https://auth.acme.example/agent/auth" in text3 and "localhost:8000" not in text3


def test_a_published_version_replaces_the_default(app, client):
    from datetime import datetime
    with app.app_context():
        db.session.add(AuthDocVersion(body="# auth.md\n\nRegister at {{ register_uri }}.\n", note="",
                                      created_at=datetime(2026, 1, 1)))
        db.session.commit()
    assert client.get("/auth.md").get_data(as_text=True) == \
        "# auth.md\n\nRegister at http://localhost:8000/agent/auth.\n"


def test_the_template_is_sandboxed(app):
    from jinja2.exceptions import SecurityError
    with app.app_context():
        with pytest.raises(SecurityError):
            authdoc.render("{{ ''.__class__.__mro__[1].__subclasses__() }}")


def test_configuration_from_authmd_environment_variables(schema, monkeypatch, smtp):
    from app import create_app
    from tests.conftest import _wipe
    monkeypatch.setenv("AUTHMD_ISSUER", "https://env.example/")
    monkeypatch.setenv("AUTHMD_RESOURCE", "https://env.example/v2/")
    monkeypatch.setenv("AUTHMD_DATABASE_URL", schema)
    monkeypatch.setenv("AUTHMD_SECRET_KEY", "from-env-0123")
    monkeypatch.setenv("AUTHMD_MAIL_SERVER", smtp.host)
    monkeypatch.setenv("AUTHMD_MAIL_PORT", str(smtp.port))
    monkeypatch.setenv("AUTHMD_MAIL_USE_TLS", "false")
    monkeypatch.setenv("AUTHMD_MAIL_DEFAULT_SENDER", "Env <env@example.com>")
    app = create_app({"TESTING": True, "RATELIMIT_ENABLED": False})
    try:
        assert app.config["ISSUER"] == "https://env.example" and app.config["SECRET_KEY"] == "from-env-0123"
        assert app.config["MAIL_PORT"] == smtp.port and app.config["MAIL_USE_TLS"] is False
        _wipe(app)
        c = app.test_client()
        prm = c.get("/.well-known/oauth-protected-resource").get_json()
        assert prm["resource"] == "https://env.example/v2/" and prm["authorization_servers"] == ["https://env.example"]
        r = c.post("/agent/auth", json=email_body("env@example.org"))
        assert r.status_code == 200 and r.get_json()["claim_url"] == "https://env.example/agent/auth/claim"
        [msg] = smtp.to("env@example.org")
        assert msg["From"] == "Env <env@example.com>"
        assert "https://env.example/agent/auth/claim/view?token=cvt_" in smtp.text(msg)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.mark.parametrize("issuer", ["https://a.example", "https://a.example/"])
def test_resource_defaults_to_the_issuer_api_path(make_app, issuer):
    other = make_app(ISSUER=issuer, RESOURCE=None)
    assert other.config["RESOURCE"] == "https://a.example/api/"  # one slash, whatever the ISSUER ends with
    c = other.test_client()
    prm = c.get("/.well-known/oauth-protected-resource").get_json()
    meta = c.get("/.well-known/oauth-authorization-server").get_json()
    # what agents read, not only the setting: the documents name that resource and the issuer without a slash
    assert prm["resource"] == meta["resource"] == "https://a.example/api/"
    assert prm["authorization_servers"] == [meta["issuer"]] == ["https://a.example"]
    assert "https://a.example/api/resource" in c.get("/auth.md").get_data(as_text=True)


def test_the_default_document_describes_the_latest_protocol_first_and_keeps_v01(client):
    text = client.get("/auth.md").get_data(as_text=True)
    latest = text.index("POST http://localhost:8000/agent/identity\n")
    v01 = text.index("## Agents that speak auth.md v0.1")
    assert latest < v01 < text.index("## Errors")
    for needle in ('{"type": "anonymous"}', '"type": "service_auth", "login_hint"', "POST http://localhost:8000/oauth2/token",
                   "POST http://localhost:8000/agent/identity/claim/complete", '"user_code": "123456"',
                   '{"type": "refresh", "refresh_token": "art_…"}', "grant-type%3Ajwt-bearer"):
        assert needle in text[:v01], needle
    assert "POST http://localhost:8000/agent/auth\n" in text[v01:]
