"""Mail faults: delivery happens after the commit, inside one deadline, and a failure leaves nothing usable.

Real SMTP servers on loopback: one that accepts and never answers, one that trickles an endless greeting a
byte at a time (tests/fixtures/smtp.py FaultySMTP), and aiosmtpd refusing RCPT (the `smtp` fixture). The
deadline tests measure the answer's time because that is the behaviour under test: a slow mail server must
cost a request MAIL_DEADLINE, never the worker's life; the slack is generous.
"""
import threading
import time

import pytest
import requests

from authmd.extensions import db
from authmd.models import ClaimAttempt, Credential, LoginLink, OutboxMail, Registration
from tests.conftest import _wipe
from authmd.util import utcnow
from tests.fixtures.flows import ANON, Agent, ClientTransport, audit_rows, email_body, set_settings

DEADLINE = 2
SLACK = 4  # far below the old per-operation timeout (10 s), which a trickle never even reached


def _faulty_app(make_app, server, **extra):
    app = make_app(MAIL_SERVER=server.host, MAIL_PORT=server.port, MAIL_DEADLINE=DEADLINE, **extra)
    _wipe(app)
    return app


def _timed(fn, *args):
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


def _assert_email_unavailable(r):
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"] == "email_unavailable" and r.json()["message"]
    assert int(r.headers["Retry-After"]) > 0


def _rows(app, model, *conditions):
    with app.app_context():
        return list(db.session.execute(db.select(model).where(*conditions)).scalars())


@pytest.mark.parametrize("fault", ["silent_smtp", "trickling_smtp"])
def test_an_email_registration_against_a_stuck_mail_server_answers_503_within_the_deadline(make_app, request,
                                                                                            fault):
    server = request.getfixturevalue(fault)
    app = _faulty_app(make_app, server)
    agent = Agent(ClientTransport(app))
    r, took = _timed(agent.post, "/agent/auth", email_body("stuck@example.com"))
    _assert_email_unavailable(r)
    assert took < DEADLINE + SLACK
    assert server.connected.is_set() and server.hung_up.wait(5)  # it talked to the server and hung up
    # nothing usable: the registration is ended, its one attempt failed, no credential, no held mail
    [reg] = _rows(app, Registration)
    assert reg.status == "expired" and reg.ended_at is not None
    assert [a.status for a in _rows(app, ClaimAttempt)] == ["failed"]
    assert _rows(app, Credential) == [] and _rows(app, OutboxMail) == []
    events = [e["event"] for e in audit_rows(app)]
    assert events == ["registration.created", "claim.requested", "claim.mail_failed", "registration.expired"]
    assert audit_rows(app, "registration.expired")[0]["data"]["reason"] == "claim mail not delivered"


def test_a_claim_against_a_trickling_mail_server_answers_503_within_the_deadline_and_can_be_retried(
        make_app, trickling_smtp):
    app = _faulty_app(make_app, trickling_smtp)
    set_settings(app, claim_max_attempts_per_hour=1)
    agent = Agent(ClientTransport(app))
    reg = agent.register_anonymous()
    for _ in range(2):  # the failed attempt does not use up the one-an-hour allowance
        r, took = _timed(agent.claim, reg["claim_token"], "sam@example.com")
        _assert_email_unavailable(r)
        assert took < DEADLINE + SLACK
    assert [a.status for a in _rows(app, ClaimAttempt)] == ["failed", "failed"]
    [row] = _rows(app, Registration)
    assert row.status == "pending"  # the anonymous registration is untouched: its key still works
    assert agent.api(reg["credential"]).status_code == 200


def test_after_a_refused_claim_mail_the_claim_can_be_retried_and_does_not_count_toward_the_cap(app, agent, person,
                                                                                               smtp):
    set_settings(app, claim_max_attempts_per_hour=1)
    reg = agent.register_anonymous()
    smtp.refuse = True
    for _ in range(3):
        _assert_email_unavailable(agent.claim(reg["claim_token"], "sam@example.com"))
    smtp.refuse = False
    ok = agent.claim(reg["claim_token"], "sam@example.com")
    assert ok.status_code == 200 and len(smtp.to("sam@example.com")) == 1
    again = agent.claim(reg["claim_token"], "sam@example.com")  # delivered: the repeat echoes the same attempt
    assert again.status_code == 200 and again.json()["claim_attempt_id"] == ok.json()["claim_attempt_id"]
    assert len(smtp.to("sam@example.com")) == 1
    other = agent.claim(reg["claim_token"], "other@example.com")  # a new mail: now the cap counts
    assert other.status_code == 429 and other.json()["error"] == "rate_limited"
    assert agent.complete(reg["claim_token"], person.reveal(person.link("sam@example.com"))).status_code == 200


def test_a_refused_claim_mail_reopens_the_link_it_would_have_replaced(app, agent, person, smtp):
    reg = agent.register_anonymous()
    first = agent.claim(reg["claim_token"], "ann@example.com")
    assert first.status_code == 200
    link = person.link("ann@example.com")
    smtp.refuse = True
    _assert_email_unavailable(agent.claim(reg["claim_token"], "bob@example.com"))
    smtp.refuse = False
    assert person.open(link).status_code == 200  # as if the refused request never happened
    again = agent.claim(reg["claim_token"], "ann@example.com")
    assert again.json()["claim_attempt_id"] == first.json()["claim_attempt_id"]
    assert agent.complete(reg["claim_token"], person.reveal(link)).status_code == 200


def test_the_portal_withdraws_a_sign_in_link_whose_mail_failed(app, smtp):
    import re
    client = app.test_client()

    def ask():
        page = client.get("/portal/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        return client.post("/portal/login", data={"csrf_token": token, "email": "ada@example.com"})

    smtp.refuse = True
    for _ in range(6):  # more than the five links a window allows: failed ones do not count
        r = ask()
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert "field-error" in r.get_data(as_text=True)
    assert _rows(app, LoginLink) == []
    smtp.refuse = False
    assert ask().status_code == 200 and len(smtp.to("ada@example.com")) == 1
    assert len(_rows(app, LoginLink)) == 1


def test_mail_leaves_only_after_its_transaction_committed(app, smtp):
    from authmd import mail
    with app.test_request_context():
        mail.queue("rolled@example.com", "s", "t")
        db.session.add(OutboxMail(created_at=utcnow(), to_addr="x", subject="x", body_text="x"))
        db.session.flush()
        db.session.rollback()  # the transaction that queued it is gone: so is the mail
        db.session.add(OutboxMail(created_at=utcnow(), to_addr="y", subject="y", body_text="y"))
        db.session.commit()
        mail.deliver_queued()
        mail.queue("kept@example.com", "s", "t")  # a SAVEPOINT rolled back does not drop it...
        db.session.add(OutboxMail(created_at=utcnow(), to_addr="k", subject="k", body_text="k"))
        with pytest.raises(ZeroDivisionError), db.session.begin_nested():
            db.session.add(OutboxMail(created_at=utcnow(), to_addr="n", subject="n", body_text="n"))
            db.session.flush()
            1 / 0
        db.session.commit()  # ... its transaction committed: it goes
        mail.deliver_queued()
        mail.queue("early@example.com", "s", "t")
        db.session.add(OutboxMail(created_at=utcnow(), to_addr="z", subject="z", body_text="z"))
        db.session.flush()
        with pytest.raises(RuntimeError):  # a view that forgot to commit first
            mail.deliver_queued()
        db.session.rollback()
    assert [m["To"] for m in smtp.messages] == ["kept@example.com"]


def test_a_stuck_mail_server_holds_up_no_other_registration(app, gunicorn_server, schema, trickling_smtp):
    """Under gunicorn with two workers: while one worker waits on a mail server that trickles its greeting,
    the other registers agents (on SQLite the write lock is free: mail goes out after the commit), and the
    stuck request answers JSON 503 within the deadline instead of being killed with the worker."""
    server = gunicorn_server(schema, workers=2, AUTHMD_MAIL_SERVER=trickling_smtp.host,
                             AUTHMD_MAIL_PORT=trickling_smtp.port, AUTHMD_MAIL_DEADLINE=3)
    for _ in range(4):  # both workers have started their app and opened their database connections
        assert requests.post(server.url + "/agent/auth", json=ANON, timeout=10).status_code == 200
    stuck = {}

    def register_by_email():
        start = time.monotonic()
        try:
            stuck["answer"] = requests.post(server.url + "/agent/auth", json=email_body("slow@example.com"),
                                            timeout=3 + SLACK)
        except requests.RequestException as exc:  # the old code: the worker hung until gunicorn killed it
            stuck["answer"] = exc
        stuck["took"] = time.monotonic() - start

    thread = threading.Thread(target=register_by_email)
    thread.start()
    assert trickling_smtp.connected.wait(10)  # the email registration is in its SMTP conversation now
    others = [requests.post(server.url + "/agent/auth", json=ANON, timeout=3 + SLACK) for _ in range(3)]
    still_stuck = thread.is_alive() and not trickling_smtp.hung_up.is_set()
    thread.join(20)
    assert all(r.status_code == 200 for r in others)
    assert still_stuck, "the other registrations waited for the stuck mail server"
    answer = stuck["answer"]
    assert isinstance(answer, requests.Response), answer
    _assert_email_unavailable(answer)
    assert stuck["took"] < 3 + SLACK
    with app.app_context():
        reg = db.session.execute(db.select(Registration).where(Registration.type == "email-verification")).scalar()
        assert reg.status == "expired"


def test_outbox_mode_holds_the_mail_in_the_request_transaction(app, client):
    r = client.post("/agent/auth", json=email_body("held@example.com"))
    assert r.status_code == 200
    [row] = _rows(app, OutboxMail)
    assert row.to_addr == "held@example.com" and "cvt_" in row.body_text
    [attempt] = _rows(app, ClaimAttempt)
    assert attempt.delivered and attempt.status == "initiated"

