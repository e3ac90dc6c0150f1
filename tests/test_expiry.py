"""Expiry (spec §2.1): unclaimed registrations end at their deadline, lazily on touch and by `flask expire`;
the anonymous key is revoked and registration.expired is recorded exactly once. Time moves by the clock."""
from authmd import lifecycle
from authmd.extensions import db
from authmd.models import ClaimAttempt, Credential, Registration
from tests.fixtures.flows import ANON, audit_rows


def register(client):
    return client.post("/agent/auth", json=ANON).get_json()


def state(app, reg_id):
    with app.app_context():
        reg = db.session.get(Registration, reg_id)
        cred = db.session.execute(db.select(Credential).where(Credential.registration_id == reg_id)).scalar()
        return reg.status, cred.revoked_at if cred else None


def test_just_before_the_deadline_everything_works(app, client, clock):
    reg = register(client)
    clock.advance(hours=23, minutes=59)
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]}).status_code == 200
    assert state(app, reg["registration_id"]) == ("pending", None)


def test_an_api_call_past_the_deadline_expires_lazily(app, client, clock):
    reg = register(client)
    clock.advance(hours=24, seconds=1)
    auth = {"Authorization": "Bearer " + reg["credential"]}
    r = client.get("/api/resource", headers=auth)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"
    assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    status, revoked = state(app, reg["registration_id"])
    assert status == "expired" and revoked is not None
    # touched again: still 401, still one event
    assert client.get("/api/resource", headers=auth).status_code == 401
    events = audit_rows(app, "registration.expired")
    assert len(events) == 1
    assert events[0]["registration_id"] == reg["registration_id"] and events[0]["actor_kind"] == "system"
    assert events[0]["data"]["revoked_count"] == 1


def test_claim_past_the_deadline_is_410_and_expires_it(app, client, clock):
    reg = register(client)
    clock.advance(hours=25)
    body = {"claim_token": reg["claim_token"], "email": "a@example.com"}
    for _ in range(2):
        r = client.post("/agent/auth/claim", json=body)
        assert r.status_code == 410 and r.get_json()["error"] == "claim_expired"
    assert state(app, reg["registration_id"])[0] == "expired"
    assert len(audit_rows(app, "registration.expired")) == 1


def test_the_expire_command_ends_only_overdue_registrations(app, client, runner, clock):
    old = register(client)
    clock.advance(hours=12)
    young = register(client)
    clock.advance(hours=12, seconds=1)
    result = runner.invoke(args=["expire"])
    assert result.exit_code == 0, result.output
    assert "expired 1 registration" in result.output
    assert state(app, old["registration_id"])[0] == "expired"
    assert state(app, young["registration_id"]) == ("pending", None)
    again = runner.invoke(args=["expire"])
    assert "expired 0 registration" in again.output
    # a touch after the command does not record it twice
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + old["credential"]}).status_code == 401
    assert [e["registration_id"] for e in audit_rows(app, "registration.expired")] == [old["registration_id"]]
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + young["credential"]}).status_code == 200


def test_claimed_registrations_never_expire(app, client, runner, clock):
    reg = register(client)
    with app.app_context():
        db.session.execute(db.update(Registration).values(status="claimed"))
        db.session.commit()
    clock.advance(days=30)
    result = runner.invoke(args=["expire"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("expired 0 registration(s)")
    assert state(app, reg["registration_id"]) == ("claimed", None)
    assert audit_rows(app, "registration.expired") == []


def test_expiring_twice_records_once(app, client, clock):
    reg = register(client)
    clock.advance(days=2)
    with app.app_context():
        row = db.session.get(Registration, reg["registration_id"])
        assert lifecycle.expire_registration(row) is True
        assert lifecycle.expire_registration(row) is False
        db.session.commit()
        assert lifecycle.expire_due() == 0
    assert len(audit_rows(app, "registration.expired")) == 1


def test_expiry_closes_open_claim_attempts(app, client, runner, clock):
    from tests.fixtures.flows import ClientTransport, Agent
    agent = Agent(ClientTransport(app))
    reg = agent.register_anonymous()
    assert agent.claim(reg["claim_token"], "late@example.com").status_code == 200  # outbox: no mail server
    clock.advance(hours=24, seconds=1)
    result = runner.invoke(args=["expire"])
    assert result.exit_code == 0 and result.output.startswith("expired 1 registration(s)"), result.output
    with app.app_context():
        # superseded, not denied: nobody said "not me", the deadline passed (the claim page tells them apart)
        assert db.session.execute(db.select(ClaimAttempt.status)).scalars().all() == ["superseded"]
    r = agent.complete(reg["claim_token"], "123456")
    assert r.status_code == 410 and r.json()["error"] == "claim_expired"


def test_expire_handles_many_in_batches(app, client, clock):
    regs = [register(client) for _ in range(7)]
    clock.advance(days=1, seconds=1)
    with app.app_context():
        assert lifecycle.expire_due(batch=3) == 7
    assert len(audit_rows(app, "registration.expired")) == 7
    assert all(state(app, r["registration_id"])[0] == "expired" for r in regs)
