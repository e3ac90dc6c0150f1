"""Provider revocation (§4): POST /agent/auth/revoke with a logout token, verified through the same trust
path and replay store; every credential of the subject stops working on the next call, on every instance."""
import json
import threading
import time
from datetime import datetime, timedelta

import pytest

from authmd.extensions import db
from authmd.models import AuditEvent, Credential, Delegation, Registration, TrustedIssuer
from tests.conftest import count_rows
from tests.fixtures.flows import audit_rows
from tests.fixtures.provider import LOGOUT_TYP, REVOKED_EVENT, trust

AUD = "http://localhost:8000"
BACKCHANNEL = "http://schemas.openid.net/event/backchannel-logout"


def _revoke(client, token, form=False):
    if form:
        return client.post("/agent/auth/revoke", data={"logout_token": token})
    return client.post("/agent/auth/revoke", data=token, content_type="application/logout+jwt")


def _err(resp, code):
    assert resp.status_code == 400 and resp.is_json and resp.json["error"] == code, resp.get_data(as_text=True)


def _get(client, cred):
    return client.get("/api/resource", headers={"Authorization": "Bearer " + cred})


def _register(client, register_id_jag, provider, wanted="access_token", **claims):
    r = register_id_jag(client, provider.id_jag(**claims), wanted)
    assert r.status_code == 200, r.json
    return r.json


@pytest.mark.parametrize("form", [False, True])
def test_logout_token_revokes_every_credential_of_the_subject_across_delegations(app, client, provider,
                                                                                 register_id_jag, form):
    trust(app, provider)
    a = _register(client, register_id_jag, provider, agent_context_id="c1")
    b = _register(client, register_id_jag, provider, "api_key")
    c = _register(client, register_id_jag, provider, aud=AUD + "/api/")
    other = _register(client, register_id_jag, provider, sub="someone-else", email="else@example.com")
    r = _revoke(client, provider.logout_token("user-123"), form=form)
    assert r.status_code == 200 and r.json == {"revoked": 3}
    assert r.headers["Cache-Control"] == "no-store"
    for x in (a, b, c):
        resp = _get(client, x["credential"])
        assert resp.status_code == 401 and resp.json["error"] == "invalid_token"
    assert _get(client, other["credential"]).status_code == 200
    with app.app_context():
        regs = {r.id: r.status for r in db.session.execute(db.select(Registration)).scalars()}
        assert regs[a["registration_id"]] == regs[c["registration_id"]] == "revoked"
        assert regs[other["registration_id"]] == "active"
        revoked = list(db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "registration.revoked"))
                       .scalars())
        assert {e.registration_id for e in revoked} == {a["registration_id"], c["registration_id"]}
        for e in revoked:
            assert (e.iss, e.sub, e.actor_kind) == (provider.issuer, "user-123", "provider")
            assert e.agent_platform == "TestAgent/1.0"
        assert {e.agent_context_id for e in revoked} == {"c1", None}


def test_revocation_is_seen_by_a_second_app_instance_without_restart(app, make_app, client, provider,
                                                                    register_id_jag):
    trust(app, provider)
    second = make_app().test_client()
    cred = _register(client, register_id_jag, provider)["credential"]
    assert _get(second, cred).status_code == 200
    assert _revoke(client, provider.logout_token("user-123")).json == {"revoked": 1}
    assert _get(second, cred).status_code == 401
    assert _get(client, cred).status_code == 401


def test_a_fresh_id_jag_after_revocation_reuses_the_registration(app, client, provider, register_id_jag):
    trust(app, provider)
    first = _register(client, register_id_jag, provider)
    assert _revoke(client, provider.logout_token("user-123")).json == {"revoked": 1}
    again = _register(client, register_id_jag, provider)
    assert again["registration_id"] == first["registration_id"]
    assert _get(client, again["credential"]).status_code == 200
    assert _get(client, first["credential"]).status_code == 401


def test_nothing_to_revoke_answers_zero(app, client, provider):
    trust(app, provider)
    assert _revoke(client, provider.logout_token("nobody")).json == {"revoked": 0}


def test_backchannel_logout_event_and_missing_exp_are_accepted(app, client, provider, register_id_jag):
    trust(app, provider)
    _register(client, register_id_jag, provider)
    token = provider.logout_token("user-123", events={BACKCHANNEL: {}}, exp=None)
    assert _revoke(client, token, form=True).json == {"revoked": 1}


def test_a_disabled_issuer_may_still_revoke(app, client, provider, register_id_jag):
    trust(app, provider)
    cred = _register(client, register_id_jag, provider)["credential"]
    with app.app_context():
        from authmd.models import TrustedIssuer
        db.session.execute(db.update(TrustedIssuer).values(enabled=False))
        db.session.commit()
    assert _revoke(client, provider.logout_token("user-123")).json == {"revoked": 1}
    assert _get(client, cred).status_code == 401


def test_each_revoked_delegation_gets_one_audit_row_carrying_the_subjects_total(app, client, provider,
                                                                                register_id_jag, clock):
    trust(app, provider)
    a = _register(client, register_id_jag, provider, agent_context_id="c1")
    _register(client, register_id_jag, provider, "api_key")  # the same delegation: a second credential
    c = _register(client, register_id_jag, provider, aud=AUD + "/api/", agent_platform="Other/2")
    clock.frozen = datetime.utcnow()
    r = client.post("/agent/auth/revoke", data=provider.logout_token("user-123"),
                    content_type="application/logout+jwt", headers={"User-Agent": "ProviderBot/2"})
    assert r.json == {"revoked": 3}
    with app.app_context():
        delegations = db.session.execute(db.select(Delegation)).scalars().all()
        assert [d.revoked_at for d in delegations] == [clock.frozen] * 2
        assert {c.revoked_at for c in db.session.execute(db.select(Credential)).scalars()} == {clock.frozen}
        regs = db.session.execute(db.select(Registration)).scalars().all()
        assert {(g.id, g.status, g.ended_at) for g in regs} == {
            (a["registration_id"], "revoked", clock.frozen), (c["registration_id"], "revoked", clock.frozen)}
        expected = sorted((d.registration_id, d.user_id, d.agent_platform, d.agent_context_id) for d in delegations)
    rows = audit_rows(app, "registration.revoked")
    assert sorted((e["registration_id"], e["user_id"], e["agent_platform"], e["agent_context_id"])
                  for e in rows) == expected
    assert {e["agent_platform"] for e in rows} == {"TestAgent/1.0", "Other/2"}
    for e in rows:
        assert (e["actor_kind"], e["actor_id"], e["iss"], e["sub"], e["ip"], e["user_agent"]) == (
            "provider", provider.issuer, provider.issuer, "user-123", "127.0.0.1", "ProviderBot/2")
        assert e["data"] == {"reason": "logout_token", "revoked_count": 3}


def test_nothing_to_revoke_is_still_audited_once_with_a_zero_count(app, client, provider):
    trust(app, provider)
    assert _revoke(client, provider.logout_token("nobody")).json == {"revoked": 0}
    [row] = audit_rows(app, "registration.revoked")
    assert {k: row[k] for k in ("actor_kind", "actor_id", "iss", "sub", "registration_id", "user_id",
                                "agent_platform", "agent_context_id", "data")} == {
        "actor_kind": "provider", "actor_id": provider.issuer, "iss": provider.issuer, "sub": "nobody",
        "registration_id": None, "user_id": None, "agent_platform": None, "agent_context_id": None,
        "data": {"reason": "logout_token", "revoked_count": 0}}


def test_only_live_credentials_are_revoked_and_counted(app, client, provider, register_id_jag):
    """An expired credential is left as it is and a revoked one keeps its first revocation time; neither
    is counted. A registration an admin already ended keeps its end."""
    trust(app, provider)
    for wanted in ("api_key", "access_token", "access_token"):
        _register(client, register_id_jag, provider, wanted)
    ended = _register(client, register_id_jag, provider, aud=AUD + "/api/")
    earlier = datetime(2020, 1, 1)
    with app.app_context():
        live, expired, revoked, other = db.session.execute(db.select(Credential).order_by(Credential.id)).scalars()
        expired.expires_at = datetime.utcnow() - timedelta(seconds=1)
        revoked.revoked_at = other.revoked_at = earlier
        db.session.execute(db.update(Registration).where(Registration.id == ended["registration_id"])
                           .values(status="revoked", ended_at=earlier))
        db.session.commit()
        ids = live.id, expired.id, revoked.id, other.id
    assert _revoke(client, provider.logout_token("user-123")).json == {"revoked": 1}
    with app.app_context():
        after = [db.session.get(Credential, i).revoked_at for i in ids]
        assert after[0] is not None and after[0] > earlier
        assert after[1:] == [None, earlier, earlier]
        assert db.session.get(Registration, ended["registration_id"]).ended_at == earlier
    assert [e["data"]["revoked_count"] for e in audit_rows(app, "registration.revoked")] == [1, 1]


def test_the_same_sub_at_another_issuer_keeps_its_credentials(app, client, provider, make_provider,
                                                              register_id_jag):
    other = make_provider("other")
    trust(app, provider)
    trust(app, other)
    mine = _register(client, register_id_jag, provider)
    theirs = _register(client, register_id_jag, other, email="o@example.com")  # sub "user-123" too
    assert _revoke(client, provider.logout_token("user-123")).json == {"revoked": 1}
    assert _get(client, mine["credential"]).status_code == 401
    assert _get(client, theirs["credential"]).status_code == 200
    with app.app_context():
        assert db.session.get(Registration, theirs["registration_id"]).status == "active"
        assert db.session.execute(db.select(Delegation.revoked_at).where(Delegation.iss == other.issuer)).scalar() \
            is None


def test_a_delegation_without_its_registration_is_still_revoked(app, client, provider, register_id_jag):
    trust(app, provider)
    cred = _register(client, register_id_jag, provider)["credential"]
    with app.app_context():
        db.session.execute(db.update(Delegation).values(registration_id=None))
        db.session.commit()
    assert _revoke(client, provider.logout_token("user-123")).json == {"revoked": 1}
    assert _get(client, cred).status_code == 401
    [row] = audit_rows(app, "registration.revoked")
    assert row["registration_id"] is None and row["data"]["revoked_count"] == 1


def _at_once(apps, tokens):
    """POST each token to its app instance in its own thread, released together; (status, revoked or error)."""
    results, barrier = [], threading.Barrier(len(apps))

    def send(application, token):
        client = application.test_client()
        barrier.wait()
        r = _revoke(client, token)
        results.append((r.status_code, r.json.get("revoked", r.json.get("error"))))

    threads = [threading.Thread(target=send, args=pair) for pair in zip(apps, tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_the_same_logout_token_sent_to_two_app_instances_at_once_revokes_once(app, make_app, client, provider,
                                                                            register_id_jag):
    trust(app, provider)
    _register(client, register_id_jag, provider)
    _register(client, register_id_jag, provider, "api_key")
    token = provider.logout_token("user-123")
    assert sorted(_at_once([app, make_app()], [token, token]), key=str) == [(200, 2), (400, "replay_detected")]
    assert len(audit_rows(app, "registration.revoked")) == 1


def test_logout_tokens_for_one_subject_at_once_count_each_credential_once(app, make_app, client, provider,
                                                                        register_id_jag):
    trust(app, provider)
    creds = [_register(client, register_id_jag, provider, wanted)["credential"] for wanted in ("access_token",
                                                                                                "api_key")]
    creds.append(_register(client, register_id_jag, provider, aud=AUD + "/api/")["credential"])
    results = _at_once([app, make_app(), make_app()], [provider.logout_token("user-123") for _ in range(3)])
    assert [s for s, _ in results] == [200] * 3
    assert sum(n for _, n in results) == 3
    for cred in creds:
        assert _get(client, cred).status_code == 401


# ------------------------------------------------------------------ §4 errors

def test_a_nul_in_the_logout_tokens_sub_or_jti_is_a_clear_400(app, client, provider, register_id_jag):
    # PostgreSQL refuses a NUL in a text parameter: a 400 JSON answer, not a 500, on both databases
    trust(app, provider)
    cred = _register(client, register_id_jag, provider)["credential"]
    _err(_revoke(client, provider.logout_token(sub="user\x00-123")), "invalid_request")
    _err(_revoke(client, provider.logout_token(jti="j\x00ti")), "invalid_request")
    assert _get(client, cred).status_code == 200
    rejected = audit_rows(app, "assertion.rejected")
    assert [(r["data"]["error"], r["sub"]) for r in rejected] == [("invalid_request", "user-123")] * 2


def test_replayed_logout_token_is_replay_detected(app, client, provider):
    trust(app, provider)
    token = provider.logout_token("user-123")
    assert _revoke(client, token).status_code == 200
    _err(_revoke(client, token), "replay_detected")
    _err(_revoke(client, token, form=True), "replay_detected")


def test_unknown_or_removed_issuer_is_invalid_issuer(app, client, provider, make_provider):
    stranger = make_provider("stranger")
    trust(app, provider)
    _err(_revoke(client, stranger.logout_token("user-123")), "invalid_issuer")


def test_bad_signature_and_foreign_key_are_invalid_signature(app, client, provider, make_provider):
    trust(app, provider)
    stranger = make_provider("stranger")
    _err(_revoke(client, provider.logout_token("user-123", key=stranger.keys[0])), "invalid_signature")
    head, payload, sig = provider.logout_token("user-123").split(".")
    _err(_revoke(client, ".".join([head, payload, sig[::-1]])), "invalid_signature")


@pytest.mark.parametrize("case", ["no_body", "wrong_type", "json_type", "not_jws", "id_jag_typ", "no_events",
                                  "other_event", "events_list", "nonce", "no_sub", "no_jti", "no_iat",
                                  "wrong_aud", "expired", "future_iat", "empty_form", "non_ascii"])
def test_malformed_logout_tokens_are_invalid_request(app, client, provider, case):
    trust(app, provider)
    now = int(time.time())
    if case == "no_body":
        r = client.post("/agent/auth/revoke", data="", content_type="application/logout+jwt")
    elif case == "wrong_type":
        r = client.post("/agent/auth/revoke", data=provider.logout_token(), content_type="text/plain")
    elif case == "json_type":
        r = client.post("/agent/auth/revoke", json={"logout_token": provider.logout_token()})
    elif case == "not_jws":
        r = _revoke(client, "not-a-token")
    elif case == "id_jag_typ":
        r = _revoke(client, provider.id_jag())
    elif case == "empty_form":
        r = client.post("/agent/auth/revoke", data={"other": "x"})
    elif case == "non_ascii":
        r = client.post("/agent/auth/revoke", data="é".encode("latin-1"), content_type="application/logout+jwt")
    else:
        claims = {"no_events": {"events": None}, "other_event": {"events": {"https://example.com/other": {}}},
                  "events_list": {"events": [REVOKED_EVENT]}, "nonce": {"nonce": "n-1"}, "no_sub": {"sub": None},
                  "no_jti": {"jti": None}, "no_iat": {"iat": None}, "wrong_aud": {"aud": "https://other.example"},
                  "expired": {"iat": now - 900, "exp": now - 600},
                  "future_iat": {"iat": now + 600, "exp": now + 900}}[case]
        sub = claims.pop("sub", "user-123")
        token = provider.logout_token(sub, **claims) if sub else provider.sign(
            {"iss": provider.issuer, "aud": AUD, "iat": now, "exp": now + 60, "jti": "j", "sid": "s",
             "events": {REVOKED_EVENT: {}}}, typ=LOGOUT_TYP)
        r = _revoke(client, token)
    _err(r, "invalid_request")


def test_revoke_is_csrf_exempt_and_rejections_are_audited_without_the_token(app, client, provider):
    trust(app, provider)
    token = provider.logout_token("user-123", nonce="x")
    _err(_revoke(client, token, form=True), "invalid_request")
    with app.app_context():
        ev = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "assertion.rejected")).scalar_one()
        assert ev.actor_kind == "provider" and ev.iss == provider.issuer
        assert json.loads(ev.data) == {"error": "invalid_request", "kind": "logout"}
        assert token not in (ev.data or "")


def test_a_failed_revocation_changes_nothing(app, client, provider, register_id_jag):
    trust(app, provider)
    cred = _register(client, register_id_jag, provider)["credential"]
    _err(_revoke(client, provider.logout_token("user-123", nonce="n")), "invalid_request")
    assert _get(client, cred).status_code == 200
    with app.app_context():
        assert db.session.execute(db.select(Delegation.revoked_at)).scalar() is None


def test_a_replayed_logout_token_changes_nothing(app, client, provider, register_id_jag):
    """The replay is refused before any write: the registration that came back after the first revocation
    stays alive, and only the assertion.rejected row is added."""
    trust(app, provider)
    token = provider.logout_token("user-123")
    _register(client, register_id_jag, provider)
    assert _revoke(client, token).json == {"revoked": 1}
    again = _register(client, register_id_jag, provider)
    before = count_rows(app)
    _err(_revoke(client, token), "replay_detected")
    assert count_rows(app) == dict(before, audit_events=before["audit_events"] + 1)
    assert [e["data"]["error"] for e in audit_rows(app, "assertion.rejected")] == ["replay_detected"]
    assert _get(client, again["credential"]).status_code == 200
    with app.app_context():
        assert db.session.get(Registration, again["registration_id"]).status == "active"
        assert db.session.execute(db.select(Delegation.revoked_at)).scalar() is None


def test_a_refused_logout_token_leaves_its_jti_unspent(app, client, provider):
    token = provider.logout_token("user-123")
    _err(_revoke(client, token), "invalid_issuer")
    trust(app, provider)
    assert _revoke(client, token).json == {"revoked": 0}


def _junk_lines(logs):
    return [r.getMessage() for r in logs.records if r.name == "authmd.audit" and "not written to the audit log" in
            r.getMessage()]


def test_junk_logout_tokens_write_no_audit_row_and_are_counted_in_the_log(app, client, provider, make_provider,
                                                                          clock, logs):
    """Anyone can post x.y.z by the thousand: a row each (with a 300-char User-Agent) contended for SQLite's
    one writer. A token that does not parse or names no issuer known here is counted in the log instead,
    one line a minute per worker with the count."""
    trust(app, provider)
    stranger = make_provider("stranger")
    before = count_rows(app)
    ua = {"HTTP_USER_AGENT": "x" * 400}
    for _ in range(20):
        r = client.post("/agent/auth/revoke", data="x.y.z", content_type="application/logout+jwt", environ_base=ua)
        _err(r, "invalid_request")
    for _ in range(5):
        _err(_revoke(client, stranger.logout_token("user-123")), "invalid_issuer")
    assert count_rows(app) == before
    assert _junk_lines(logs) == [
        "not written to the audit log (junk: unparseable, or no trusted issuer), 1 since the last such line: "
        "assertion.rejected error=invalid_request kind=logout ×1"]
    clock.advance(seconds=61)
    _err(_revoke(client, "a.b"), "invalid_request")
    assert _junk_lines(logs)[1] == (
        "not written to the audit log (junk: unparseable, or no trusted issuer), 25 since the last such line: "
        "assertion.rejected error=invalid_issuer kind=logout ×5, assertion.rejected error=invalid_request kind=logout ×20")
    assert len(_junk_lines(logs)) == 2


def test_tokens_naming_a_trusted_issuer_are_still_audited_whatever_check_they_fail(app, client, provider,
                                                                                   make_provider):
    trust(app, provider)
    stranger = make_provider("stranger")
    _err(_revoke(client, provider.logout_token("user-123", key=stranger.keys[0])), "invalid_signature")
    _err(_revoke(client, provider.logout_token("user-123", nonce="n")), "invalid_request")
    with app.app_context():  # a disabled issuer is still on the trust list: its tokens are no junk
        db.session.execute(db.update(TrustedIssuer).values(enabled=False))
        db.session.commit()
    _err(_revoke(client, provider.logout_token("user-123", key=stranger.keys[0])), "invalid_signature")
    rows = audit_rows(app, "assertion.rejected")
    assert [(e["data"]["error"], e["iss"]) for e in rows] == [("invalid_signature", provider.issuer),
                                                             ("invalid_request", provider.issuer),
                                                             ("invalid_signature", provider.issuer)]


def test_refused_logout_tokens_are_limited_per_ip_and_accepted_ones_do_not_count(make_app, app, provider):
    trust(app, provider)
    client = make_app(RATELIMIT_ENABLED=True, RATELIMIT_REVOKE_PER_IP="3/hour").test_client()
    ip = {"REMOTE_ADDR": "10.0.20.1"}

    def send(token):
        return client.post("/agent/auth/revoke", data=token, content_type="application/logout+jwt", environ_base=ip)

    assert send(provider.logout_token("user-1")).status_code == 200
    assert send("x.y.z").status_code == 400
    assert send(provider.logout_token("user-2")).status_code == 200
    assert send(provider.logout_token("user-3")).status_code == 200
    assert send("x.y.z").status_code == 400
    assert send("x.y.z").status_code == 400
    r = send("x.y.z")
    assert r.status_code == 429 and r.get_json()["error"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
    assert send(provider.logout_token("user-4")).status_code == 429  # once over, this address waits
    other = client.post("/agent/auth/revoke", data="x.y.z", content_type="application/logout+jwt",
                        environ_base={"REMOTE_ADDR": "10.0.20.2"})
    assert other.status_code == 400


def test_a_revocations_statements_find_their_rows_by_key_not_by_walking_a_table(app, client, provider,
                                                                                register_id_jag):
    """Revoking a subject costs the same with ten registrations or a million: every statement the revocation
    runs reaches its rows through the subject's key (delegations by (iss, sub), then ids). SQLite's planner has
    no statistics, and a subquery once led it through every active registration by the status index."""
    import sqlite3

    from tests.fixtures.tracing import sqlite_path, sqlite_statements
    trust(app, provider)
    _register(client, register_id_jag, provider)
    with sqlite_statements(app) as statements:
        assert _revoke(client, provider.logout_token("user-123")).json == {"revoked": 1}
    path = sqlite_path(app)
    writes = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(writes) >= 4, statements
    conn = sqlite3.connect(path)
    try:
        for sql in writes:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert all(step.startswith(("SEARCH", "LIST SUBQUERY")) for step in plan), (sql, plan)
            assert not any("ix_registrations_status_created" in step for step in plan), (sql, plan)
    finally:
        conn.close()
