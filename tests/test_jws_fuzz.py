"""Fuzz: malformed JWS strings (bad base64, huge headers, nested JSON, wrong part counts) always get a
400 JSON answer from registration and from revocation - never a 500, never an HTML page."""
import base64
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fixtures.provider import trust

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
CODES = {"invalid_request", "invalid_signature", "invalid_issuer"}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)

headers = st.one_of(
    st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "jwk", "jku", "x5u", "b64", "zip"]), json_values,
                    max_size=6),
    st.fixed_dictionaries({"alg": st.sampled_from(["ES256", "RS256", "EdDSA", "none", "HS256", "PS256"]),
                           "typ": st.sampled_from(["oauth-id-jag+jwt", "logout+jwt", "JWT"]),
                           "kid": st.text(max_size=10)}),
    json_values)

segments = st.one_of(
    st.builds(lambda v: b64(json.dumps(v).encode()), json_values),
    st.builds(lambda v: b64(json.dumps(v).encode()), headers),
    st.builds(b64, st.binary(max_size=64)),
    st.text(alphabet="ABCabc012-_+/=.!é \x00", max_size=40),
    st.just(""),
    st.builds(lambda n: b64(("[" * n + "]" * n).encode()), st.integers(min_value=100, max_value=5000)),
    st.builds(lambda n: b64(json.dumps({"alg": "ES256", "typ": "oauth-id-jag+jwt", "pad": "x" * n}).encode()),
              st.integers(min_value=1000, max_value=20000)),
)

tokens = st.one_of(
    st.lists(segments, min_size=0, max_size=6).map(".".join),
    st.text(max_size=200),
    st.tuples(segments, segments, segments).map(".".join),
)


def _register(client, token):
    return client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                            "assertion": token, "requested_credential_type": "access_token"})


def _check(resp, token):
    if len(token.encode("utf-8", "surrogatepass")) > 64 * 1024 - 200 and resp.status_code == 413:  # §6: bodies over 64 KiB are refused first
        assert resp.status_code == 413 and resp.is_json and resp.json["error"] == "request_too_large"
        return
    assert resp.status_code == 400, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.is_json and resp.json["error"] in CODES and resp.json["message"]


@FUZZ
@given(token=tokens)
def test_registration_answers_400_json_to_any_malformed_jws(app, client, provider, token):
    if not app.config.get("_trusted"):
        trust(app, provider)
        app.config["_trusted"] = True
    _check(_register(client, token), token)


@FUZZ
@given(token=tokens, form=st.booleans())
def test_revocation_answers_400_json_to_any_malformed_jws(app, client, provider, token, form):
    if not app.config.get("_trusted"):
        trust(app, provider)
        app.config["_trusted"] = True
    if form:
        resp = client.post("/agent/auth/revoke", data={"logout_token": token})
    else:
        resp = client.post("/agent/auth/revoke", data=token.encode("utf-8", "surrogatepass"),
                           content_type="application/logout+jwt")
    _check(resp, token)


@FUZZ
@given(header=headers, payload=json_values)
def test_well_formed_but_wrong_tokens_from_a_trusted_issuer_answer_400_json(app, client, provider, header, payload):
    if not app.config.get("_trusted"):
        trust(app, provider)
        app.config["_trusted"] = True
    if isinstance(payload, dict):
        payload = {**payload, "iss": provider.issuer}
    token = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode()) + "." + b64(b"\x01" * 64)
    _check(_register(client, token), token)
