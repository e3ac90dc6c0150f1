"""The operator's CLI (flask --app app ...): init-db, expire, scopes list|add|remove, outbox list|show."""
import pytest

from authmd.extensions import db
from authmd.models import OutboxMail, Scope
from tests.fixtures.flows import ANON, audit_rows


@pytest.mark.parametrize("args", [["init-db"], ["expire"], ["scopes"], ["scopes", "list"], ["scopes", "add"],
                                  ["scopes", "remove"], ["outbox"], ["outbox", "list"], ["outbox", "show"]])
def test_every_command_has_help(runner, args):
    r = runner.invoke(args=args + ["--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_init_db_is_idempotent_and_seeds_scopes(app, runner):
    with app.app_context():
        db.session.execute(db.delete(Scope))
        db.session.commit()
    for _ in range(2):
        r = runner.invoke(args=["init-db"])
        assert r.exit_code == 0, r.output
        assert "database ready" in r.output and "password" not in r.output
    with app.app_context():
        rows = db.session.execute(db.select(Scope).order_by(Scope.position)).scalars().all()
        assert [(s.name, s.pre_claim, s.post_claim) for s in rows] == [("api.read", True, True),
                                                                      ("api.write", False, True)]


def test_scopes_list(runner):
    r = runner.invoke(args=["scopes", "list"])
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("api.read\tpre-claim,post-claim")
    assert lines[1].startswith("api.write\tpost-claim")


def test_scopes_add_then_remove_an_unused_scope(app, runner):
    r = runner.invoke(args=["scopes", "add", "reports.read", "--description", "Read reports", "--pre-claim"])
    assert r.exit_code == 0 and "added reports.read" in r.output
    assert "reports.read\tpre-claim,post-claim\tRead reports" in runner.invoke(args=["scopes", "list"]).output
    dup = runner.invoke(args=["scopes", "add", "reports.read"])
    assert dup.exit_code == 1 and "Error: A scope named reports.read exists." in dup.output, dup.output
    assert runner.invoke(args=["scopes", "list"]).output.count("reports.read") == 1
    r = runner.invoke(args=["scopes", "remove", "reports.read"])
    assert r.exit_code == 0 and "removed reports.read" in r.output
    assert "reports.read" not in runner.invoke(args=["scopes", "list"]).output
    assert [e["event"] for e in audit_rows(app)] == ["scope.added", "scope.removed"]
    assert all(e["actor_kind"] == "admin" for e in audit_rows(app))


@pytest.mark.parametrize("name", ["", "has space", "x" * 101, "semi;colon", "a/b"])
def test_scopes_add_refuses_bad_names(app, runner, name):
    r = runner.invoke(args=["scopes", "add", name])
    # 2 is click's usage error; a crash would exit 1 with a traceback instead of this message
    assert r.exit_code == 2, r.output
    assert "Error: Invalid value for NAME: A scope name is 1-100 letters, digits and . _ : - only." in r.output
    with app.app_context():
        assert db.session.execute(db.select(Scope.name).order_by(Scope.position)).scalars().all() == [
            "api.read", "api.write"]
    assert audit_rows(app) == []


def test_remove_of_an_unknown_scope_fails(runner):
    r = runner.invoke(args=["scopes", "remove", "nope"])
    assert r.exit_code != 0 and "no scope named nope" in r.output


def test_a_scope_held_by_a_live_credential_is_disabled_not_removed(app, client, runner):
    reg = client.post("/agent/auth", json=ANON).get_json()
    r = runner.invoke(args=["scopes", "remove", "api.read"])
    assert r.exit_code == 0 and "disabled" in r.output
    with app.app_context():
        row = db.session.execute(db.select(Scope).where(Scope.name == "api.read")).scalar_one()
        assert row.enabled is False
    assert "api.read\tpre-claim,post-claim,disabled" in runner.invoke(args=["scopes", "list"]).output
    assert client.get("/.well-known/oauth-protected-resource").get_json()["scopes_supported"] == ["api.write"]
    assert audit_rows(app, "scope.disabled")
    # the key it was granted to still answers
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]}).status_code == 200


def test_like_wildcards_in_a_scope_name_do_not_match_other_scopes(app, client, runner):
    """api_read is not api.read: '_' must not act as a LIKE wildcard."""
    from authmd.models import Credential
    client.post("/agent/auth", json=ANON)
    with app.app_context():  # a live credential holding "api.read api.write"
        db.session.execute(db.update(Credential).values(scopes="api.read api.write"))
        db.session.commit()
    runner.invoke(args=["scopes", "add", "api_read"])
    r = runner.invoke(args=["scopes", "remove", "api_read"])
    assert "removed api_read" in r.output


def test_outbox_list_and_show(app, client, runner):
    from tests.fixtures.flows import email_body
    assert client.post("/agent/auth", json=email_body("box@example.com")).status_code == 200
    r = runner.invoke(args=["outbox", "list"])
    assert r.exit_code == 0 and "box@example.com" in r.output
    with app.app_context():
        mid = db.session.execute(db.select(OutboxMail.id)).scalar_one()
    shown = runner.invoke(args=["outbox", "show", str(mid)])
    assert shown.exit_code == 0
    assert "To: box@example.com" in shown.output and "/agent/auth/claim/view?token=cvt_" in shown.output
    missing = runner.invoke(args=["outbox", "show", "99999"])
    assert missing.exit_code != 0 and "no message" in missing.output


def test_the_embedded_default_flow_works_through_the_outbox(app, client, runner):
    """With no mail server, the claim link is read from the outbox and the whole claim works."""
    import re
    from tests.fixtures.flows import ClientTransport, Person, code_on
    reg = client.post("/agent/auth", json=ANON).get_json()
    assert client.post("/agent/auth/claim", json={"claim_token": reg["claim_token"],
                                                  "email": "outbox@example.com"}).status_code == 200
    with app.app_context():
        mid = db.session.execute(db.select(OutboxMail.id)).scalar_one()
    text = runner.invoke(args=["outbox", "show", str(mid)]).output
    path = re.search(r"http://localhost:8000(/agent/auth/claim/view\?token=\S+)", text).group(1)
    browser = ClientTransport(app)
    page = browser.get(path)
    shown = browser.post("/agent/auth/claim/view", data={**Person.form(page.text), "action": "reveal"})
    code = code_on(shown.text)
    done = client.post("/agent/auth/claim/complete", json={"claim_token": reg["claim_token"], "otp": code})
    assert done.status_code == 200


def test_the_command_line_entry_point_works(tmp_path):
    """`flask --app app ...` in a subprocess, as an operator runs it, on a fresh SQLite database."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "AUTHMD_DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3", "AUTHMD_SECRET_KEY": "k"}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    for args in (["init-db"], ["scopes", "list"], ["expire"]):
        r = subprocess.run(flask + args, cwd=root, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    assert "api.write" in subprocess.run(flask + ["scopes", "list"], cwd=root, env=env, capture_output=True,
                                         text=True, timeout=60).stdout
