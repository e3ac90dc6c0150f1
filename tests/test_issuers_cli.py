"""`flask issuers add|list|disable|enable|remove`: the trust list managed from the command line."""
import pytest

from authmd.extensions import db
from authmd.models import AuditEvent, TrustedIssuer


def _row(app, issuer):
    with app.app_context():
        return db.session.execute(db.select(TrustedIssuer).where(TrustedIssuer.issuer == issuer)).scalar()


@pytest.mark.parametrize("args", [["issuers"], ["issuers", "add"], ["issuers", "list"], ["issuers", "disable"],
                                  ["issuers", "enable"], ["issuers", "remove"]])
def test_every_command_has_help(runner, args):
    r = runner.invoke(args=args + ["--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def test_add_with_every_option_then_list(app, runner):
    r = runner.invoke(args=["issuers", "add", "https://id.example.com", "--name", "Example",
                            "--jwks-uri", "https://keys.example.com/jwks.json", "--scope", "api.read",
                            "--require-amr", "mfa", "--client-id", "c1", "--client-id", "c2",
                            "--algorithm", "ES256", "--algorithm", "EdDSA", "--allow-private-jwks"])
    assert r.exit_code == 0, r.output
    row = _row(app, "https://id.example.com")
    assert (row.name, row.jwks_uri, row.scopes, row.require_amr, row.allowed_client_ids, row.algorithms,
            row.allow_private_jwks, row.enabled) == ("Example", "https://keys.example.com/jwks.json", "api.read",
                                                     "mfa", "c1 c2", "ES256 EdDSA", True, True)
    out = runner.invoke(args=["issuers", "list"]).output
    assert "https://id.example.com\tenabled\thttps://keys.example.com/jwks.json\tES256 EdDSA\tapi.read" in out
    assert "amr=mfa" in out and "client_id=c1,c2" in out
    with app.app_context():
        ev = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "issuer.added")).scalar_one()
        assert ev.iss == "https://id.example.com" and ev.actor_kind == "admin"


def test_defaults(app, runner):
    assert runner.invoke(args=["issuers", "add", "http://localhost:9999/idp"]).exit_code == 0
    row = _row(app, "http://localhost:9999/idp")
    assert row.algorithms == "ES256 RS256 PS256 EdDSA" and row.scopes is None and row.jwks_uri is None
    assert "http://localhost:9999/idp/.well-known/jwks.json" in runner.invoke(args=["issuers", "list"]).output


@pytest.mark.parametrize("args,message", [
    (["http://id.example.com"], "ISSUER: Use https:// (plain http is allowed only on localhost, 127.0.0.1 and [::1])."),
    (["https://id.example.com?x=1"], "ISSUER: The URL must not carry a query, a fragment or credentials."),
    (["not a url"], "ISSUER: Enter a URL of at most 500 characters, without spaces."),
    (["https://id.example.com", "--jwks-uri", "http://keys.example.com/j"], "--jwks-uri: Use https://"),
    (["https://id.example.com", "--algorithm", "HS256"], "--algorithm: Not allowed: HS256. Choose from ES256"),
    (["https://id.example.com", "--algorithm", "none"], "--algorithm: Not allowed: none."),
    (["https://id.example.com", "--scope", "nope"],
     "--scope: Unknown scope(s): nope. The enabled scopes are: api.read api.write."),
    (["https://id.example.com", "--name", "x" * 201], "--name: Use at most 200 characters"),
    (["https://id.example.com", "--require-amr", "m f a"], "--require-amr: Use at most 50 characters without spaces"),
])
def test_bad_input_is_refused_with_a_message(app, runner, args, message):
    r = runner.invoke(args=["issuers", "add"] + args)
    assert r.exit_code != 0 and message in r.output
    with app.app_context():
        assert db.session.execute(db.select(db.func.count()).select_from(TrustedIssuer)).scalar() == 0


def test_duplicate_and_unknown_issuers(runner):
    assert runner.invoke(args=["issuers", "add", "https://id.example.com"]).exit_code == 0
    r = runner.invoke(args=["issuers", "add", "https://id.example.com"])
    assert r.exit_code != 0 and "ISSUER: This issuer is already in the list of trusted issuers." in r.output
    for cmd in ("disable", "enable", "remove"):
        r = runner.invoke(args=["issuers", cmd, "https://nobody.example.com"])
        assert r.exit_code != 0 and "ISSUER: https://nobody.example.com is not in the trust list." in r.output


def test_disable_enable_remove_change_what_is_accepted(app, runner, client, provider, register_id_jag):
    assert runner.invoke(args=["issuers", "add", provider.issuer, "--name", "Test"]).exit_code == 0
    assert register_id_jag(client, provider.id_jag()).status_code == 200
    assert client.get("/.well-known/oauth-authorization-server").json["agent_auth"]["trusted_issuers"] == \
        [provider.issuer]
    assert runner.invoke(args=["issuers", "disable", provider.issuer]).exit_code == 0
    assert "disabled" in runner.invoke(args=["issuers", "list"]).output
    r = register_id_jag(client, provider.id_jag())
    assert r.json["error"] == "issuer_not_enabled"  # it was the only one
    assert client.get("/.well-known/oauth-authorization-server").json["agent_auth"]["trusted_issuers"] == []
    assert runner.invoke(args=["issuers", "enable", provider.issuer]).exit_code == 0
    assert register_id_jag(client, provider.id_jag()).status_code == 200
    assert runner.invoke(args=["issuers", "remove", provider.issuer]).exit_code == 0
    assert _row(app, provider.issuer) is None
    assert "no trusted issuers" in runner.invoke(args=["issuers", "list"]).output
    with app.app_context():
        events = [e.event for e in db.session.execute(db.select(AuditEvent).order_by(AuditEvent.id)).scalars()
                  if e.event.startswith("issuer.")]
    assert events == ["issuer.added", "issuer.disabled", "issuer.enabled", "issuer.removed"]


def test_remove_forgets_this_workers_cached_keys(runner, client, provider, register_id_jag):
    assert runner.invoke(args=["issuers", "add", provider.issuer]).exit_code == 0
    assert register_id_jag(client, provider.id_jag()).status_code == 200
    assert runner.invoke(args=["issuers", "remove", provider.issuer]).exit_code == 0
    assert runner.invoke(args=["issuers", "add", provider.issuer]).exit_code == 0
    assert register_id_jag(client, provider.id_jag()).status_code == 200
    assert provider.jwks_requests == 2  # trusted anew, its keys are fetched anew
