"""Operations CLI: export-audit streams events; expire purges spent one-time data and expires registrations."""
import csv
import io
import json
from datetime import datetime, timedelta

from authmd import audit
from authmd.extensions import db
from authmd.models import Credential, LoginLink, Registration, SeenJti


def add_events(app, when, n, event="registration.created"):
    with app.app_context():
        app.config["CLOCK"].frozen = when
        for i in range(n):
            audit.record(event, "agent", registration_id=f"reg_{i}", ip="10.0.0.1", scopes=["api.read"])
        db.session.commit()
        app.config["CLOCK"].frozen = None


def test_export_audit_jsonl_honours_since_and_until(app, runner):
    add_events(app, datetime(2026, 1, 1, 12), 3)
    add_events(app, datetime(2026, 2, 1, 12), 2, event="claim.requested")
    add_events(app, datetime(2026, 3, 1, 12), 1)
    result = runner.invoke(args=["export-audit", "--since", "2026-01-15", "--until", "2026-02-15T00:00:00Z"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["event"] for x in lines] == ["claim.requested", "claim.requested"]
    assert lines[0]["time"] == "2026-02-01T12:00:00.000Z" and lines[0]["data"] == {"scopes": ["api.read"]}
    assert "exported 2 event(s)" in result.stderr
    every = runner.invoke(args=["export-audit", "--since", "2025-12-31T23:00:00-02:00"])
    assert [json.loads(x)["time"][:7] for x in every.stdout.splitlines()] == ["2026-01"] * 3 + ["2026-02"] * 2 + ["2026-03"]


def test_export_audit_streams_in_batches_and_writes_csv(app, runner, monkeypatch):
    from authmd import ops_cli
    monkeypatch.setattr(ops_cli, "BATCH", 4)  # many batches over a small table, keyset boundaries included
    add_events(app, datetime(2026, 1, 1), 10)
    result = runner.invoke(args=["export-audit", "--since", "2026-01-01", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
    assert json.loads(rows[0]["data"]) == {"scopes": ["api.read"]} and rows[0]["user_id"] == ""


def test_export_audit_rejects_a_bad_date(runner):
    result = runner.invoke(args=["export-audit", "--since", "yesterday"])
    assert result.exit_code != 0 and "ISO 8601" in result.output


def test_expire_purges_spent_data_and_expires_unclaimed_registrations(app, client, runner, clock):
    key = client.post("/agent/auth", json={"type": "anonymous"}).get_json()["credential"]
    now = clock()
    with app.app_context():
        db.session.add_all([
            SeenJti(iss="https://p.example", jti="old", expires_at=now - timedelta(minutes=1)),
            SeenJti(iss="https://p.example", jti="live", expires_at=now + timedelta(hours=26)),
            LoginLink(email="a@example.com", digest="d" * 64, created_at=now, expires_at=now - timedelta(minutes=1)),
            LoginLink(email="a@example.com", digest="e" * 64, created_at=now, expires_at=now + timedelta(hours=26)),
        ])
        db.session.commit()
    clock.advance(hours=25)
    result = runner.invoke(args=["expire"])
    assert result.exit_code == 0, result.output
    assert "expired 1 registration(s)" in result.output
    assert "1 seen jti(s) purged" in result.output and "1 sign-in link(s) purged" in result.output
    with app.app_context():
        assert db.session.execute(db.select(Registration.status)).scalar_one() == "expired"
        assert db.session.execute(db.select(Credential.revoked_at)).scalar_one() is not None
        assert db.session.execute(db.select(SeenJti.jti)).scalars().all() == ["live"]
        assert db.session.execute(db.select(LoginLink.digest)).scalars().all() == ["e" * 64]
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + key}).status_code == 401
    again = runner.invoke(args=["expire"])
    assert "expired 0 registration(s)" in again.output
