"""Trusted issuers pages: the Test button against a real JWKS served over loopback HTTP; the rules, audit rows
and key-cache purge the console shares with `flask issuers`."""
import json

from authmd.extensions import db
from authmd.models import AuditEvent, TrustedIssuer
from tests.fixtures.console import post_form
from tests.fixtures.provider import trust


def _press_test(app, admin_client):
    with app.app_context():
        iid = db.session.execute(db.select(TrustedIssuer.id)).scalar()
    return post_form(admin_client, "/console/issuers", {}, post_url=f"/console/issuers/{iid}/test")


def test_test_button_lists_the_key_ids_of_the_live_jwks(app, admin_client, provider):
    trust(app, provider)
    r = _press_test(app, admin_client)
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "Test result" in html
    for key in provider.keys:
        assert key.kid in html and key.alg in html


def test_test_button_shows_the_exact_error_when_the_jwks_is_down(app, admin_client, provider):
    trust(app, provider)
    provider.down = True
    html = _press_test(app, admin_client).get_data(as_text=True)
    assert 'class="field-error"' in html and "JWKS answered HTTP 503" in html
    assert "The JWKS answered with" not in html


def _audit(app, event):
    with app.app_context():
        return [json.loads(e.data) for e in db.session.execute(
            db.select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)).scalars()]


def test_every_rule_is_checked_and_shown_beside_its_field(app, admin_client):
    r = post_form(admin_client, "/console/issuers/new", {
        "issuer": "https://id.example.com?x=1", "jwks_uri": "http://keys.example.com/jwks.json",
        "algorithms": "ES256 HS256", "scopes": "api.read nope", "require_amr": "m f a", "name": "x" * 201})
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    for field, message in [("issuer", "The URL must not carry a query, a fragment or credentials."),
                           ("jwks_uri", "Use https:// (plain http is allowed only on localhost"),
                           ("algorithms", "Not allowed: HS256. Choose from"),
                           ("scopes", "Unknown scope(s): nope. The enabled scopes are: api.read api.write."),
                           ("require_amr", "Use at most 50 characters without spaces"),
                           ("name", "Use at most 200 characters")]:
        error = html.split(f'id="{field}-error"', 1)[1].split("</p>", 1)[0]
        assert message in error.replace("&#39;", "'"), (field, error)
    with app.app_context():
        assert db.session.execute(db.select(db.func.count()).select_from(TrustedIssuer)).scalar() == 0
        assert _audit(app, "issuer.added") == []


def test_the_console_and_the_cli_write_the_same_audit_rows(app, admin_client, runner):
    settings = {"name": "Example", "jwks_uri": "https://keys.example.com/jwks.json", "algorithms": "ES256 EdDSA",
                "scopes": "api.read", "require_amr": "mfa", "allowed_client_ids": "c1 c2"}
    r = post_form(admin_client, "/console/issuers/new", {"issuer": "https://console.example.com", "enabled": "y",
                                                         **settings})
    assert r.status_code == 302
    assert runner.invoke(args=["issuers", "add", "https://cli.example.com", "--name", "Example", "--jwks-uri",
                               settings["jwks_uri"], "--algorithm", "ES256", "--algorithm", "EdDSA", "--scope",
                               "api.read", "--require-amr", "mfa", "--client-id", "c1", "--client-id",
                               "c2"]).exit_code == 0
    console_row, cli_row = _audit(app, "issuer.added")
    assert console_row.pop("issuer_id") != cli_row.pop("issuer_id")
    assert console_row == cli_row == {"changes": {**settings, "allow_private_jwks": False, "enabled": True}}
    with app.app_context():
        iid = db.session.execute(db.select(TrustedIssuer.id).where(
            TrustedIssuer.issuer == "https://console.example.com")).scalar()
    post_form(admin_client, "/console/issuers", {}, post_url=f"/console/issuers/{iid}/toggle")
    assert runner.invoke(args=["issuers", "disable", "https://cli.example.com"]).exit_code == 0
    post_form(admin_client, f"/console/issuers/{iid}/remove", {})
    assert runner.invoke(args=["issuers", "remove", "https://cli.example.com"]).exit_code == 0
    for event in ("issuer.disabled", "issuer.removed"):
        assert [set(d) for d in _audit(app, event)] == [{"issuer_id"}, {"issuer_id"}]


def test_an_edit_records_what_changed(app, admin_client):
    post_form(admin_client, "/console/issuers/new", {"issuer": "https://id.example.com", "algorithms": "ES256",
                                                     "enabled": "y"})
    with app.app_context():
        iid = db.session.execute(db.select(TrustedIssuer.id)).scalar()
    r = post_form(admin_client, f"/console/issuers/{iid}/edit", {"issuer": "https://id.example.com",
                                                                  "algorithms": "ES256 RS256", "enabled": "y"})
    assert r.status_code == 302
    assert _audit(app, "issuer.updated") == [{"issuer_id": iid, "changes": {"algorithms": ["ES256", "ES256 RS256"]}}]
    # the iss is matched exactly, so a trailing slash is kept as typed (as `flask issuers add` does)
    post_form(admin_client, f"/console/issuers/{iid}/edit", {"issuer": "https://id.example.com/",
                                                             "algorithms": "ES256 RS256", "enabled": "y"})
    assert _audit(app, "issuer.updated")[1]["changes"] == {"issuer": ["https://id.example.com",
                                                                      "https://id.example.com/"]}


def test_remove_forgets_this_workers_cached_keys(app, admin_client, client, provider, register_id_jag):
    trust(app, provider)
    assert register_id_jag(client, provider.id_jag()).status_code == 200
    with app.app_context():
        iid = db.session.execute(db.select(TrustedIssuer.id)).scalar()
    post_form(admin_client, f"/console/issuers/{iid}/remove", {})
    r = post_form(admin_client, "/console/issuers/new", {"issuer": provider.issuer, "algorithms": "ES256",
                                                         "enabled": "y"})
    assert r.status_code == 302
    assert register_id_jag(client, provider.id_jag()).status_code == 200
    assert provider.jwks_requests == 2  # trusted anew, its keys are fetched anew
