"""Races over real HTTP (threads against live_server, released together by a barrier): two completions of the
same claim, concurrent wrong guesses, concurrent code reveals and concurrent /claim calls."""
import threading

import requests

from authmd.extensions import db
from authmd.models import ClaimAttempt, Credential, Registration
from tests.fixtures.flows import audit_rows, link_token


def together(n, fn):
    """Run fn(i) in n threads released at the same instant; returns the results in order."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - report it as the result
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _post(base, path, body):
    return requests.post(base + path, json=body, timeout=30)


def test_two_concurrent_completions_exactly_one_wins(app, live_server, agent, person, smtp):
    base = live_server.url
    for round_ in range(4):
        reg = agent.register_email(f"race{round_}@example.com", "api_key")
        code = person.reveal(person.link(f"race{round_}@example.com"))
        body = {"claim_token": reg["claim_token"], "otp": code}
        results = together(2, lambda i: _post(base, "/agent/auth/claim/complete", body))
        assert all(isinstance(r, requests.Response) for r in results), results
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 409], [r.text for r in results]
        loser = [r for r in results if r.status_code == 409][0]
        assert loser.json()["error"] == "previously_claimed"
        with app.app_context():
            creds = db.session.execute(db.select(Credential).where(
                Credential.registration_id == reg["registration_id"])).scalars().all()
            assert len(creds) == 1  # one fresh credential, not two
    confirmed = audit_rows(app, "claim.confirmed")
    assert len(confirmed) == 4


def test_concurrent_completions_of_an_anonymous_claim(app, live_server, agent, person, smtp):
    base = live_server.url
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "anon-race@example.com")
    code = person.reveal(person.link("anon-race@example.com"))
    body = {"claim_token": reg["claim_token"], "otp": code}
    results = together(4, lambda i: _post(base, "/agent/auth/claim/complete", body))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409, 409, 409], [r.text for r in results]
    assert len(audit_rows(app, "claim.confirmed")) == 1


def test_concurrent_wrong_guesses_never_exceed_the_per_attempt_limit(app, live_server, agent, person, smtp):
    base = live_server.url
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "guess@example.com")
    code = person.reveal(person.link("guess@example.com"))
    guesses = [f"{(int(code) + 1 + i) % 1_000_000:06d}" for i in range(10)]
    results = together(10, lambda i: _post(base, "/agent/auth/claim/complete",
                                          {"claim_token": reg["claim_token"], "otp": guesses[i]}))
    assert all(r.status_code == 401 and r.json()["error"] == "otp_invalid" for r in results), \
        [getattr(r, "text", r) for r in results]
    assert len(audit_rows(app, "otp.failed")) == 5  # only five were really tried
    with app.app_context():
        assert db.session.execute(db.select(Registration.failed_otp_count)).scalar() == 5
    # and the right code is dead until a fresh one is revealed
    assert agent.complete(reg["claim_token"], code).status_code == 401


def test_concurrent_reveals_mint_at_most_five_codes(app, live_server, agent, person, smtp):
    base = live_server.url
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "mint@example.com")
    token = link_token(person.link("mint@example.com"))
    results = together(8, lambda i: _post(base, "/agent/auth/claim/attempt/challenge",
                                         {"claim_attempt_token": token}))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * 5 + [429] * 3, [r.text for r in results]
    with app.app_context():
        assert db.session.execute(db.select(ClaimAttempt.otp_minted_count)).scalar() == 5
    assert len(audit_rows(app, "otp.generated")) == 5


def test_concurrent_claim_requests_leave_one_open_attempt(app, live_server, agent, smtp):
    base = live_server.url
    reg = agent.register_anonymous()
    results = together(4, lambda i: _post(base, "/agent/auth/claim",
                                         {"claim_token": reg["claim_token"], "email": f"c{i}@example.com"}))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    with app.app_context():
        open_ = db.session.execute(db.select(ClaimAttempt).where(ClaimAttempt.status == "initiated")).scalars().all()
        assert len(open_) == 1


def test_concurrent_touches_of_an_overdue_registration_record_one_expiry(app, live_server, agent, clock):
    base = live_server.url
    reg = agent.register_anonymous()
    clock.advance(hours=24, seconds=1)
    auth = {"Authorization": "Bearer " + reg["credential"]}
    results = together(6, lambda i: requests.get(base + "/api/resource", headers=auth, timeout=30) if i % 2 else
                       _post(base, "/agent/auth/claim", {"claim_token": reg["claim_token"], "email": "t@example.com"}))
    assert all(isinstance(r, requests.Response) for r in results), results
    assert sorted(r.status_code for r in results) == [401, 401, 401, 410, 410, 410], [r.text for r in results]
    assert len(audit_rows(app, "registration.expired")) == 1
