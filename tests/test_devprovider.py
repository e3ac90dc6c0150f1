"""The development provider: off by default; when on, a persisted key, a JWKS, trusted by init-db, and
CLI-minted ID-JAGs and logout tokens that walk the agent-verified flow end to end over real HTTP."""
import os
import socket
import stat
import threading

import pytest
import requests

from authmd.extensions import db
from authmd.models import TrustedIssuer


@pytest.fixture
def dev_app(app, make_app, tmp_path):
    """An app with the development provider on (the `app` fixture already wiped the database)."""
    return make_app(DEV_PROVIDER=True, DEV_PROVIDER_KEY_FILE=str(tmp_path / "dev-key.pem"))


@pytest.fixture
def dev_live(make_app, app, tmp_path):
    """The dev-provider app on a real loopback port whose ISSUER is its own URL."""
    from werkzeug.serving import make_server
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    url = f"http://127.0.0.1:{port}"
    application = make_app(DEV_PROVIDER=True, DEV_PROVIDER_KEY_FILE=str(tmp_path / "dev-key.pem"), ISSUER=url)
    server = make_server("127.0.0.1", port, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    application.url = url
    yield application
    server.shutdown()
    thread.join(timeout=5)


def test_off_by_default_nothing_is_served_and_commands_refuse(app, runner, client):
    assert client.get("/dev-provider/.well-known/jwks.json").status_code == 404
    for args in (["dev-provider", "id-jag", "--email", "a@example.com"], ["dev-provider", "logout-token", "--sub", "x"]):
        r = runner.invoke(args=args)
        assert r.exit_code != 0 and "development provider is off" in r.output and "AUTHMD_DEV_PROVIDER=1" in r.output


def test_commands_have_help(runner):
    for args in (["dev-provider"], ["dev-provider", "id-jag"], ["dev-provider", "logout-token"]):
        r = runner.invoke(args=args + ["--help"])
        assert r.exit_code == 0 and "Usage:" in r.output


def test_init_db_creates_the_key_and_trusts_the_provider_once(dev_app, tmp_path):
    runner = dev_app.test_cli_runner()
    key_file = tmp_path / "dev-key.pem"
    assert not key_file.exists()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    with dev_app.app_context():
        rows = list(db.session.execute(db.select(TrustedIssuer)).scalars())
        assert [r.issuer for r in rows] == ["http://localhost:8000/dev-provider"] and rows[0].enabled


def test_the_key_persists_across_app_instances(dev_app, make_app, tmp_path):
    client = dev_app.test_client()
    first = client.get("/dev-provider/.well-known/jwks.json")
    assert first.status_code == 200 and first.json["keys"][0]["kty"] == "EC"
    assert "d" not in first.json["keys"][0]
    again = make_app(DEV_PROVIDER=True, DEV_PROVIDER_KEY_FILE=str(tmp_path / "dev-key.pem")).test_client()
    assert again.get("/dev-provider/.well-known/jwks.json").json == first.json


def test_the_whole_flow_with_the_cli_and_plain_http(dev_live, register_id_jag):
    base = dev_live.url
    runner = dev_live.test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert base + "/dev-provider" in runner.invoke(args=["issuers", "list"]).output
    # the JWKS is served over HTTP and is what the tokens are signed with
    jwks = requests.get(base + "/dev-provider/.well-known/jwks.json", timeout=5).json()
    minted = runner.invoke(args=["dev-provider", "id-jag", "--email", "dev@example.com", "--sub", "dev-1"])
    assert minted.exit_code == 0
    token = minted.output.strip()
    from joserfc import jwt
    from joserfc.jwk import KeySet
    assert jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"]).claims["sub"] == "dev-1"

    reg = requests.post(base + "/agent/auth", timeout=10, json={
        "type": "identity_assertion", "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
        "assertion": token, "requested_credential_type": "access_token"})
    assert reg.status_code == 200, reg.text
    auth = {"Authorization": "Bearer " + reg.json()["credential"]}
    me = requests.get(base + "/api/resource", headers=auth, timeout=5).json()
    assert me["user"]["email"] == "dev@example.com" and me["credential"]["iss"] == base + "/dev-provider"

    logout = runner.invoke(args=["dev-provider", "logout-token", "--sub", "dev-1"]).output.strip()
    r = requests.post(base + "/agent/auth/revoke", data=logout, timeout=10,
                      headers={"Content-Type": "application/logout+jwt"})
    assert r.status_code == 200 and r.json() == {"revoked": 1}
    after = requests.get(base + "/api/resource", headers=auth, timeout=5)
    assert after.status_code == 401 and after.json()["error"] == "invalid_token"


def test_default_sub_is_the_email_and_aud_can_be_chosen(dev_app):
    runner = dev_app.test_cli_runner()
    token = runner.invoke(args=["dev-provider", "id-jag", "--email", "x@example.com", "--aud",
                                "http://localhost:8000/api/"]).output.strip()
    import base64
    import json
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == "x@example.com" and claims["aud"] == "http://localhost:8000/api/"
    assert claims["email_verified"] is True and claims["exp"] - claims["iat"] == 300
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["typ"] == "oauth-id-jag+jwt" and header["alg"] == "ES256"


def test_its_keys_are_read_in_process_by_its_own_app_only(make_app, app, tmp_path, register_id_jag):
    # nothing listens at this ISSUER: a token verifies only when the keys come from the provider in-process
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    dev = make_app(DEV_PROVIDER=True, DEV_PROVIDER_KEY_FILE=str(tmp_path / "dev-key.pem"), ISSUER=url)
    runner = dev.test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    token = runner.invoke(args=["dev-provider", "id-jag", "--email", "dev@example.com"]).output.strip()
    assert register_id_jag(dev.test_client(), token).status_code == 200
    # an app without the provider (in a worker with nothing cached) fetches that URL like any other, and
    # finds nothing there
    from authmd.trust import jwks
    jwks.clear_cache()
    plain = make_app(ISSUER=url).test_client()
    token = runner.invoke(args=["dev-provider", "id-jag", "--email", "dev@example.com"]).output.strip()
    r = register_id_jag(plain, token)
    assert r.status_code == 400 and r.json["message"] == "The issuer's keys could not be fetched."


def test_the_trust_room_and_the_protocol_never_import_the_development_provider():
    import subprocess
    import sys
    code = ("import sys, authmd.trust.issuers, authmd.trust.jwks, authmd.trust.verify, authmd.idjag, authmd.users;"
            "print(sorted(m for m in sys.modules if m.startswith('authmd.devprovider')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"
