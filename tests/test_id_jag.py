"""Agent verified (ID-JAG, §2.3): real provider keys and JWKS over loopback HTTP, tokens signed by python-jose."""
import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import datetime

import pytest

from authmd.extensions import db
from authmd.models import AuditEvent, Delegation, Registration, SeenJti, User
from tests.conftest import count_rows
from tests.fixtures.flows import set_settings
from tests.fixtures.provider import ID_JAG_TYP, b64url, trust

AUD = "http://localhost:8000"


def _events(app, name=None):
    with app.app_context():
        q = db.select(AuditEvent).order_by(AuditEvent.id)
        if name:
            q = q.where(AuditEvent.event == name)
        return list(db.session.execute(q).scalars())


def _err(resp, status, code):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.is_json and resp.json["error"] == code, resp.json
    assert resp.json["message"]


# ------------------------------------------------------------------ success

@pytest.mark.parametrize("kind", ["EC", "RSA", "OKP"])
def test_id_jag_from_each_key_type_gets_an_access_token_with_post_claim_scopes(app, client, provider, register_id_jag,
                                                                                kind):
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(key=provider.key(kind)))
    assert r.status_code == 200, r.json
    body = r.json
    assert body["registration_type"] == "agent-provider" and body["registration_id"].startswith("reg_")
    assert body["credential_type"] == "access_token" and body["credential"].startswith("at_")
    assert body["credential_expires"].endswith("Z") and body["scopes"] == ["api.read", "api.write"]
    assert "refresh_token" not in body and r.headers["Cache-Control"] == "no-store"
    me = client.get("/api/resource", headers={"Authorization": "Bearer " + body["credential"]}).json
    assert me["user"]["email"] == "user@example.com"
    assert me["credential"] | {} == {"type": "access_token", "scope": ["api.read", "api.write"], "source": "id_jag",
                                     "iss": provider.issuer, "sub": "user-123", "aud": AUD,
                                     "registration_id": body["registration_id"]}
    assert client.post("/api/resource", headers={"Authorization": "Bearer " + body["credential"]}).status_code == 200


def test_api_key_has_no_expiry_and_access_token_lives_the_configured_ttl(app, client, provider, register_id_jag, clock):
    trust(app, provider)
    key = register_id_jag(client, provider.id_jag(), "api_key").json
    assert key["credential"].startswith("sk_") and key["credential_expires"] is None
    at = register_id_jag(client, provider.id_jag()).json
    clock.advance(minutes=61)
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + at["credential"]}).status_code == 401
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + key["credential"]}).status_code == 200


def test_registration_id_is_stable_per_delegation_and_delegation_records_the_agent(app, client, provider,
                                                                                   register_id_jag):
    trust(app, provider)
    first = register_id_jag(client, provider.id_jag(agent_context_id="conv-1")).json
    second = register_id_jag(client, provider.id_jag(agent_context_id="conv-2")).json
    other_aud = register_id_jag(client, provider.id_jag(aud=AUD + "/api/")).json
    other_sub = register_id_jag(client, provider.id_jag(sub="user-456", email="b@example.com")).json
    assert first["registration_id"] == second["registration_id"]
    assert first["credential"] != second["credential"]
    assert len({first["registration_id"], other_aud["registration_id"], other_sub["registration_id"]}) == 3
    with app.app_context():
        d = db.session.execute(db.select(Delegation).where(Delegation.sub == "user-123", Delegation.aud == AUD)).scalar()
        assert d.registration_id == first["registration_id"]
        assert d.agent_platform == "TestAgent/1.0" and d.agent_context_id == "conv-2"
        assert d.first_seen <= d.last_seen
        reg = db.session.get(Registration, first["registration_id"])
        assert reg.type == "agent-provider" and reg.status == "active" and reg.delegation_id == d.id
        # the same person (same sub) through both audiences is one user
        assert len({x.user_id for x in db.session.execute(db.select(Delegation)).scalars()}) == 2


def test_a_delegation_whose_registration_is_gone_gets_a_new_one(app, client, provider, register_id_jag):
    trust(app, provider)
    first = register_id_jag(client, provider.id_jag()).json
    with app.app_context():
        d = db.session.execute(db.select(Delegation)).scalar_one()
        d.registration_id = "reg_gone"  # names no registration row (delegations hold no foreign key to it)
        db.session.commit()
    again = register_id_jag(client, provider.id_jag())
    assert again.status_code == 200, again.json
    assert again.json["registration_id"] not in (first["registration_id"], "reg_gone")
    with app.app_context():
        d = db.session.execute(db.select(Delegation)).scalar_one()
        reg = db.session.get(Registration, again.json["registration_id"])
        assert d.registration_id == reg.id and reg.delegation_id == d.id and reg.status == "active"
        assert reg.user_id == d.user_id is not None


def test_a_delegation_without_a_user_gets_the_resolved_one(app, client, provider, register_id_jag):
    trust(app, provider)
    set_settings(app, link_identities_by_email=True)  # an unbound delegation is otherwise a takeover guard case
    register_id_jag(client, provider.id_jag(email="ada@example.com"))
    with app.app_context():
        d = db.session.execute(db.select(Delegation)).scalar_one()
        user_id, d.user_id = d.user_id, None
        db.session.commit()
    again = register_id_jag(client, provider.id_jag(email="ada@example.com"))
    assert again.status_code == 200, again.json
    with app.app_context():
        assert db.session.execute(db.select(Delegation.user_id)).scalar_one() == user_id
        assert db.session.get(Registration, again.json["registration_id"]).user_id == user_id


def test_agent_details_fall_back_to_azp_and_act(app, client, provider, register_id_jag):
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(agent_platform=None, azp="claude.ai", act={"sub": "agent-run-9"}))
    assert r.status_code == 200
    created = _events(app, "registration.created")[-1]
    assert (created.agent_platform, created.agent_context_id) == ("claude.ai", "agent-run-9")


def test_audit_rows_carry_iss_sub_and_agent_and_never_the_secret(app, client, provider, register_id_jag):
    trust(app, provider)
    token = provider.id_jag(agent_context_id="ctx-7")
    body = register_id_jag(client, token).json
    for name in ("registration.created", "credential.issued"):
        ev = _events(app, name)[-1]
        assert (ev.iss, ev.sub, ev.agent_platform, ev.agent_context_id) == (provider.issuer, "user-123",
                                                                            "TestAgent/1.0", "ctx-7")
        assert ev.registration_id == body["registration_id"] and ev.user_id is not None
    for ev in _events(app):
        text = json.dumps([ev.data, ev.sub, ev.iss])
        assert body["credential"] not in text and token not in text


def test_issuer_scopes_override_the_post_claim_set(app, client, provider, register_id_jag):
    trust(app, provider, scopes="api.read")
    body = register_id_jag(client, provider.id_jag()).json
    assert body["scopes"] == ["api.read"]
    assert client.post("/api/resource", headers={"Authorization": "Bearer " + body["credential"]}).status_code == 403


def _only_row(app, model):
    with app.app_context():
        return db.session.execute(db.select(model)).scalar_one()  # exactly one: nothing else was written


@pytest.mark.parametrize("aud,stored", [(AUD, AUD), (AUD + "/", AUD), (AUD + "/api/", AUD + "/api"),
                                        (AUD + "/api", AUD + "/api"), ([AUD], AUD)])
def test_both_issuer_and_resource_are_accepted_as_audience(app, client, provider, register_id_jag, aud, stored):
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(aud=aud))
    assert r.status_code == 200, r.json
    body = r.json
    assert body["registration_type"] == "agent-provider" and body["credential"].startswith("at_")
    # one delegation for the audience as named (a trailing slash is the same audience), bound to this registration
    d = _only_row(app, Delegation)
    assert (d.iss, d.sub, d.aud, d.registration_id) == (provider.issuer, "user-123", stored, body["registration_id"])
    me = client.get("/api/resource", headers={"Authorization": "Bearer " + body["credential"]}).json
    assert me["credential"]["aud"] == stored and me["user"]["email"] == "user@example.com"


def test_phone_only_assertion_is_accepted(app, client, provider, register_id_jag):
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(email=None, email_verified=None, phone_number="+1 555 0100",
                                                phone_number_verified=True))
    assert r.status_code == 200, r.json
    body = r.json
    assert body["registration_type"] == "agent-provider" and body["scopes"] == ["api.read", "api.write"]
    # the user is provisioned by the verified phone (normalized), with no email
    user = _only_row(app, User)
    assert (user.email, user.email_verified, user.phone, user.phone_verified) == (None, False, "+15550100", True)
    assert _only_row(app, Delegation).user_id == user.id
    me = client.get("/api/resource", headers={"Authorization": "Bearer " + body["credential"]}).json
    assert me["user"] == {"id": user.id, "email": None, "email_verified": False, "name": None}


# ------------------------------------------------------------------ every error code of §2.3

def test_issuer_not_enabled_without_any_trusted_issuer_or_when_switched_off(app, client, provider, register_id_jag):
    _err(register_id_jag(client, provider.id_jag()), 400, "issuer_not_enabled")
    trust(app, provider, enabled=False)
    _err(register_id_jag(client, provider.id_jag()), 400, "issuer_not_enabled")
    with app.app_context():
        from authmd import settings
        from authmd.models import TrustedIssuer
        db.session.execute(db.update(TrustedIssuer).values(enabled=True))
        settings.update({"id_jag_enabled": False})
        db.session.commit()
    _err(register_id_jag(client, provider.id_jag()), 400, "issuer_not_enabled")


@pytest.mark.parametrize("wanted", ["refresh_token", "id_token"])
def test_unsupported_credential_type(app, client, provider, register_id_jag, wanted):
    trust(app, provider)
    _err(register_id_jag(client, provider.id_jag(), wanted), 400, "unsupported_credential_type")


@pytest.mark.parametrize("token", ["abc", "a.b", "a.b.c.d", "!!!.???.sig", b64url(b"[1]") + "." + b64url(b"{}") + ".c2ln",
                                   b64url(b"{}") + "." + b64url(b"not json") + ".c2ln"])
def test_unparseable_jws_is_invalid_request(app, client, provider, register_id_jag, token):
    trust(app, provider)
    _err(register_id_jag(client, token), 400, "invalid_request")


@pytest.mark.parametrize("typ", ["JWT", "logout+jwt", None, "oauth-id-jag"])
def test_wrong_typ_is_invalid_request(app, client, provider, register_id_jag, typ):
    trust(app, provider)
    payload = provider.claims(AUD)
    if typ is None:
        token = provider.keys[0].sign(payload, {"kid": provider.keys[0].kid})
    else:
        token = provider.sign(payload, typ=typ)
    _err(register_id_jag(client, token), 400, "invalid_request")


def test_unknown_or_disabled_issuer_is_invalid_issuer(app, client, provider, make_provider, register_id_jag):
    other = make_provider("other")
    trust(app, provider)
    trust(app, other, enabled=False)
    _err(register_id_jag(client, provider.id_jag(iss="https://evil.example")), 400, "invalid_issuer")
    _err(register_id_jag(client, other.id_jag()), 400, "invalid_issuer")
    _err(register_id_jag(client, provider.id_jag(iss=provider.issuer + "/")), 400, "invalid_issuer")


def test_bad_signature_is_invalid_signature(app, client, provider, register_id_jag):
    trust(app, provider)
    head, payload, sig = provider.id_jag().split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["sub"] = "someone-else"
    _err(register_id_jag(client, ".".join([head, b64url(json.dumps(tampered).encode()), sig])), 400,
         "invalid_signature")
    _err(register_id_jag(client, ".".join([head, payload, ""])), 400, "invalid_signature")


@pytest.mark.parametrize("aud", ["https://other.example", AUD + "/other", [AUD, "https://other.example"], [], 5])
def test_foreign_audience_is_invalid_audience(app, client, provider, register_id_jag, aud):
    trust(app, provider)
    _err(register_id_jag(client, provider.id_jag(aud=aud)), 400, "invalid_audience")


def test_exp_must_be_strictly_after_now_minus_skew(app, client, provider, register_id_jag, clock):
    trust(app, provider)
    clock.frozen = datetime(2030, 1, 1, 12, 0, 0)
    now = int((clock.frozen - datetime(1970, 1, 1)).total_seconds())
    _err(register_id_jag(client, provider.id_jag(iat=now - 600, exp=now - 60)), 400, "expired")
    assert register_id_jag(client, provider.id_jag(iat=now - 600, exp=now - 59)).status_code == 200


def test_time_claims_that_are_invalid_requests(app, client, provider, register_id_jag, clock):
    trust(app, provider)
    clock.frozen = datetime(2030, 1, 1, 12, 0, 0)
    now = int((clock.frozen - datetime(1970, 1, 1)).total_seconds())
    _err(register_id_jag(client, provider.id_jag(iat=now + 61, exp=now + 300)), 400, "invalid_request")
    assert register_id_jag(client, provider.id_jag(iat=now + 60, exp=now + 300)).status_code == 200
    _err(register_id_jag(client, provider.id_jag(iat=now, exp=now + 3601)), 400, "invalid_request")
    assert register_id_jag(client, provider.id_jag(iat=now, exp=now + 3600)).status_code == 200
    _err(register_id_jag(client, provider.id_jag(iat=now, exp=None)), 400, "invalid_request")
    _err(register_id_jag(client, provider.id_jag(iat=None, exp=now + 60)), 400, "invalid_request")
    _err(register_id_jag(client, provider.id_jag(iat="yesterday", exp=now + 60)), 400, "invalid_request")
    _err(register_id_jag(client, provider.id_jag(iat=now, exp=now + 300, nbf=now + 120)), 400, "invalid_request")
    assert register_id_jag(client, provider.id_jag(iat=now, exp=now + 300, nbf=now + 30)).status_code == 200


@pytest.mark.parametrize("extra", [{"crit": ["exp"], "exp": 1}, {"b64": False}])
def test_unsupported_header_extensions_are_invalid_request(app, client, provider, register_id_jag, extra):
    trust(app, provider)
    _err(register_id_jag(client, provider.sign(provider.claims(AUD), extra_headers=extra)), 400, "invalid_request")


@pytest.mark.parametrize("claim", ["sub", "jti"])
def test_sub_and_jti_are_required(app, client, provider, register_id_jag, claim):
    trust(app, provider)
    _err(register_id_jag(client, provider.id_jag(**{claim: None})), 400, "invalid_request")


def test_replayed_id_jag_is_replay_detected_and_jti_is_kept_until_exp_plus_skew(app, client, provider,
                                                                                register_id_jag, runner, clock):
    trust(app, provider)
    token = provider.id_jag()
    assert register_id_jag(client, token).status_code == 200
    _err(register_id_jag(client, token), 400, "replay_detected")
    with app.app_context():
        seen = db.session.execute(db.select(SeenJti)).scalar_one()
    exp = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    assert seen.expires_at == datetime(1970, 1, 1) + __import__("datetime").timedelta(seconds=exp + 60)
    assert "0 seen jti(s) purged" in runner.invoke(args=["expire"]).output
    clock.advance(minutes=7)
    assert "1 seen jti(s) purged" in runner.invoke(args=["expire"]).output


def test_the_same_jti_from_another_issuer_is_not_a_replay(app, client, provider, make_provider, register_id_jag):
    other = make_provider("other")
    trust(app, provider)
    trust(app, other)
    assert register_id_jag(client, provider.id_jag(jti="same")).status_code == 200
    assert register_id_jag(client, other.id_jag(jti="same", sub="o-1", email="o@example.com")).status_code == 200


@pytest.mark.parametrize("claims", [{"email_verified": False}, {"email_verified": None},
                                    {"email_verified": "true"},
                                    {"email_verified": False, "phone_number_verified": False}])
def test_unverified_identity_is_missing_verified_email(app, client, provider, register_id_jag, claims):
    trust(app, provider)
    _err(register_id_jag(client, provider.id_jag(**claims)), 400, "missing_verified_email")


def test_required_amr_is_insufficient_user_authentication(app, client, provider, register_id_jag):
    trust(app, provider, require_amr="mfa")
    _err(register_id_jag(client, provider.id_jag()), 400, "insufficient_user_authentication")
    _err(register_id_jag(client, provider.id_jag(amr=["pwd"])), 400, "insufficient_user_authentication")
    assert register_id_jag(client, provider.id_jag(amr=["pwd", "mfa"])).status_code == 200


def test_client_id_outside_the_allowed_list_is_invalid_client_id(app, client, provider, register_id_jag):
    trust(app, provider, allowed_client_ids="good-client other-client")
    _err(register_id_jag(client, provider.id_jag()), 400, "invalid_client_id")
    _err(register_id_jag(client, provider.id_jag(client_id=None)), 400, "invalid_client_id")
    assert register_id_jag(client, provider.id_jag(client_id="other-client")).status_code == 200


def test_checks_run_in_the_spec_order(app, client, provider, make_provider, register_id_jag):
    trust(app, provider, require_amr="mfa")
    stranger = make_provider("stranger")
    # bad typ (2) beats unknown issuer (3)
    _err(register_id_jag(client, stranger.sign(stranger.claims(AUD), typ="JWT")), 400, "invalid_request")
    # unknown issuer (3) beats a signature that could not verify (4)
    _err(register_id_jag(client, stranger.id_jag()), 400, "invalid_issuer")
    # bad signature (4) beats wrong audience (5)
    _err(register_id_jag(client, provider.id_jag(aud="https://x.example", key=stranger.keys[0])), 400,
         "invalid_signature")
    # wrong audience (5) beats expiry (6)
    _err(register_id_jag(client, provider.id_jag(aud="https://x.example", iat=1000, exp=1100)), 400,
         "invalid_audience")
    # expiry (6) beats missing sub (7)
    _err(register_id_jag(client, provider.id_jag(iat=1000, exp=1100, sub=None)), 400, "expired")
    # missing verified email (8) beats policy (9)
    _err(register_id_jag(client, provider.id_jag(email_verified=False)), 400, "missing_verified_email")


def test_a_rejected_id_jag_changes_nothing_but_is_audited_without_the_token(app, client, provider, register_id_jag):
    trust(app, provider, require_amr="mfa")
    before = count_rows(app)
    token = provider.id_jag()
    _err(register_id_jag(client, token), 400, "insufficient_user_authentication")
    after = count_rows(app)
    assert {k: v for k, v in after.items() if k != "audit_events"} == \
           {k: v for k, v in before.items() if k != "audit_events"}
    rejected = _events(app, "assertion.rejected")
    assert len(rejected) == 1 and after["audit_events"] == before["audit_events"] + 1
    ev = rejected[0]
    assert json.loads(ev.data) == {"error": "insufficient_user_authentication", "kind": "id_jag"}
    assert ev.iss == provider.issuer and ev.sub == "user-123"
    assert token not in json.dumps(json.loads(ev.data)) and token.split(".")[2] not in (ev.sub or "")
    # and the token was not spent: once policy allows it, the same token works
    with app.app_context():
        from authmd.models import TrustedIssuer
        db.session.execute(db.update(TrustedIssuer).values(require_amr=None))
        db.session.commit()
    assert register_id_jag(client, token).status_code == 200


# ------------------------------------------------------------------ algorithm confusion

def _raw(header: dict, payload: dict, sig: bytes = b"") -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode()) + "." + b64url(sig)


def test_hs256_signed_with_the_public_key_pem_is_refused(app, client, provider, register_id_jag):
    trust(app, provider)
    for key in provider.keys:
        header = {"alg": "HS256", "typ": ID_JAG_TYP, "kid": key.kid}
        unsigned = _raw(header, provider.claims(AUD)).rsplit(".", 1)[0]
        sig = hmac.new(key.public_pem, unsigned.encode(), hashlib.sha256).digest()
        _err(register_id_jag(client, unsigned + "." + b64url(sig)), 400, "invalid_signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS512", "", None])
def test_alg_none_and_hmac_are_refused(app, client, provider, register_id_jag, alg):
    trust(app, provider)
    header = {"typ": ID_JAG_TYP, "kid": provider.keys[0].kid}
    if alg is not None:
        header["alg"] = alg
    _err(register_id_jag(client, _raw(header, provider.claims(AUD))), 400, "invalid_signature")
    _err(register_id_jag(client, _raw(header, provider.claims(AUD), b"sig")), 400, "invalid_signature")


def test_kid_pointing_at_another_trusted_issuers_key_is_refused(app, client, provider, make_provider,
                                                                register_id_jag):
    other = make_provider("other", ("EC",))
    trust(app, provider)
    trust(app, other)
    assert register_id_jag(client, other.id_jag(sub="o")).status_code == 200  # other's keys are now cached
    forged = provider.sign(provider.claims(AUD), key=other.keys[0])  # iss=provider, other's key and kid
    _err(register_id_jag(client, forged), 400, "invalid_signature")


def test_keys_embedded_in_the_header_are_never_used(app, client, provider, make_provider, register_id_jag):
    trust(app, provider)
    attacker = make_provider("attacker", ("EC",))
    key = attacker.keys[0]
    forged = provider.sign(provider.claims(AUD), key=key,
                           extra_headers={"jwk": key.public_jwk(), "jku": attacker.jwks_uri})
    _err(register_id_jag(client, forged), 400, "invalid_signature")
    assert attacker.jwks_requests == 0


def test_algorithm_outside_the_issuers_allow_list_is_refused(app, client, provider, register_id_jag):
    trust(app, provider, algorithms="ES256")
    _err(register_id_jag(client, provider.id_jag(key=provider.key("RSA"))), 400, "invalid_signature")
    assert register_id_jag(client, provider.id_jag(key=provider.key("EC"))).status_code == 200


def test_alg_that_does_not_match_the_keys_type_is_refused(app, client, provider, register_id_jag):
    trust(app, provider)
    ec, rsa = provider.key("EC"), provider.key("RSA")
    # signed by the RSA key but naming the EC key's kid
    _err(register_id_jag(client, provider.sign(provider.claims(AUD), key=rsa, kid=ec.kid)), 400, "invalid_signature")


# ------------------------------------------------------------------ two workers, one database

def test_the_same_id_jag_sent_to_two_app_instances_at_once_succeeds_exactly_once(app, make_app, provider):
    trust(app, provider)
    second = make_app()
    token = provider.id_jag()
    results, barrier = [], threading.Barrier(2)

    def send(application):
        client = application.test_client()
        barrier.wait()
        r = client.post("/agent/auth", json={"type": "identity_assertion",
                                             "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
                                             "assertion": token, "requested_credential_type": "access_token"})
        results.append((r.status_code, r.json.get("error")))

    threads = [threading.Thread(target=send, args=(a,)) for a in (app, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [(200, None), (400, "replay_detected")]
    with app.app_context():
        assert db.session.execute(db.select(db.func.count()).select_from(Registration)).scalar() == 1


def test_different_id_jags_for_one_delegation_at_once_share_one_registration(app, make_app, provider):
    trust(app, provider)
    apps = [app, make_app(), make_app()]
    tokens = [provider.id_jag() for _ in apps]
    results, barrier = [], threading.Barrier(len(apps))

    def send(application, token):
        barrier.wait()
        r = application.test_client().post("/agent/auth", json={
            "type": "identity_assertion", "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
            "assertion": token, "requested_credential_type": "api_key"})
        results.append((r.status_code, (r.json or {}).get("registration_id")))

    threads = [threading.Thread(target=send, args=pair) for pair in zip(apps, tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [s for s, _ in results] == [200] * len(apps)
    assert len({rid for _, rid in results}) == 1


# ------------------------------------------------------------------ auth.md and metadata

def test_auth_md_and_metadata_gain_the_id_jag_section_only_when_an_issuer_is_enabled(app, client, provider):
    doc = client.get("/auth.md").get_data(as_text=True)
    assert "### Agent verified (ID-JAG)" not in doc and "Content-Type: application/logout+jwt" not in doc
    meta = client.get("/.well-known/oauth-authorization-server").json["agent_auth"]
    assert "urn:ietf:params:oauth:token-type:id-jag" not in meta["identity_assertion"]["assertion_types_supported"]
    trust(app, provider)
    doc = client.get("/auth.md").get_data(as_text=True)
    assert "### Agent verified (ID-JAG)" in doc and f"- `{provider.issuer}`" in doc
    assert "Content-Type: application/logout+jwt" in doc and "http://localhost:8000/agent/auth/revoke" in doc
    assert "typ: oauth-id-jag+jwt" in doc and "logout_token=<compact JWS>" in doc
    meta = client.get("/.well-known/oauth-authorization-server").json["agent_auth"]
    assert meta["trusted_issuers"] == [provider.issuer]
    assert "urn:ietf:params:oauth:token-type:id-jag" in meta["identity_assertion"]["assertion_types_supported"]
    for code in ("invalid_audience", "expired", "replay_detected", "missing_verified_email",
                 "insufficient_user_authentication", "invalid_client_id", "user_not_provisioned"):
        assert f"`{code}`" in doc


def test_a_nul_in_iss_or_sub_is_a_clear_400_and_still_audited(app, client, provider, register_id_jag):
    """PostgreSQL refuses a NUL in a text parameter: such a token must still get its 400 JSON answer (not a
    500) and its assertion.rejected row (with the NUL removed), on both databases. (An iss with a NUL names
    no trusted issuer: junk, counted in the log, no row.)"""
    trust(app, provider, require_amr="mfa")
    _err(register_id_jag(client, provider.id_jag(iss=provider.issuer + "\x00x")), 400, "invalid_issuer")
    _err(register_id_jag(client, provider.id_jag(sub="user\x00-9")), 400, "invalid_request")
    _err(register_id_jag(client, provider.id_jag(sub="user-9", amr=["mfa"], jti="j\x00ti")), 400, "invalid_request")
    rejected = _events(app, "assertion.rejected")
    assert [(json.loads(e.data)["error"], e.iss, e.sub) for e in rejected] == [
        ("invalid_request", provider.issuer, "user-9"),
        ("invalid_request", provider.issuer, "user-9")]
    assert count_rows(app)["seen_jtis"] == 0 and count_rows(app)["delegations"] == 0


def test_control_characters_in_the_agent_claims_are_dropped_before_they_are_stored(app, client, provider,
                                                                                   register_id_jag):
    # agent_platform and agent_context_id are shown in the console and the portal: stored without control
    # characters (PostgreSQL refuses a NUL in a parameter; a newline would forge a line in a log or mail)
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(agent_platform="Test\x00Agent\n/1.0", act={"sub": "conv\x00-7"}))
    assert r.status_code == 200, r.get_data(as_text=True)
    with app.app_context():
        d = db.session.execute(db.select(Delegation)).scalar_one()
        reg = db.session.get(Registration, d.registration_id)
        assert (d.agent_platform, d.agent_context_id, reg.agent_platform) == ("TestAgent/1.0", "conv-7", "TestAgent/1.0")
