"""Bad input (spec §2, §6): every agent endpoint answers JSON {"error","message"} with the right 4xx, never HTML
or a traceback, and writes nothing."""
import json

import pytest

from tests.conftest import count_rows

ENDPOINTS = ["/agent/auth", "/agent/auth/claim", "/agent/auth/claim/attempt/challenge",
             "/agent/auth/claim/complete"]


@pytest.fixture
def before(app):
    return count_rows(app)


def check(app, before, r, status, error=None):
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:300])
    assert r.mimetype == "application/json"
    body = r.get_json()
    assert set(body) == {"error", "message"} and isinstance(body["message"], str) and body["message"]
    if error:
        assert body["error"] == error
    text = r.get_data(as_text=True)
    assert "Traceback" not in text and "<html" not in text.lower()
    assert count_rows(app) == before
    return body


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe\x00", b'{"type": "anonymous",}', b"null"])
def test_non_json_is_invalid_request(app, client, before, path, raw):
    r = client.post(path, data=raw, content_type="application/json")
    check(app, before, r, 400, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                   "application/jsonx", "text/json"])
def test_wrong_content_type_is_415(app, client, before, path, ctype):
    kw = {"data": json.dumps({"type": "anonymous", "requested_credential_type": "api_key"})}
    if ctype:
        kw["content_type"] = ctype
    check(app, before, client.post(path, **kw), 415, "unsupported_media_type")


def test_json_with_charset_is_fine(client):
    r = client.post("/agent/auth", data=json.dumps({"type": "anonymous", "requested_credential_type": "api_key"}),
                    content_type="application/json; charset=utf-8")
    assert r.status_code == 200


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("value", [[], [{"type": "anonymous"}], "anonymous", 42, True, 1.5])
def test_non_object_json_is_invalid_request(app, client, before, path, value):
    check(app, before, client.post(path, json=value), 400, "invalid_request")


REGISTRATION_BAD = [
    {},
    {"requested_credential_type": "api_key"},
    {"type": None},
    {"type": 1},
    {"type": ["anonymous"]},
    {"type": {"x": 1}},
    {"type": ""},
    {"type": "x" * 41},
    {"type": "Anonymous"},
    {"type": "password"},
    {"type": "anonymous", "requested_credential_type": 7},
    {"type": "anonymous", "requested_credential_type": ""},
    {"type": "identity_assertion"},
    {"type": "identity_assertion", "assertion_type": "verified_email"},
    {"type": "identity_assertion", "assertion": "a@example.com"},
    {"type": "identity_assertion", "assertion_type": "saml", "assertion": "a@example.com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "not-an-email"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a@"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "@example.com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a b@example.com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a@example..com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a\x00b@example.com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a\ud800@example.com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a\n@example.com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "x" * 310 + "@example.com"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": ["a@example.com"]},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a@example.com",
     "requested_credential_type": {"t": 1}},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a" * 20000},
]


@pytest.mark.parametrize("body", REGISTRATION_BAD)
def test_bad_registration_bodies_are_invalid_request(app, client, before, body):
    check(app, before, client.post("/agent/auth", json=body), 400, "invalid_request")


@pytest.mark.parametrize("body", [
    {"type": "anonymous", "requested_credential_type": "access_token"},
    {"type": "anonymous", "requested_credential_type": "refresh_token"},
    {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a@example.com",
     "requested_credential_type": "id_token"},
])
def test_unsupported_credential_type(app, client, before, body):
    check(app, before, client.post("/agent/auth", json=body), 400, "unsupported_credential_type")


def test_id_jag_without_a_trusted_issuer_is_issuer_not_enabled(app, client, before, logs):
    body = {"type": "identity_assertion", "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
            "assertion": "a.b.c", "requested_credential_type": "access_token"}
    r = client.post("/agent/auth", json=body)
    assert r.status_code == 400 and r.get_json()["error"] == "issuer_not_enabled"
    # junk (a token that does not parse, or names no issuer known here) costs no audit row: it is counted
    # in the log, as on the revocation endpoint
    assert count_rows(app) == before
    assert any("assertion.rejected error=issuer_not_enabled kind=id_jag ×1" in r.getMessage() for r in logs.records)


def test_id_jag_junk_writes_no_row_but_a_trusted_issuers_refused_token_does(app, client, before, provider,
                                                                           make_provider):
    from tests.fixtures.flows import audit_rows
    from tests.fixtures.provider import trust
    trust(app, provider)
    stranger = make_provider("stranger")
    before = count_rows(app)

    def send(token):
        return client.post("/agent/auth", json={"type": "identity_assertion", "assertion": token,
                                                "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
                                                "requested_credential_type": "access_token"})
    assert send("x.y.z").get_json()["error"] == "invalid_request"
    assert send(stranger.id_jag()).get_json()["error"] == "invalid_issuer"
    assert count_rows(app) == before
    assert send(provider.id_jag(key=stranger.keys[0])).get_json()["error"] == "invalid_signature"
    assert [(e["data"], e["iss"]) for e in audit_rows(app, "assertion.rejected")] == [
        ({"error": "invalid_signature", "kind": "id_jag"}, provider.issuer)]


def test_extra_fields_are_ignored(client):
    r = client.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key",
                                         "future_field": {"x": [1, 2]}})
    assert r.status_code == 200


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bodies_over_64_kib_are_413(app, client, before, path):
    big = json.dumps({"type": "anonymous", "requested_credential_type": "api_key", "pad": "x" * (64 * 1024)})
    check(app, before, client.post(path, data=big, content_type="application/json"), 413, "request_too_large")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_big_bodies_with_the_wrong_type_are_still_refused(app, client, before, path):
    r = client.post(path, data="x" * (65 * 1024), content_type="text/plain")
    check(app, before, r, 413, "request_too_large")


@pytest.mark.parametrize("path", ["/agent/nope", "/agent/auth/claim/nope", "/api/nope", "/api/",
                                  "/.well-known/nope", "/.well-known/openid-configuration", "/agent/auth/"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_paths_are_json_404(app, client, before, path, method):
    check(app, before, client.open(path, method=method, json={}), 404, "not_found")


@pytest.mark.parametrize("path,method", [(p, m) for p in ENDPOINTS for m in ("GET", "PUT", "DELETE", "PATCH")] + [
    ("/api/resource", "DELETE"), ("/api/resource", "PUT"), ("/.well-known/oauth-protected-resource", "POST"),
    ("/.well-known/oauth-authorization-server", "DELETE")])
def test_wrong_methods_are_json_405(app, client, before, path, method):
    r = client.open(path, method=method)
    check(app, before, r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"] or "GET" in r.headers["Allow"]


def test_the_claim_page_answers_html_not_json(client):
    r = client.put("/agent/auth/claim/view")
    assert r.status_code == 405 and r.mimetype == "text/html"


def test_an_unexpected_error_is_json_500_without_a_traceback(make_app):
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret internals")

    r = app.test_client().get("/api/boom")
    assert r.status_code == 500 and r.mimetype == "application/json"
    assert r.get_json()["error"] == "server_error" and "secret internals" not in r.get_data(as_text=True)
    assert int(r.headers["Retry-After"]) > 0


def test_control_characters_in_the_user_agent_are_dropped(app, client):
    """A NUL would make PostgreSQL refuse the row (500); a newline would forge lines in the text mail."""
    from tests.fixtures.flows import audit_rows
    ua = {"HTTP_USER_AGENT": "Agent\x00/1\r\nInjected: line\x7f" + "x" * 400}
    r = client.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"},
                    environ_base=ua)
    assert r.status_code == 200, r.get_data(as_text=True)
    reg = r.get_json()
    r = client.post("/agent/auth/claim", json={"claim_token": reg["claim_token"], "email": "ua@example.com"},
                    environ_base=ua)
    assert r.status_code == 200
    rows = audit_rows(app)
    assert rows and all(e["user_agent"].startswith("Agent/1Injected: line") for e in rows)
    assert all(len(e["user_agent"]) <= 300 for e in rows)


def nested(depth: int, body: dict | None = None) -> str:
    """A JSON object whose field "x" nests arrays so that the whole body is `depth` levels deep."""
    text = json.dumps(body or {"type": "anonymous", "requested_credential_type": "api_key"})
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return text[:-1] + ', "x": ' + inner + "}"


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("depth", [33, 40, 966, 970, 5000])
def test_bodies_nested_deeper_than_32_are_invalid_request(app, client, before, path, depth):
    """The parser never recurses that deep: the depth is counted first (a 970-deep body was a 500 with a
    traceback; a 966-deep one registered an agent past every rate limit)."""
    body = check(app, before, client.post(path, data=nested(depth), content_type="application/json"),
                 400, "invalid_request")
    assert "32" in body["message"]


def test_a_body_nested_32_deep_is_accepted(client):
    assert client.post("/agent/auth", data=nested(32), content_type="application/json").status_code == 200


@pytest.mark.parametrize("text", ['{"type": "anonymous", "x": "' + "[" * 5000 + '"}',
                                  '{"type": "anonymous", "x": "\\"' + "{" * 5000 + '"}'])
def test_brackets_inside_strings_do_not_count(client, text):
    body = json.loads(text)
    body["requested_credential_type"] = "api_key"
    assert client.post("/agent/auth", data=json.dumps(body), content_type="application/json").status_code == 200


@pytest.mark.parametrize("raw", [b'{"type": "anonymous", "n": NaN}', b'{"type": "anonymous", "n": Infinity}',
                                 b'{"type": "anonymous", "n": ' + b"9" * 5000 + b"}"])
def test_non_json_numbers_are_invalid_request(app, client, before, raw):
    check(app, before, client.post("/agent/auth", data=raw, content_type="application/json"), 400, "invalid_request")


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("path", ["/nope", "/console/nope", "/portal/nope/deeper", "/auth.md/x", "/static/nope.css"])
@pytest.mark.parametrize("how", [{"headers": {"Accept": "application/json"}},
                                 {"headers": {"Accept": "application/json, text/html;q=0.5"}},
                                 {"method": "POST", "json": {"type": "anonymous"}},
                                 {"method": "POST", "data": "{}", "content_type": "application/problem+json"}])
def test_any_unknown_path_answers_json_not_found_to_a_json_client(app, client, before, path, how):
    how = dict(how)
    method = how.pop("method", "GET")
    r = client.open(path, method=method, **how)
    if path.startswith("/static/") and method == "POST":
        check(app, before, r, 405, "method_not_allowed")  # the static route exists, for GET only
    else:
        check(app, before, r, 404, "not_found")


@pytest.mark.parametrize("accept", [None, BROWSER_ACCEPT, "*/*", "text/html, application/json"])
def test_an_unknown_path_is_an_html_page_for_a_browser(client, accept):
    r = client.get("/nope", headers={"Accept": accept} if accept else {})
    assert r.status_code == 404 and r.mimetype == "text/html"


def test_a_wrong_method_answers_json_to_a_json_client_anywhere(app, client, before):
    r = client.put("/console/login", headers={"Accept": "application/json"})
    check(app, before, r, 405, "method_not_allowed")
    assert "GET" in r.headers["Allow"]
    r = client.put("/console/login", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 405 and r.mimetype == "text/html"


def one_style(text: str) -> bool:
    return text == json.dumps(json.loads(text), separators=(",", ":")) + "\n"


def test_every_agent_facing_answer_has_one_json_style(make_app, client):
    """Compact (jsonify's production form), keys in the order written, everywhere: the hot path and the
    metadata included, and in debug mode too."""
    debug = make_app(DEBUG=True)
    debug.debug = True
    for c in (client, debug.test_client()):
        reg = c.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"})
        answers = [reg,
                   c.get("/api/resource", headers={"Authorization": "Bearer " + reg.get_json()["credential"]}),
                   c.get("/api/resource"),
                   c.get("/.well-known/oauth-protected-resource"),
                   c.get("/.well-known/oauth-authorization-server"),
                   c.post("/agent/auth", json={}),
                   c.get("/nope", headers={"Accept": "application/json"}),
                   c.get("/healthz")]
        for r in answers:
            assert r.mimetype == "application/json", r.request.path
            assert one_style(r.get_data(as_text=True)), (r.request.path, r.get_data(as_text=True)[:200])
        assert list(answers[-3].get_json()) == ["error", "message"]
        assert list(answers[4].get_json())[0] == "issuer"


def test_the_latest_protocols_and_the_resource_servers_answers_are_compact_too(client, resource_server):
    """The same style where a view writes its JSON itself (introspection, forward auth, the JWKS) and on the
    latest protocol's endpoints (a trailing newline aside: jsonify adds one, a hand-written body need not)."""
    reg = client.post("/agent/identity", json={"type": "anonymous"})
    token = client.post("/oauth2/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                               "assertion": reg.get_json()["identity"]["assertion"]})
    at = token.get_json()["access_token"]
    answers = [reg, token,
               client.post("/oauth2/token", data={"grant_type": "password"}),
               client.post("/oauth2/introspect", data={"token": at}, headers=resource_server.basic),
               client.post("/oauth2/introspect", data={"token": "at_unknown"}, headers=resource_server.basic),
               client.get("/auth/forward", headers={"Authorization": "Bearer " + at}),
               client.get("/.well-known/jwks.json")]
    for r in answers:
        text = r.get_data(as_text=True)
        assert r.mimetype == "application/json", r.request.path
        assert text.rstrip("\n") == json.dumps(json.loads(text), separators=(",", ":")), (r.request.path, text[:200])
