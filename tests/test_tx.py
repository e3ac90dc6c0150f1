"""One commit per request: a refused request leaves behind exactly what the domain kept for it (authmd.tx)."""
from authmd import audit, tx
from authmd.extensions import csrf, db
from authmd.models import AuditEvent
from authmd.util import ProtocolError


def _events(app):
    with app.app_context():
        return [e for (e,) in db.session.execute(db.select(AuditEvent.event).order_by(AuditEvent.id))]


def _route(app, name, view):
    app.add_url_rule(f"/agent/test-tx/{name}", name, csrf.exempt(view), methods=["POST"])


def test_a_refusal_rolls_back_the_request_and_lands_what_was_kept(app):
    def refuse():
        audit.record("test.discarded", "system")          # the request's own work: rolled back
        tx.keep_on_error(audit.record, "test.kept", "system")
        raise ProtocolError(400, "invalid_request", "refused")
    _route(app, "refuse", refuse)
    r = app.test_client().post("/agent/test-tx/refuse")
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    assert _events(app) == ["test.kept"]


def test_commit_on_error_commits_the_refused_transaction(app):
    def refuse():
        audit.record("test.counted", "system")
        tx.commit_on_error()
        raise ProtocolError(401, "otp_invalid", "wrong")
    _route(app, "count", refuse)
    assert app.test_client().post("/agent/test-tx/count").status_code == 401
    assert _events(app) == ["test.counted"]


def test_a_fault_never_commits_the_half_done_transaction(app):
    def crash():
        audit.record("test.half_done", "system")
        tx.commit_on_error()
        tx.keep_on_error(audit.record, "test.kept", "system")
        raise RuntimeError("boom")
    _route(app, "crash", crash)
    r = app.test_client().post("/agent/test-tx/crash")
    assert r.status_code == 500 and r.get_json()["error"] == "server_error"
    assert _events(app) == ["test.kept"]


def test_a_request_that_succeeds_never_runs_the_kept_writes(app):
    def ok():
        tx.keep_on_error(audit.record, "test.kept", "system")
        audit.record("test.done", "system")
        tx.commit()
        return {"ok": True}
    _route(app, "ok", ok)
    assert app.test_client().post("/agent/test-tx/ok").status_code == 200
    assert _events(app) == ["test.done"]
