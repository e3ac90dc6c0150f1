"""Audit (spec §7): each event written with actor kind, IP, user agent, registration and user ids, in the same
transaction as its change; and no secret in any audit row or log line across whole flows."""
import json

import pytest

from authmd import audit
from authmd.extensions import db
from authmd.models import AuditEvent
from tests.conftest import count_rows
from tests.fixtures.flows import audit_rows, link_token


def wrong(code):
    return f"{(int(code) + 1) % 1_000_000:06d}"


def by_event(rows):
    out = {}
    for r in rows:
        out.setdefault(r["event"], []).append(r)
    return out


def test_every_flow_event_carries_actor_ip_agent_and_ids(app, agent, person, smtp, clock):
    # anonymous: registration.created, claim.requested, otp.generated, otp.failed, claim.confirmed
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "aud@example.com")
    link = person.link("aud@example.com")
    code = person.reveal(link)
    agent.complete(reg["claim_token"], wrong(code))
    assert agent.complete(reg["claim_token"], code).status_code == 200
    # claim.denied on a second registration; claim.locked and registration.expired on others
    reg2 = agent.register_anonymous()
    agent.claim(reg2["claim_token"], "deny@example.com")
    person.deny(person.link("deny@example.com"))
    reg3 = agent.register_anonymous()
    agent.claim(reg3["claim_token"], "lock@example.com")
    token3 = link_token(person.link("lock@example.com"))
    for _ in range(4):
        c = agent.post("/agent/auth/claim/attempt/challenge", {"claim_attempt_token": token3}).json()["challenge"]
        for _ in range(5):
            agent.complete(reg3["claim_token"], wrong(c))
    reg4 = agent.register_anonymous()
    clock.advance(hours=25)
    agent.api(reg4["credential"])

    events = by_event(audit_rows(app))
    for name in ("registration.created", "claim.requested", "otp.generated", "claim.confirmed",
                 "registration.expired", "otp.failed", "claim.locked", "claim.denied", "credential.issued"):
        assert name in events, name
    with app.app_context():
        from authmd.models import User
        uid = db.session.execute(db.select(User.id).where(User.email == "aud@example.com")).scalar_one()

    created = [e for e in events["registration.created"] if e["registration_id"] == reg["registration_id"]][0]
    assert created["actor_kind"] == "agent" and created["ip"] == "127.0.0.1"
    assert created["user_agent"] == "TestAgent/1.0 (pytest)"
    requested = [e for e in events["claim.requested"] if e["registration_id"] == reg["registration_id"]][0]
    assert requested["actor_kind"] == "agent" and requested["ip"] == "127.0.0.1"
    assert requested["data"]["email"] == "aud@example.com" and requested["data"]["claim_attempt_id"].startswith("cla_")
    generated = [e for e in events["otp.generated"] if e["registration_id"] == reg["registration_id"]][0]
    assert generated["actor_kind"] == "user" and generated["user_agent"] == "Mozilla/5.0 (TestBrowser)"
    assert generated["ip"] == "127.0.0.1"
    failed = [e for e in events["otp.failed"] if e["registration_id"] == reg["registration_id"]][0]
    assert failed["actor_kind"] == "agent" and failed["user_agent"] == "TestAgent/1.0 (pytest)"
    confirmed = events["claim.confirmed"][0]
    assert confirmed["actor_kind"] == "agent" and confirmed["ip"] == "127.0.0.1"
    assert confirmed["registration_id"] == reg["registration_id"] and confirmed["user_id"] == uid
    assert confirmed["data"]["claimed_by_user_id"] == uid
    assert confirmed["user_agent"] == "TestAgent/1.0 (pytest)"
    denied = events["claim.denied"][0]
    assert denied["registration_id"] == reg2["registration_id"] and denied["actor_kind"] == "user"
    assert denied["ip"] == "127.0.0.1" and denied["user_agent"] == "Mozilla/5.0 (TestBrowser)"
    locked = events["claim.locked"][0]
    assert locked["registration_id"] == reg3["registration_id"] and locked["actor_kind"] == "system"
    assert len(events["otp.failed"]) == 21
    expired = events["registration.expired"]
    assert reg4["registration_id"] in {e["registration_id"] for e in expired}
    assert all(e["actor_kind"] == "system" for e in expired)
    assert all(e["time"] for e in audit_rows(app))


def test_a_failed_request_writes_no_audit_row(app, agent):
    reg = agent.register_anonymous()
    n = len(audit_rows(app))
    assert agent.complete(reg["claim_token"], "123456").status_code == 400  # otp_not_generated
    assert agent.claim("clm_unknown", "x@example.com").status_code == 401
    assert len(audit_rows(app)) == n


def test_a_claim_mail_that_failed_is_recorded_after_its_request(app, agent, smtp):
    # the claim is committed before its mail leaves (no lock waits on a mail server): when the mail
    # fails, the log says so, and that is all the failed request leaves behind
    reg = agent.register_anonymous()
    n = len(audit_rows(app))
    smtp.refuse = True
    assert agent.claim(reg["claim_token"], "x@example.com").status_code == 503
    assert [e["event"] for e in audit_rows(app)[n:]] == ["claim.requested", "claim.mail_failed"]


def test_the_audit_guard_refuses_secret_looking_keys(app):
    with app.app_context():
        for key in ("credential", "claim_token", "otp", "code", "password", "link_token", "assertion"):
            with pytest.raises(ValueError):
                audit.record("x", **{key: "s3cret"})
        audit.record("x", credential_id=1, credential_type="api_key", credential_prefix="sk_abc")
        db.session.rollback()


SECRET_PREFIXES = ("sk_", "at_", "clm_", "cvt_")


def test_no_secret_in_any_audit_row_or_log_line(app, agent, person, smtp, clock, logs):
    secrets = []
    a = agent.register_anonymous()
    secrets += [a["credential"], a["claim_token"]]
    agent.claim(a["claim_token"], "sec@example.com")
    link = person.link("sec@example.com")
    secrets.append(link_token(link))
    c1 = person.reveal(link)
    agent.complete(a["claim_token"], wrong(c1))
    c2 = agent.post("/agent/auth/claim/attempt/challenge", {"claim_attempt_token": link_token(link)}).json()
    secrets += [c1, wrong(c1), c2["challenge"]]
    assert agent.complete(a["claim_token"], c2["challenge"]).status_code == 200
    agent.api(a["credential"], "POST")
    e = agent.register_email("sec2@example.com", "access_token")
    secrets.append(e["claim_token"])
    link2 = person.link("sec2@example.com")
    secrets.append(link_token(link2))
    code = person.reveal(link2)
    secrets.append(code)
    done = agent.complete(e["claim_token"], code).json()
    secrets.append(done["credential"])
    agent.api(done["credential"])
    agent.api("sk_not_a_real_key_but_still_secret")
    secrets.append("sk_not_a_real_key_but_still_secret")
    person.open("/agent/auth/claim/view?token=cvt_unknown_but_secret")
    secrets.append("cvt_unknown_but_secret")
    clock.advance(days=2)
    agent.api(a["credential"])

    with app.app_context():
        rows = db.session.execute(db.select(AuditEvent)).scalars().all()
        dumped = json.dumps([audit.as_dict(r) for r in rows])
    assert len(rows) > 10
    log_text = "\n".join(r.getMessage() for r in logs.records) + logs.text
    assert logs.records, "the flow logged nothing: the log capture is broken"
    for s in secrets:
        assert s not in dumped, f"secret {s[:6]}… in the audit table"
        assert s not in log_text, f"secret {s[:6]}… in a log line"
    for p in SECRET_PREFIXES:
        assert p not in log_text.replace("sk_abc", "")


def test_no_secret_in_any_other_table(app, agent, person, smtp):
    """Tokens, credentials and codes are stored only as digests anywhere in the database."""
    a = agent.register_anonymous()
    agent.claim(a["claim_token"], "db@example.com")
    link = person.link("db@example.com")
    code = person.reveal(link)
    agent.complete(a["claim_token"], code)
    secrets = [a["credential"], a["claim_token"], link_token(link)]
    with app.app_context():
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(db.select(table)).all():
                text = " ".join(str(v) for v in row)
                for s in secrets:
                    assert s not in text, f"{table.name} holds a secret"
                if table.name != "audit_events":
                    assert code not in text or table.name == "outbox"
    assert count_rows(app)["outbox"] == 0  # SMTP was configured: nothing held


def test_the_audit_room_reads_no_request(app):
    """ip and user_agent come from the caller only: inside a request, a row built without them has none
    (the view passes them; the CLI and the expiry job have none to pass)."""
    with app.test_request_context("/x", environ_base={"REMOTE_ADDR": "10.1.1.1", "HTTP_USER_AGENT": "Sneaky/1"}):
        row = audit.values("scope.added", "admin", scope="x")
        assert row["ip"] is None and row["user_agent"] is None
        row = audit.values("scope.added", "admin", scope="x", ip="10.2.2.2", user_agent="Agent\n/1")
        assert row["ip"] == "10.2.2.2" and row["user_agent"] == "Agent/1"
    assert not hasattr(audit, "request")


CONSOLE_ORIGIN = {"REMOTE_ADDR": "10.3.3.3", "HTTP_USER_AGENT": "AdminBrowser/2"}


def test_console_actions_record_who_sent_them(app, admin_client):
    """The console's rows carry the request's address and User-Agent, passed by the view (the claim page's
    and the agent endpoints' rows: test_every_flow_event_carries_actor_ip_agent_and_ids)."""
    from tests.fixtures.console import csrf_token
    agent = app.test_client()
    regs = [agent.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()]
    html = admin_client.get(f"/console/revoke?kind=registration&target={regs[0]['registration_id']}").get_data(
        as_text=True)
    r = admin_client.post("/console/revoke", data={"csrf_token": csrf_token(html), "kind": "registration",
                                                   "target": regs[0]["registration_id"]}, environ_base=CONSOLE_ORIGIN)
    assert r.status_code == 302
    html = admin_client.get("/console/scopes").get_data(as_text=True)
    admin_client.post("/console/scopes", data={"csrf_token": csrf_token(html), "name": "files.read",
                                               "description": "Read files"}, environ_base=CONSOLE_ORIGIN)
    events = by_event(audit_rows(app))
    revoked = [e for e in events["registration.revoked"] if e["registration_id"] == regs[0]["registration_id"]]
    assert revoked and all(e["ip"] == "10.3.3.3" and e["user_agent"] == "AdminBrowser/2" for e in revoked)
    assert [(e["ip"], e["user_agent"]) for e in events["scope.added"]] == [("10.3.3.3", "AdminBrowser/2")]
    login = events["admin.login"][-1]
    assert login["ip"] == "127.0.0.1"  # the test client's default address, passed by the sign-in view
