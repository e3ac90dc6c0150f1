"""Rate limits (spec §6): per IP, per email for claim mail, per registration, service-wide; 429 JSON; fail open."""
import json
import logging
import os
import socket

import pytest

from authmd.extensions import db
from authmd.models import Registration

ANON = {"type": "anonymous", "requested_credential_type": "api_key"}


def email_reg(addr):
    return {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": addr,
            "requested_credential_type": "api_key"}


@pytest.fixture
def limited(app, make_app):
    """An app with rate limits on (the shared `app` fixture wiped the data; this one counts)."""
    def build(**config):
        return make_app(RATELIMIT_ENABLED=True, **config)
    return build


def post(client, path, body, ip="10.0.0.1", **kw):
    return client.post(path, json=body, environ_base={"REMOTE_ADDR": ip}, **kw)


def assert_rate_limited(resp):
    assert resp.status_code == 429
    assert resp.get_json()["error"] == "rate_limited"
    assert resp.get_json()["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 3600


def test_anonymous_registrations_are_limited_to_five_an_hour_per_ip(limited):
    client = limited().test_client()
    for _ in range(5):
        assert post(client, "/agent/auth", ANON).status_code == 200
    before = db_count(client.application)
    assert_rate_limited(post(client, "/agent/auth", ANON))
    assert db_count(client.application) == before  # a refused request changes nothing
    assert post(client, "/agent/auth", ANON, ip="10.0.0.2").status_code == 200
    # identity_assertion registrations count on their own budget (60/h)
    assert post(client, "/agent/auth", email_reg("ada@example.com")).status_code == 200


def db_count(app):
    with app.app_context():
        return db.session.execute(db.select(db.func.count()).select_from(Registration)).scalar()


def test_identity_assertion_registrations_have_their_own_per_ip_limit(limited):
    client = limited(RATELIMIT_ASSERTION_PER_IP="3/hour").test_client()
    for i in range(3):
        assert post(client, "/agent/auth", email_reg(f"u{i}@example.com")).status_code == 200
    assert_rate_limited(post(client, "/agent/auth", email_reg("u9@example.com")))
    assert post(client, "/agent/auth", ANON).status_code == 200


def test_service_wide_limit_counts_every_ip(limited):
    client = limited(RATELIMIT_ANONYMOUS_GLOBAL="3/hour").test_client()
    for i in range(3):
        assert post(client, "/agent/auth", ANON, ip=f"10.0.1.{i}").status_code == 200
    assert_rate_limited(post(client, "/agent/auth", ANON, ip="10.0.1.99"))
    # the identity_assertion budget is separate
    assert post(client, "/agent/auth", email_reg("x@example.com"), ip="10.0.1.98").status_code == 200


def test_invalid_bodies_do_not_crash_the_limiter(limited):
    client = limited().test_client()
    assert client.post("/agent/auth", data="not json", content_type="application/json").status_code == 400
    assert client.post("/agent/auth", json=["a"]).status_code == 400
    assert client.post("/agent/auth", data=b"x" * 70000, content_type="application/json").status_code == 413


def test_claim_mail_is_limited_per_address_across_endpoints(limited):
    client = limited(RATELIMIT_CLAIM_MAIL_PER_EMAIL="3/hour").test_client()
    assert post(client, "/agent/auth", email_reg("ada@example.com")).status_code == 200
    token = post(client, "/agent/auth", ANON, ip="10.0.0.7").get_json()["claim_token"]
    token2 = post(client, "/agent/auth", ANON, ip="10.0.0.8").get_json()["claim_token"]
    assert post(client, "/agent/auth/claim", {"claim_token": token, "email": "ada@example.com"},
                ip="10.0.2.1").status_code == 200
    assert post(client, "/agent/auth/claim", {"claim_token": token2, "email": "ADA@example.com"},
                ip="10.0.2.2").status_code == 200
    # the fourth mail to the same address, from yet another IP, is refused on either endpoint
    assert_rate_limited(post(client, "/agent/auth/claim", {"claim_token": token, "email": "ada@example.com"},
                             ip="10.0.2.3"))
    assert_rate_limited(post(client, "/agent/auth", email_reg("ada@example.com"), ip="10.0.2.4"))
    assert post(client, "/agent/auth/claim", {"claim_token": token, "email": "bob@example.com"},
                ip="10.0.2.5").status_code == 200


def test_claim_is_limited_per_registration_and_per_ip(limited):
    client = limited(RATELIMIT_CLAIM_PER_REGISTRATION="2/hour", RATELIMIT_CLAIM_PER_IP="4/hour").test_client()
    t1 = post(client, "/agent/auth", ANON, ip="10.0.3.1").get_json()["claim_token"]
    t2 = post(client, "/agent/auth", ANON, ip="10.0.3.2").get_json()["claim_token"]
    for i in range(2):
        assert post(client, "/agent/auth/claim", {"claim_token": t1, "email": f"a{i}@example.com"},
                    ip=f"10.0.4.{i}").status_code == 200
    assert_rate_limited(post(client, "/agent/auth/claim", {"claim_token": t1, "email": "a9@example.com"},
                             ip="10.0.4.9"))
    for i in range(2):
        assert post(client, "/agent/auth/claim", {"claim_token": t2, "email": f"b{i}@example.com"},
                    ip="10.0.5.5").status_code == 200
    assert post(client, "/agent/auth/claim", {"claim_token": "clm_unknown", "email": "c@example.com"},
                ip="10.0.5.5").status_code == 401
    assert post(client, "/agent/auth/claim", {"claim_token": "clm_unknown2", "email": "c@example.com"},
                ip="10.0.5.5").status_code == 401
    assert_rate_limited(post(client, "/agent/auth/claim", {"claim_token": "clm_x", "email": "d@example.com"},
                             ip="10.0.5.5"))


def test_complete_and_challenge_are_limited(limited):
    client = limited(RATELIMIT_COMPLETE_PER_REGISTRATION="3/hour", RATELIMIT_CHALLENGE_PER_IP="2/hour").test_client()
    t1 = post(client, "/agent/auth", ANON).get_json()["claim_token"]
    for i in range(3):
        r = post(client, "/agent/auth/claim/complete", {"claim_token": t1, "otp": "000000"}, ip=f"10.0.6.{i}")
        assert r.status_code == 400 and r.get_json()["error"] == "otp_not_generated"
    assert_rate_limited(post(client, "/agent/auth/claim/complete", {"claim_token": t1, "otp": "000000"},
                             ip="10.0.6.9"))
    for _ in range(2):
        r = post(client, "/agent/auth/claim/attempt/challenge", {"claim_attempt_token": "cvt_nope"})
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_request", r.get_data(as_text=True)
    assert_rate_limited(post(client, "/agent/auth/claim/attempt/challenge", {"claim_attempt_token": "cvt_nope"}))


def test_limits_are_off_when_disabled(make_app, app):
    client = make_app(RATELIMIT_ENABLED=False).test_client()
    for _ in range(7):
        assert post(client, "/agent/auth", ANON).status_code == 200


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_limits_fail_open_with_a_log_line_when_the_store_is_down(limited):
    handler = Collect()
    logger = logging.getLogger("authmd.ratelimit")
    logger.addHandler(handler)
    try:
        client = limited(RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{closed_port()}/4").test_client()
        for _ in range(7):  # more than the 5/h the store would have enforced
            assert post(client, "/agent/auth", ANON).status_code == 200
    finally:
        logger.removeHandler(handler)
    assert any("rate-limit store unreachable" in line and "failing open" in line for line in handler.lines)


def redis_up(db_number=4) -> bool:
    try:
        import redis
        redis.Redis(host="127.0.0.1", port=6379, db=db_number, socket_connect_timeout=1).ping()
        return True
    except Exception:  # noqa: BLE001
        return False


def test_redis_store_counts(limited):
    if not redis_up():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not answering on 127.0.0.1:6379 (.ci/run starts it; under CI this must not be skipped)")
        pytest.skip("Redis is not answering on 127.0.0.1:6379")
    import redis
    redis.Redis(host="127.0.0.1", port=6379, db=4).flushdb()
    client = limited(RATELIMIT_STORAGE_URI="redis://127.0.0.1:6379/4").test_client()
    for _ in range(5):
        assert post(client, "/agent/auth", ANON, ip="10.9.9.9").status_code == 200
    assert_rate_limited(post(client, "/agent/auth", ANON, ip="10.9.9.9"))
    assert post(client, "/agent/auth", email_reg("ada@example.com"), ip="10.9.9.9").status_code == 200
    keys = [k.decode() for k in redis.Redis(host="127.0.0.1", port=6379, db=4).keys("*")]
    assert any("10.9.9.9" in k for k in keys)
    assert not any("ada" in k or "@" in k for k in keys)  # addresses and tokens are keyed by digest only


def nested(depth: int, body: dict) -> str:
    text = json.dumps(body)
    return text[:-1] + ', "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def post_raw(client, path, text, ip="10.0.0.1"):
    return client.post(path, data=text, content_type="application/json", environ_base={"REMOTE_ADDR": ip})


def test_nested_bodies_neither_pass_nor_switch_the_limits_off(limited):
    """A body nested ~966 deep once overflowed the stack in the limiter's parse (deeper than the view's):
    Flask-Limiter swallowed the error and skipped every limit, while the view registered the agent."""
    client = limited().test_client()
    for i, depth in enumerate([40, 966, 970, 5000, 966]):
        assert post(client, "/agent/auth", ANON).status_code == 200
        r = post_raw(client, "/agent/auth", nested(depth, ANON))
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_request", (depth, r.status_code)
    assert db_count(client.application) == 5
    assert_rate_limited(post(client, "/agent/auth", ANON))
    assert db_count(client.application) == 5


def test_claim_mail_with_a_nested_body_is_refused_and_the_cap_still_holds(limited):
    client = limited(RATELIMIT_CLAIM_MAIL_PER_EMAIL="2/hour").test_client()
    for i in range(2):
        assert post(client, "/agent/auth", email_reg("cap@example.com"), ip=f"10.0.7.{i}").status_code == 200
    r = post_raw(client, "/agent/auth", nested(966, email_reg("cap@example.com")), ip="10.0.7.9")
    assert r.status_code == 400
    assert_rate_limited(post(client, "/agent/auth", email_reg("cap@example.com"), ip="10.0.7.8"))


def outbox_addresses(app):
    from authmd.models import OutboxMail
    with app.app_context():
        return [r for r in db.session.execute(db.select(OutboxMail.to_addr)).scalars()]


@pytest.mark.parametrize("spellings", [
    ["bomb@example.com", "bomb@\uff45xample.com", "BOMB@EXAMPLE.COM", "Bomb@Exampl\uff25.Com"],  # full-width e / E
    ["bomb@ex\u00e4mple.com", "bomb@xn--exmple-cua.com", "BOMB@EX\u00c4MPLE.COM", "bomb@EXA\u0308MPLE.com"],  # IDN
])
def test_the_claim_mail_cap_counts_every_spelling_of_an_address_as_one(app, limited, spellings):
    """The mail goes to users.normalize_email's form; the per-address counter keys on the same form."""
    client = limited(RATELIMIT_CLAIM_MAIL_PER_EMAIL="3/hour").test_client()
    sent = []
    for i, spelling in enumerate(spellings[:3]):
        token = post(client, "/agent/auth", ANON, ip=f"10.0.8.{i}").get_json()["claim_token"]
        r = post(client, "/agent/auth/claim", {"claim_token": token, "email": spelling}, ip=f"10.0.9.{i}")
        assert r.status_code == 200, r.get_json()
        sent.append(spelling)
    token = post(client, "/agent/auth", ANON, ip="10.0.8.9").get_json()["claim_token"]
    assert_rate_limited(post(client, "/agent/auth/claim", {"claim_token": token, "email": spellings[3]},
                             ip="10.0.9.9"))
    assert_rate_limited(post(client, "/agent/auth", email_reg(spellings[3]), ip="10.0.9.8"))
    assert len(set(outbox_addresses(client.application))) == 1  # one mailbox was written to, three times


def test_an_address_that_does_not_normalise_has_no_counter_and_is_refused(limited):
    client = limited(RATELIMIT_CLAIM_MAIL_PER_EMAIL="1/hour").test_client()
    for i in range(3):
        r = post(client, "/agent/auth", email_reg(" bomb@example.com "), ip=f"10.0.10.{i}")
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"


def test_each_app_has_its_own_limiter(limited, make_app):
    """Two apps in one process: the second one's settings (here: limits off, another store) leave the
    first one's limits and counters alone (a module-level limiter was rebound to the newest app)."""
    first = limited(RATELIMIT_ANONYMOUS_PER_IP="2/hour").test_client()
    for _ in range(2):
        assert post(first, "/agent/auth", ANON).status_code == 200
    second = make_app(RATELIMIT_ENABLED=False).test_client()
    third = limited(RATELIMIT_ANONYMOUS_PER_IP="3/hour").test_client()
    assert_rate_limited(post(first, "/agent/auth", ANON))
    for _ in range(4):
        assert post(second, "/agent/auth", ANON).status_code == 200
    for _ in range(3):
        assert post(third, "/agent/auth", ANON).status_code == 200
    assert_rate_limited(post(third, "/agent/auth", ANON))
    assert_rate_limited(post(first, "/agent/auth", ANON))


def test_console_sign_in_pages_keep_their_per_ip_limits(limited):
    # (CSRF off: a POST without a valid token is refused before the view, and its limit, is reached)
    client = limited(RATELIMIT_CONSOLE_LOGIN_PER_IP="2/hour", RATELIMIT_PORTAL_LOGIN_PER_IP="1/hour",
                     WTF_CSRF_ENABLED=False).test_client()
    for _ in range(2):
        assert client.post("/console/login", data={}, environ_base={"REMOTE_ADDR": "10.0.11.1"}).status_code == 400
    assert client.post("/console/login", data={}, environ_base={"REMOTE_ADDR": "10.0.11.1"}).status_code == 429
    assert client.get("/console/login", environ_base={"REMOTE_ADDR": "10.0.11.1"}).status_code == 200  # POST only
    assert client.post("/portal/login", data={}, environ_base={"REMOTE_ADDR": "10.0.11.1"}).status_code == 400
    assert client.post("/portal/login", data={}, environ_base={"REMOTE_ADDR": "10.0.11.1"}).status_code == 429


def test_a_limit_that_cannot_be_parsed_stops_the_app_at_start(make_app):
    with pytest.raises(ValueError, match="RATELIMIT_CLAIM_PER_IP"):
        make_app(RATELIMIT_ENABLED=True, RATELIMIT_CLAIM_PER_IP="5 per fortnight")


def test_a_limit_check_that_fails_for_another_reason_than_its_store_refuses_the_request(limited):
    """Only a store that is down fails open; any other error inside a check is a bug and must not switch
    the limits off for that request."""
    class Broken:  # a limit value whose evaluation raises, as a bug in a limit callable would
        def __bool__(self):
            raise RuntimeError("bug")

    app = limited(PROPAGATE_EXCEPTIONS=False)
    app.config["RATELIMIT_ANONYMOUS_PER_IP"] = Broken()
    handler = Collect()
    logger = logging.getLogger("authmd.ratelimit")
    logger.addHandler(handler)
    try:
        r = post(app.test_client(), "/agent/auth", ANON)
    finally:
        logger.removeHandler(handler)
    assert r.status_code == 500 and r.get_json()["error"] == "server_error"
    assert db_count(app) == 0
    assert any("not a store error" in line for line in handler.lines)


def test_ipv6_clients_are_counted_by_their_64(limited):
    """One host or LAN gets a whole /64: counting single IPv6 addresses would give it 2^64 budgets."""
    client = limited(RATELIMIT_ANONYMOUS_PER_IP="2/hour").test_client()
    assert post(client, "/agent/auth", ANON, ip="2001:db8:1:2::1").status_code == 200
    assert post(client, "/agent/auth", ANON, ip="2001:db8:1:2:ffff:ffff:ffff:fffe").status_code == 200
    assert_rate_limited(post(client, "/agent/auth", ANON, ip="2001:db8:1:2:abcd::99"))
    assert_rate_limited(post(client, "/agent/auth", ANON, ip="2001:DB8:1:2:0:0:0:7"))  # another spelling
    assert post(client, "/agent/auth", ANON, ip="2001:db8:1:3::1").status_code == 200  # the next /64
    with client.application.app_context():  # the registration itself keeps the full address
        ips = set(db.session.execute(db.select(Registration.ip)).scalars())
    assert {"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:3::1"} <= ips


def test_ipv4_mapped_ipv6_counts_as_the_ipv4_address_and_ipv4_is_unchanged(limited):
    client = limited(RATELIMIT_ANONYMOUS_PER_IP="2/hour").test_client()
    assert post(client, "/agent/auth", ANON, ip="10.0.12.1").status_code == 200
    assert post(client, "/agent/auth", ANON, ip="::ffff:10.0.12.1").status_code == 200
    assert_rate_limited(post(client, "/agent/auth", ANON, ip="10.0.12.1"))
    assert post(client, "/agent/auth", ANON, ip="10.0.12.2").status_code == 200  # no grouping for IPv4


def test_ipv6_grouping_holds_for_every_per_ip_limit(limited):
    client = limited(RATELIMIT_CLAIM_PER_IP="1/hour", RATELIMIT_COMPLETE_PER_IP="1/hour",
                     RATELIMIT_CHALLENGE_PER_IP="1/hour", RATELIMIT_REVOKE_PER_IP="1/hour",
                     RATELIMIT_CONSOLE_LOGIN_PER_IP="1/hour", WTF_CSRF_ENABLED=False).test_client()
    token = post(client, "/agent/auth", ANON, ip="10.0.13.1").get_json()["claim_token"]
    calls = [(200, lambda ip: post(client, "/agent/auth/claim", {"claim_token": token, "email": "v6@example.com"},
                                   ip=ip)),
             (401, lambda ip: post(client, "/agent/auth/claim/complete", {"claim_token": "clm_x", "otp": "1"}, ip=ip)),
             (400, lambda ip: post(client, "/agent/auth/claim/attempt/challenge", {"claim_attempt_token": "cvt_x"},
                                   ip=ip)),
             (400, lambda ip: client.post("/agent/auth/revoke", data="x.y.z", content_type="application/logout+jwt",
                                          environ_base={"REMOTE_ADDR": ip})),
             (400, lambda ip: client.post("/console/login", data={}, environ_base={"REMOTE_ADDR": ip}))]
    for status, call in calls:
        assert call("2001:db8:5:6::1").status_code == status
        assert call("2001:db8:5:6::2").status_code == 429


def test_nested_bodies_under_gunicorn_neither_pass_nor_lift_the_limits(gunicorn_server, schema):
    """The review's reproduction, against a real gunicorn worker (its stack, not the test client's): bodies
    nested 966 and 970 deep answered 200 past the limit and 500 with a traceback."""
    import requests
    server = gunicorn_server(schema, workers=1, AUTHMD_RATELIMIT_ENABLED="1",
                             AUTHMD_RATELIMIT_ANONYMOUS_PER_IP="3/hour")
    url = server.url + "/agent/auth"
    headers = {"Content-Type": "application/json"}
    statuses = []
    for depth in (40, 966, 970, 5000):
        r = requests.post(url, data=nested(depth, ANON), headers=headers, timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (depth, r.status_code, r.text[:200])
        statuses.append(requests.post(url, json=ANON, timeout=10).status_code)
    assert statuses == [200, 200, 200, 429]
    assert "Traceback" not in server.output()
