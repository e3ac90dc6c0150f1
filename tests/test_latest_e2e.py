"""The latest protocol end to end: an agent that behaves as the official client does (tests/agent_client.py)
against authmd under gunicorn (2 workers, the suite's database), the person answering through the real pages
(portal sign-in by emailed link over real SMTP, the claim page, the code read from #user-code), providers with
real keys and JWKS over loopback HTTP (protocol-latest.md §4: what "works" means)."""
import json
import os
import stat
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from jose import jwt as jose_jwt

from app import create_app
from authmd.extensions import db
from tests.agent_client import AgentAuthClient, FileStore, MemoryStore, ProtocolError
from tests.conftest import _wipe, count_rows
from tests.fixtures.latest import HoldUntilAll, Person, RequestLog, keys_cli, start_latest_server
from tests.fixtures.provider import REVOKED_EVENT, Provider, trust

pytestmark = pytest.mark.slow
TIMEOUT = 15
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


class Service:
    """The server under test, an app on the same database (for reading rows), and two trusted providers."""

    def __init__(self, server, app, alpha, beta, mailbox, database_url):
        self.server, self.app, self.alpha, self.beta = server, app, alpha, beta
        self.url, self.mailbox, self.database_url = server.url, mailbox, database_url

    def agent(self, store=None, **kw):
        client = AgentAuthClient(store if store is not None else MemoryStore(), **kw)
        client.log = RequestLog(client.http)
        return client

    def person(self, email):
        return Person(self.url, email, self.mailbox)

    def api(self, token, method="GET"):
        return requests.request(method, self.url + "/api/resource", headers={"Authorization": "Bearer " + token},
                                timeout=TIMEOUT)

    def id_jag(self, provider, sub, email, **claims):
        claims.setdefault("auth_time", int(time.time()) - 60)
        return provider.id_jag(self.url, sub=sub, email=email, **claims)

    def set_token(self, provider, sub, **claims):
        now = int(time.time())
        payload = {"iss": provider.issuer, "sub": sub, "aud": self.url, "iat": now, "jti": uuid.uuid4().hex,
                   "events": {REVOKED_EVENT: {}}, **claims}
        return provider.sign(payload, typ="secevent+jwt")


@pytest.fixture(scope="module")
def svc(schema, smtp_server, tmp_path_factory):
    """One server for the module: a fresh install (wiped once), two trusted providers, the first signing key."""
    from authmd import keys
    alpha, beta = Provider("alpha"), Provider("beta")
    server = None
    app = create_app({"TESTING": True, "DATABASE_URL": schema, "SECRET_KEY": "test-secret",
                      "RATELIMIT_ENABLED": False, "ISSUER": "http://127.0.0.1"})
    try:
        _wipe(app)
        trust(app, alpha)
        trust(app, beta)
        with app.app_context():
            keys.ensure()
            db.session.commit()
        # tests switch flows on and off between two requests: discovery is rebuilt on every request (the
        # default lets another worker serve the previous document for up to a second)
        server = start_latest_server(str(tmp_path_factory.mktemp("latest")), schema, smtp_server, workers=2,
                                     AUTHMD_DISCOVERY_CACHE_SECONDS=0)
        yield Service(server, app, alpha, beta, smtp_server, schema)
    finally:
        if server is not None:
            server.stop()
        for p in (alpha, beta):
            p.close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def rows(svc, model, **where):
    with svc.app.app_context():
        q = db.select(model)
        for key, value in where.items():
            q = q.where(getattr(model, key) == value)
        out = list(db.session.execute(q).scalars())
        db.session.expunge_all()
        return out


def claimed_service_auth(svc, person, agent=None):
    """An agent registered as service_auth for `person`, claimed through the pages: (agent, result)."""
    agent = agent or svc.agent()
    started = agent.authenticate(svc.url, email=person.email)
    assert started["status"] == "claim_required", started
    code = person.authorize(started["verification_uri"])
    done = agent.complete_claim(svc.url, code)
    assert done["status"] == "ready" and done["claimed"] is True, done
    return agent, done


# ---------------------------------------------------------------- discovery (notes §17.2)

class _Stub(BaseHTTPRequestHandler):
    documents = {}

    def do_GET(self):  # noqa: N802
        status, body = self.documents.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_discovery_is_one_cached_request_and_its_failures_are_named(svc):
    now = [time.time()]
    agent = svc.agent(clock=lambda: now[0])
    assert agent.authenticate(svc.url + "//")["status"] == "ready"  # trailing slashes stripped (§17.1)
    metadata_gets = [e for e in agent.log.calls() if e[1].endswith("/.well-known/oauth-authorization-server")]
    assert metadata_gets == [("GET", svc.url + "/.well-known/oauth-authorization-server", 200)]
    assert not any("oauth-protected-resource" in e[1] for e in agent.log.calls())  # no PRM: AS metadata only
    agent.discover(svc.url)
    now[0] += 299
    agent.discover(svc.url)
    assert len([e for e in agent.log.calls() if "authorization-server" in e[1]]) == 1
    now[0] += 2  # past five minutes
    agent.discover(svc.url)
    assert len([e for e in agent.log.calls() if "authorization-server" in e[1]]) == 2

    with pytest.raises(ProtocolError) as failed:
        svc.agent().authenticate(svc.url + "/elsewhere")
    assert failed.value.code == "discovery_failed" and failed.value.status == 404

    stub = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        _Stub.documents = {"/.well-known/oauth-authorization-server": (200, json.dumps(
            {"issuer": "x", "token_endpoint": "x", "agent_auth": {"skill": "x"}}).encode())}
        with pytest.raises(ProtocolError) as unsupported:
            svc.agent().authenticate(f"http://127.0.0.1:{stub.server_port}")
        assert unsupported.value.code == "agent_auth_unsupported"
    finally:
        stub.shutdown()


# ---------------------------------------------------------------- anonymous

def test_an_anonymous_agent_calls_the_api(svc, tmp_path):
    path = str(tmp_path / "authmd" / "credentials.json")
    agent = svc.agent(FileStore(path))
    ready = agent.authenticate(svc.url)
    assert ready["status"] == "ready" and ready["registration_type"] == "anonymous" and ready["claimed"] is False
    assert ready["scope"] == "api.read" and ready["access_token"].startswith("at_")
    # what it sent: JSON {"type":"anonymous"} to identity_endpoint, then the form-encoded jwt-bearer exchange
    (_, reg_url, reg_type, reg_body, reg_status), (_, tok_url, tok_type, tok_body, tok_status) = [
        e for e in agent.log.entries if e[0] == "POST"]
    assert (reg_url, reg_type, json.loads(reg_body), reg_status) == (
        svc.url + "/agent/identity", "application/json", {"type": "anonymous"}, 200)
    assert (tok_url, tok_type, tok_status) == (svc.url + "/oauth2/token", "application/x-www-form-urlencoded", 200)
    assert tok_body.startswith("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")

    got = agent.fetch_with_auth(svc.url, svc.url + "/api/resource")
    assert got["status"] == 200
    who = json.loads(got["body"])
    assert who["user"] is None and who["credential"]["scope"] == ["api.read"]
    assert who["credential"]["registration_id"] == ready["registration_id"]
    write = agent.fetch_with_auth(svc.url, svc.url + "/api/resource", method="POST")
    assert write["status"] == 403 and json.loads(write["body"])["error"] == "insufficient_scope"

    agent.log.clear()
    assert agent.authenticate(svc.url)["access_token"] == ready["access_token"]  # reused, nothing sent
    assert agent.log.entries == []
    # the store: 0600 in a 0700 directory, no claim token in it (memory only)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    saved = json.load(open(path))
    record = saved["issuers"][svc.url]
    assert saved["version"] == 1 and record["registration_type"] == "anonymous" and record["claimed"] is False
    assert record["access_token"]["value"] == ready["access_token"] and "clm_" not in json.dumps(saved)
    assert sorted(os.listdir(os.path.dirname(path))) == ["credentials.json"]  # no lockfile or temp file left


def test_an_anonymous_agent_is_claimed_with_the_code_from_the_claim_page(svc, tmp_path):
    path = str(tmp_path / "credentials.json")
    agent = svc.agent(FileStore(path))
    person = svc.person(unique("ada"))
    pre = agent.authenticate(svc.url)
    assert svc.api(pre["access_token"]).status_code == 200

    agent.log.clear()
    started = agent.authenticate(svc.url, email=person.email)  # the upgrade: a claim attempt, not the old token
    assert started["status"] == "claim_required" and started["registration_id"] == pre["registration_id"]
    assert started["verification_uri"].startswith(svc.url + "/claim?claim_attempt_token=cvt_")
    [(method, url, _, body, status)] = agent.log.entries  # posted to the registration's claim.url
    assert (method, url, status) == ("POST", svc.url + "/agent/identity/claim", 200)
    assert json.loads(body)["type"] == "service_auth" and json.loads(body)["login_hint"] == person.email

    with pytest.raises(ProtocolError) as early:  # no polling: the error reaches the caller
        agent.complete_claim(svc.url, "123456")
    assert (early.value.code, early.value.status) == ("claim_not_confirmed", 409)

    code = person.authorize(started["verification_uri"])
    assert person.sign_ins == 1
    wrong = "%06d" % ((int(code) + 1) % 10**6)
    with pytest.raises(ProtocolError) as bad:
        agent.complete_claim(svc.url, wrong)
    assert (bad.value.code, bad.value.status) == ("invalid_user_code", 401)

    agent.log.clear()
    done = agent.complete_claim(svc.url, code)
    assert done["status"] == "ready" and done["claimed"] is True and done["registration_type"] == "anonymous"
    assert done["scope"] == "api.read api.write" and done["registration_id"] == pre["registration_id"]
    assert [(m, u) for m, u, _ in agent.log.calls()] == [
        ("POST", svc.url + "/agent/identity/claim/complete"), ("POST", svc.url + "/oauth2/token")]
    # latest semantics: the pre-claim token died at the claim
    assert svc.api(pre["access_token"]).status_code == 401
    wrote = agent.fetch_with_auth(svc.url, svc.url + "/api/resource", method="POST")
    assert wrote["status"] == 200 and json.loads(wrote["body"])["user"]["email"] == person.email
    record = json.load(open(path))["issuers"][svc.url]
    assert record["claimed"] is True and record["identity"]["refresh_token"]["value"].startswith("art_")
    assert "clm_" not in json.dumps(record) and "cvt_" not in json.dumps(record)
    with pytest.raises(ProtocolError) as none:
        agent.complete_claim(svc.url, code)
    assert none.value.code == "no_pending_claim"


def test_a_service_auth_agent_is_claimed_then_gets_a_token(svc):
    person = svc.person(unique("grace"))
    agent = svc.agent()
    started = agent.authenticate(svc.url, email=person.email)
    assert started["status"] == "claim_required"
    assert agent.store.get(svc.url) is None  # nothing to store before the claim: no identity yet
    [(method, url, _, body, _)] = [e for e in agent.log.entries if e[0] == "POST"]
    assert url == svc.url + "/agent/identity" and json.loads(body) == {"type": "service_auth",
                                                                         "login_hint": person.email}
    code = person.authorize(started["verification_uri"])
    done = agent.complete_claim(svc.url, code)
    assert done["status"] == "ready" and done["registration_type"] == "service_auth" and done["claimed"] is True
    assert done["scope"] == "api.read api.write"
    who = json.loads(agent.fetch_with_auth(svc.url, svc.url + "/api/resource")["body"])
    assert who["user"]["email"] == person.email and who["credential"]["registration_id"] == started["registration_id"]
    # the same person, signed in already, answers the next agent without a new sign-in mail
    claimed_service_auth(svc, person)
    assert person.sign_ins == 1


def test_two_completions_of_one_claim_at_once_claim_it_once(svc):
    person = svc.person(unique("twice"))
    agent = svc.agent()
    started = agent.authenticate(svc.url, email=person.email)
    code = person.authorize(started["verification_uri"])
    # both calls read the pending claim before either is answered (the transport holds them together)
    agent.http.mount(svc.url + "/agent/identity/claim/complete", HoldUntilAll("/claim/complete", 2))

    def complete():
        try:
            return agent.complete_claim(svc.url, code)
        except ProtocolError as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        results = [f.result(timeout=TIMEOUT * 2) for f in [pool.submit(complete) for _ in range(2)]]
    ready = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, ProtocolError)]
    assert len(ready) == 1 and ready[0]["status"] == "ready"
    assert len(refused) == 1 and (refused[0].code, refused[0].status) == ("already_claimed", 409)


def test_the_claim_errors_an_agent_meets_after_the_page(svc):
    # "This wasn't me" on the page: the agent's completion is refused, its claim stays in memory
    person = svc.person(unique("denies"))
    agent = svc.agent()
    started = agent.authenticate(svc.url, email=person.email)
    denied = person.deny(started["verification_uri"])
    assert denied.status_code == 200 and 'id="denied"' in denied.text
    with pytest.raises(ProtocolError) as refused:
        agent.complete_claim(svc.url, "123456")
    assert (refused.value.code, refused.value.status) == ("claim_denied", 403)
    # a new attempt for the same registration (start_claim_attempt, as after an expired code), then five
    # wrong codes: the attempt is dead
    again = agent.start_claim_attempt(svc.url, person.email)
    assert again["verification_uri"] != started["verification_uri"]
    code = person.authorize(again["verification_uri"])
    wrong = "%06d" % ((int(code) + 1) % 10**6)
    errors = []
    for _ in range(5):
        with pytest.raises(ProtocolError) as bad:
            agent.complete_claim(svc.url, wrong)
        errors.append((bad.value.code, bad.value.status))
    assert errors == [("invalid_user_code", 401)] * 4 + [("too_many_attempts", 429)]
    with pytest.raises(ProtocolError) as dead:
        agent.complete_claim(svc.url, code)  # even the right code now
    assert (dead.value.code, dead.value.status) == ("too_many_attempts", 429)
    # a login_hint that is no address is refused at registration
    with pytest.raises(ProtocolError) as hint:
        svc.agent().authenticate(svc.url, email="not an address")
    assert (hint.value.code, hint.value.status) == ("invalid_login_hint", 400)


# ---------------------------------------------------------------- refresh and re-authentication

def test_refresh_rotates_and_the_spent_refresh_token_is_dead(svc):
    now = [time.time()]
    person = svc.person(unique("refresh"))
    agent, first = claimed_service_auth(svc, person, svc.agent(clock=lambda: now[0]))
    old_refresh = agent.store.get(svc.url)["identity"]["refresh_token"]["value"]

    now[0] += 3700  # on the agent's clock the access token and the assertion are over; the refresh token is not
    agent.log.clear()
    again = agent.authenticate(svc.url)
    assert again["status"] == "ready" and again["access_token"] != first["access_token"]
    posts = [e for e in agent.log.entries if e[0] == "POST"]  # (and discovery again: its 5 minutes are over)
    assert [(m, u) for m, u, *_ in posts] == [("POST", svc.url + "/agent/identity"), ("POST", svc.url + "/oauth2/token")]
    assert json.loads(posts[0][3]) == {"type": "refresh", "refresh_token": old_refresh}
    new_refresh = agent.store.get(svc.url)["identity"]["refresh_token"]["value"]
    assert new_refresh.startswith("art_") and new_refresh != old_refresh
    assert svc.api(again["access_token"]).status_code == 200

    # rotating: the spent token is dead, and presenting it again is theft (the family dies with it)
    reused = requests.post(svc.url + "/agent/identity", json={"type": "refresh", "refresh_token": old_refresh},
                           timeout=TIMEOUT)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_refresh_token"
    assert svc.api(again["access_token"]).status_code == 401
    now[0] += 3700
    with pytest.raises(ProtocolError) as guard:  # the refresh fails, and a claimed agent never goes anonymous
        agent.authenticate(svc.url)
    assert guard.value.code == "reauthentication_required" and guard.value.status == 401
    assert agent.log.calls()[-1] == ("POST", svc.url + "/agent/identity", 400)


def test_fetch_with_auth_reauthenticates_once_after_a_401(svc):
    agent = svc.agent()
    first = agent.authenticate(svc.url)
    revoked = requests.post(svc.url + "/oauth2/revoke", data={"token": first["access_token"]}, timeout=TIMEOUT)
    assert revoked.status_code == 200 and revoked.content == b""
    agent.log.clear()
    got = agent.fetch_with_auth(svc.url, svc.url + "/api/resource")
    assert got["status"] == 200
    assert [(m, u.replace(svc.url, ""), s) for m, u, s in agent.log.calls()] == [
        ("GET", "/api/resource", 401), ("POST", "/oauth2/token", 200), ("GET", "/api/resource", 200)]
    second = agent.store.get(svc.url)["access_token"]["value"]
    assert second != first["access_token"] and json.loads(got["body"])["credential"]["registration_id"] == \
        first["registration_id"]


def test_an_access_token_is_kept_per_resource(svc):
    agent = svc.agent()
    plain = agent.authenticate(svc.url)
    pinned = agent.authenticate(svc.url, resource=svc.url + "/api/")
    assert pinned["access_token"] != plain["access_token"]  # minted for another resource: exchanged again
    assert agent.log.calls()[-1] == ("POST", svc.url + "/oauth2/token", 200)
    assert "resource=http" in agent.log.entries[-1][3]
    with pytest.raises(ProtocolError) as wrong:
        agent.authenticate(svc.url, resource="https://elsewhere.example/api/")
    assert wrong.value.code == "invalid_target" and wrong.value.status == 400


# ---------------------------------------------------------------- ID-JAGs (notes §4.2, decision 1)

def test_an_id_jag_clean_match_then_a_second_provider_needs_the_owner(svc):
    from authmd.models import Delegation, User
    owner = svc.person(unique("owner"))
    first = svc.agent()
    ready = first.authenticate(svc.url, id_jag=svc.id_jag(svc.alpha, "alpha-" + owner.email, owner.email))
    assert ready["status"] == "ready" and ready["registration_type"] == "identity_assertion"
    assert ready["claimed"] is True and ready["scope"] == "api.read api.write"
    [(_, _, _, body, _)] = [e for e in first.log.entries if e[1].endswith("/agent/identity")]
    assert json.loads(body)["type"] == "identity_assertion" and json.loads(body)["assertion_type"] == ID_JAG
    who = json.loads(first.fetch_with_auth(svc.url, svc.url + "/api/resource")["body"])
    assert who["user"]["email"] == owner.email and who["credential"]["iss"] == svc.alpha.issuer

    # the second provider asserts the same verified email for another subject: the owner must confirm
    second = svc.agent()
    token = svc.id_jag(svc.beta, "beta-" + owner.email, owner.email)
    asked = second.authenticate(svc.url, id_jag=token)
    assert asked["status"] == "claim_required"
    assert asked["verification_uri"].startswith(svc.url + "/claim?claim_attempt_token=cvt_")
    assert second.store.get(svc.url) is None
    [user] = rows(svc, User, email=owner.email)
    [waiting] = rows(svc, Delegation, iss=svc.beta.issuer, sub="beta-" + owner.email)
    assert waiting.user_id is None  # not linked before the owner says so
    with pytest.raises(ProtocolError) as replay:  # the token was spent by the refusal
        svc.agent().authenticate(svc.url, id_jag=token)
    assert replay.value.code == "replay_detected"

    code = owner.authorize(asked["verification_uri"])
    linked = second.complete_claim(svc.url, code)
    assert linked["status"] == "ready" and linked["registration_type"] == "identity_assertion"
    assert linked["claimed"] is True and linked["registration_id"] == asked["registration_id"]
    who = json.loads(second.fetch_with_auth(svc.url, svc.url + "/api/resource")["body"])
    assert who["user"]["id"] == user.id and who["credential"]["iss"] == svc.beta.issuer
    [bound] = rows(svc, Delegation, iss=svc.beta.issuer, sub="beta-" + owner.email)
    assert bound.user_id == user.id

    # the provider's next ID-JAG is a clean match, to the same registration
    third = svc.agent()
    again = third.authenticate(svc.url, id_jag=svc.id_jag(svc.beta, "beta-" + owner.email, owner.email))
    assert again["status"] == "ready" and again["registration_id"] == asked["registration_id"]


@pytest.mark.parametrize("auth_time", ["old", "missing"])
def test_an_id_jag_without_a_recent_sign_in_reaches_the_agent_as_login_required(svc, auth_time):
    email = unique("stale")
    value = int(time.time()) - 3600 - 300 if auth_time == "old" else None
    token = svc.alpha.id_jag(svc.url, sub="stale-" + email, email=email, auth_time=value)
    agent = svc.agent()
    before = count_rows(svc.app)
    with pytest.raises(ProtocolError) as refused:
        agent.authenticate(svc.url, id_jag=token)
    assert (refused.value.code, refused.value.status) == ("login_required", 401)
    assert refused.value.body["max_age"] == 3600 and refused.value.message
    after = count_rows(svc.app)
    assert after.pop("audit_events") == before.pop("audit_events") + 1 and after == before  # only the audit row
    assert agent.store.get(svc.url) is None


def test_an_id_jag_needs_the_urn_advertised(svc):
    from tests.fixtures.flows import set_settings
    set_settings(svc.app, id_jag_enabled=False)
    try:
        agent = svc.agent()
        with pytest.raises(ProtocolError) as refused:
            agent.authenticate(svc.url, id_jag=svc.id_jag(svc.alpha, "x", unique("x")))
        assert refused.value.code == "unsupported_identity_type"
        assert [e[0] for e in agent.log.entries] == ["GET"]  # refused before sending the token anywhere
    finally:
        set_settings(svc.app, id_jag_enabled=True)


def test_registration_type_follows_what_discovery_advertises(svc):
    from tests.fixtures.flows import set_settings
    set_settings(svc.app, verified_email_enabled=False)
    try:
        agent = svc.agent()  # an email, but no service_auth advertised: the official client goes anonymous
        ready = agent.authenticate(svc.url, email=unique("quiet"))
        assert ready["status"] == "ready" and ready["registration_type"] == "anonymous"
        set_settings(svc.app, anonymous_enabled=False)
        with pytest.raises(ProtocolError) as none:
            svc.agent().authenticate(svc.url)
        assert none.value.code == "no_applicable_method"
    finally:
        set_settings(svc.app, verified_email_enabled=True, anonymous_enabled=True)


# ---------------------------------------------------------------- provider events (RFC 8935)

def test_a_set_revokes_every_credential_of_the_delegation_at_once(svc):
    email = unique("leaver")
    sub = "alpha-" + email
    agent = svc.agent()
    latest = agent.authenticate(svc.url, id_jag=svc.id_jag(svc.alpha, sub, email))["access_token"]
    pinned = agent.authenticate(svc.url, resource=svc.url + "/api/")["access_token"]
    v01 = requests.post(svc.url + "/agent/auth", json={
        "type": "identity_assertion", "assertion_type": ID_JAG, "requested_credential_type": "api_key",
        "assertion": svc.id_jag(svc.alpha, sub, email)}, timeout=TIMEOUT)
    assert v01.status_code == 200, v01.text
    tokens = [latest, pinned, v01.json()["credential"]]
    other = svc.agent().authenticate(svc.url, id_jag=svc.id_jag(svc.alpha, "alpha-" + unique("stays"),
                                                                unique("stays")))["access_token"]
    for _ in range(2):
        assert [svc.api(t).status_code for t in tokens + [other]] == [200] * 4

    sent = requests.post(svc.url + "/agent/event/notify", data=svc.set_token(svc.alpha, sub),
                         headers={"Content-Type": "application/secevent+jwt"}, timeout=TIMEOUT)
    assert sent.status_code == 202 and sent.content == b""
    for _ in range(4):  # every worker, the very next call
        assert [svc.api(t).status_code for t in tokens] == [401] * 3
        assert svc.api(other).status_code == 200
    # the agent meets the revocation as a 401, then invalid_grant when it re-exchanges its assertion
    agent.log.clear()
    with pytest.raises(ProtocolError) as dead:
        agent.fetch_with_auth(svc.url, svc.url + "/api/resource", resource=svc.url + "/api/")
    assert (dead.value.code, dead.value.status) == ("invalid_grant", 400)
    assert [s for _, _, s in agent.log.calls()] == [401, 400]


# ---------------------------------------------------------------- the refresh-token reuse race

def test_two_uses_of_one_refresh_token_at_once_one_wins_then_the_family_dies(svc):
    person = svc.person(unique("racer"))
    for round_ in range(5):
        agent, done = claimed_service_auth(svc, person)
        refresh = agent.store.get(svc.url)["identity"]["refresh_token"]["value"]
        barrier = threading.Barrier(2)

        def use():
            barrier.wait(timeout=TIMEOUT)
            return requests.post(svc.url + "/agent/identity", json={"type": "refresh", "refresh_token": refresh},
                                 timeout=TIMEOUT)

        with ThreadPoolExecutor(2) as pool:
            results = [f.result(timeout=TIMEOUT * 2) for f in [pool.submit(use) for _ in range(2)]]
        assert sorted(r.status_code for r in results) == [200, 400], [r.text for r in results]
        winner = next(r for r in results if r.status_code == 200).json()
        loser = next(r for r in results if r.status_code == 400).json()
        assert loser["error"] == "invalid_refresh_token", round_
        # the family is dead: the winner's new refresh token too, and the access token issued before
        again = requests.post(svc.url + "/agent/identity", json={
            "type": "refresh", "refresh_token": winner["identity"]["refresh_token"]["value"]}, timeout=TIMEOUT)
        assert again.status_code == 400 and again.json()["error"] == "invalid_refresh_token"
        assert svc.api(done["access_token"]).status_code == 401
        # and no assertion handed out in the family's name buys access any more
        minted = requests.post(svc.url + "/oauth2/token", data={
            "grant_type": JWT_BEARER, "assertion": winner["identity"]["assertion"]}, timeout=TIMEOUT)
        assert minted.status_code == 400 and minted.json()["error"] == "invalid_grant", minted.text
    assert person.sign_ins == 1


# ---------------------------------------------------------------- errors and bad bodies

BIG = "x" * (70 * 1024)


@pytest.mark.parametrize("path, kwargs, status, error", [
    ("/agent/identity", {"data": '{"type":"anonymous"}', "headers": {"Content-Type": "text/plain"}}, 415, None),
    ("/agent/identity", {"data": '{"type": "anonymous"', "headers": {"Content-Type": "application/json"}}, 400,
     "invalid_request"),
    ("/agent/identity", {"json": ["anonymous"]}, 400, "invalid_request"),
    ("/agent/identity", {"json": {"type": "teleport"}}, 400, "invalid_request"),
    ("/agent/identity", {"json": {"login_hint": "a@example.com"}}, 400, "invalid_request"),
    ("/agent/identity", {"json": {"type": "service_auth"}}, 400, "invalid_login_hint"),
    ("/agent/identity", {"json": {"type": "refresh"}}, 400, "invalid_request"),
    ("/agent/identity", {"json": {"type": "identity_assertion", "assertion_type": ID_JAG}}, 400, "invalid_request"),
    ("/agent/identity", {"json": {"type": "anonymous", "pad": BIG}}, 413, None),
    ("/agent/identity/claim", {"json": {"type": "service_auth", "claim_token": "clm_x"}}, 400, "invalid_request"),
    ("/agent/identity/claim/complete", {"json": {"claim_token": "clm_x"}}, 400, "invalid_request"),
    ("/oauth2/token", {"json": {"grant_type": JWT_BEARER, "assertion": "x"}}, 400, "invalid_request"),
    ("/oauth2/token", {"data": {"grant_type": "client_credentials"}}, 400, "unsupported_grant_type"),
    ("/oauth2/token", {"data": {"assertion": "x.y.z"}}, 400, "unsupported_grant_type"),
    ("/oauth2/token", {"data": {"grant_type": JWT_BEARER}}, 400, "invalid_request"),
    ("/oauth2/token", {"data": {"grant_type": JWT_BEARER, "assertion": "not.a.jwt"}}, 400, "invalid_grant"),
    ("/oauth2/token", {"data": [("grant_type", JWT_BEARER), ("grant_type", JWT_BEARER), ("assertion", "x")]}, 400,
     "invalid_request"),
    ("/oauth2/token", {"data": {"grant_type": JWT_BEARER, "assertion": BIG}}, 413, "invalid_request"),
    ("/oauth2/revoke", {"data": {}}, 400, "invalid_request"),
    ("/agent/event/notify", {"data": "a.b.c", "headers": {"Content-Type": "application/json"}}, 400,
     "invalid_request"),
    ("/agent/event/notify", {"data": "", "headers": {"Content-Type": "application/secevent+jwt"}}, 400,
     "invalid_request"),
    ("/agent/event/notify", {"data": "{\"not\": \"a jwt\"}", "headers": {"Content-Type": "application/secevent+jwt"}},
     400, "invalid_request"),
    ("/agent/event/notify", {"data": BIG, "headers": {"Content-Type": "application/secevent+jwt"}}, 400,
     "invalid_request"),
])
def test_a_bad_body_is_answered_with_its_json_error_and_writes_nothing(svc, path, kwargs, status, error):
    before = count_rows(svc.app)
    r = requests.post(svc.url + path, timeout=TIMEOUT, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    if path == "/agent/event/notify":  # RFC 8935 §2.3
        assert set(body) == {"err", "description"} and body["err"] == error
    elif path.startswith("/oauth2/"):  # RFC 6749 §5.2
        assert set(body) == {"error", "error_description"} and body["error"] == error
        assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    else:
        assert body["message"] and (error is None or body["error"] == error)
    assert count_rows(svc.app) == before


def test_a_set_from_an_untrusted_issuer_or_for_another_audience_is_refused(svc):
    stranger = Provider("stranger")
    try:
        for token, err in [(svc.set_token(stranger, "someone"), "invalid_issuer"),
                           (svc.set_token(svc.alpha, "someone", aud="http://elsewhere.example"), "invalid_audience"),
                           (svc.set_token(svc.alpha, "someone", exp=int(time.time()) - 3600),
                            "authentication_failed")]:
            r = requests.post(svc.url + "/agent/event/notify", data=token,
                              headers={"Content-Type": "application/secevent+jwt"}, timeout=TIMEOUT)
            assert r.status_code == 400 and r.json()["err"] == err, r.text
    finally:
        stranger.close()


# ---------------------------------------------------------------- key rotation while serving

def _kid(token):
    return jose_jwt.get_unverified_header(token)["kid"]


def test_a_key_rotation_while_serving_keeps_what_was_issued_and_signs_with_the_new_key(svc, tmp_path):
    # this server reads the key table on every signature (the default keeps it a minute per worker, so a
    # rotation reaches a running worker within that minute; the old key stays valid meanwhile either way)
    server = start_latest_server(str(tmp_path), svc.database_url, svc.mailbox, workers=2,
                                 AUTHMD_SIGNING_KEY_CACHE_SECONDS=0)
    try:
        agent = AgentAuthClient()
        before = agent.authenticate(server.url)
        old_assertion = agent.store.get(server.url)["identity"]["assertion"]
        old_kid = _kid(old_assertion)
        assert {k["kid"] for k in requests.get(server.url + "/.well-known/jwks.json", timeout=TIMEOUT).json()["keys"]} \
            == {old_kid}

        out = keys_cli(svc.database_url, "rotate")
        assert f"retired {old_kid}" in out
        new_kid = out.split("new active key ", 1)[1].split(";")[0].strip()
        assert new_kid != old_kid
        listed = keys_cli(svc.database_url, "list")
        assert any(line.startswith(old_kid) and "retired" in line and "published until" in line
                   for line in listed.splitlines())

        for _ in range(4):  # every worker
            assert requests.get(server.url + "/api/resource", timeout=TIMEOUT,
                                headers={"Authorization": "Bearer " + before["access_token"]}).status_code == 200
            minted = requests.post(server.url + "/oauth2/token", timeout=TIMEOUT,
                                   data={"grant_type": JWT_BEARER, "assertion": old_assertion})
            assert minted.status_code == 200, minted.text
            fresh = AgentAuthClient()
            fresh.authenticate(server.url)
            assert _kid(fresh.store.get(server.url)["identity"]["assertion"]) == new_kid
            published = requests.get(server.url + "/.well-known/jwks.json", timeout=TIMEOUT).json()["keys"]
            assert {k["kid"] for k in published} == {old_kid, new_kid}
    finally:
        server.stop()
