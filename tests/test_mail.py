"""The claim email (spec §3.1), delivered over real SMTP: who asks, for which address, until when, how to refuse."""
from datetime import datetime

from authmd.extensions import db
from authmd.models import OutboxMail
from tests.fixtures.flows import set_settings


def test_the_claim_mail_names_agent_address_expiry_and_how_to_refuse(app, agent, smtp, clock):
    clock.frozen = datetime(2026, 5, 20, 9, 30, 0)
    set_settings(app, service_name="Acme API")
    reg = agent.register_anonymous()
    answer = agent.claim(reg["claim_token"], "Zoe@Example.com").json()
    [msg] = smtp.to("zoe@example.com")
    assert msg["To"] == "zoe@example.com"
    assert msg["From"] == "authmd <no-reply@localhost>"
    assert "Acme API" in msg["Subject"] and "zoe@example.com" in msg["Subject"]
    assert msg.is_multipart() and msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    for body in (text, html):
        assert "TestAgent/1.0 (pytest)" in body and "self-reported" in body  # the requesting agent, as it says
        assert "127.0.0.1" in body  # from where
        assert "2026-05-20T09:30:00.000Z" in body  # when
        assert "zoe@example.com" in body
        assert answer["expires_at"] == "2026-05-20T09:40:00.000Z" and answer["expires_at"] in body
        assert "wasn't you" in body or "wasn&#39;t you" in body  # how to refuse
        assert "This wasn" in body
        assert "/agent/auth/claim/view?token=cvt_" in body
        assert "api.read, api.write" in body
    assert text.count("cvt_") == 1
    assert reg["claim_token"] not in text and reg["credential"] not in text


def test_the_sender_comes_from_config(make_app, smtp):
    app = make_app(MAIL_DEFAULT_SENDER="Acme <auth@acme.example>")
    from tests.conftest import _wipe
    _wipe(app)
    c = app.test_client()
    body = {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "s@example.com",
            "requested_credential_type": "api_key"}
    assert c.post("/agent/auth", json=body).status_code == 200
    assert smtp.to("s@example.com")[0]["From"] == "Acme <auth@acme.example>"


def test_html_in_the_user_agent_is_escaped_in_the_html_mail(app, smtp, http):
    from tests.fixtures.flows import Agent
    evil = Agent(http, user_agent='<script>alert(1)</script><a href="https://evil.example">x</a>')
    reg = evil.register_anonymous()
    evil.claim(reg["claim_token"], "esc@example.com")
    html = smtp.to("esc@example.com")[0].get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="https://evil.example"' not in html


def test_without_a_mail_server_the_message_goes_to_the_outbox_not_the_log(app, client, logs):
    body = {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "o@example.com",
            "requested_credential_type": "api_key"}
    assert client.post("/agent/auth", json=body).status_code == 200
    with app.app_context():
        [row] = db.session.execute(db.select(OutboxMail)).scalars().all()
        assert row.to_addr == "o@example.com" and "cvt_" in row.body_text and "cvt_" in row.body_html
    assert "outbox" in logs.text and "cvt_" not in logs.text


def test_an_unreachable_mail_server_is_email_unavailable(make_app):
    from tests.fixtures.smtp import free_port
    from tests.conftest import _wipe
    from authmd.models import ClaimAttempt, Credential, Registration
    app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), MAIL_DEADLINE=2)
    _wipe(app)
    body = {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "u@example.com",
            "requested_credential_type": "api_key"}
    r = app.test_client().post("/agent/auth", json=body)
    assert r.status_code == 503 and r.get_json()["error"] == "email_unavailable"
    assert r.headers["Retry-After"] == "60"
    with app.app_context():  # nothing usable is left: the registration ended, its attempt failed
        assert [reg.status for reg in db.session.execute(db.select(Registration)).scalars()] == ["expired"]
        assert [a.status for a in db.session.execute(db.select(ClaimAttempt)).scalars()] == ["failed"]
        assert db.session.execute(db.select(Credential)).first() is None
