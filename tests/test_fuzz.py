"""Fuzz (hypothesis): malformed bodies at every agent endpoint always answer a JSON 4xx {"error","message"} and
change nothing in the database."""
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import count_rows

ENDPOINTS = ["/agent/auth", "/agent/auth/claim", "/agent/auth/claim/attempt/challenge",
             "/agent/auth/claim/complete"]
FIELDS = ["type", "requested_credential_type", "assertion_type", "assertion", "claim_token", "email",
          "claim_attempt_token", "otp"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)

# objects with the real field names and wrong or random values: the likeliest to get past the first checks
near_miss = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(json_values, st.sampled_from(["anonymous", "identity_assertion", "verified_email", "api_key",
                                            "access_token", "clm_x", "cvt_x", "123456", "a@b", "@", ""]),
              st.text(min_size=0, max_size=400)),
    max_size=6)

content_types = st.one_of(st.just("application/json"), st.sampled_from(
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/json; charset=latin-1",
     "multipart/form-data; boundary=x", "application/logout+jwt"]), st.text(max_size=30))


def assert_json_4xx(app, before, r):
    assert 400 <= r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:300])
    assert r.mimetype == "application/json"
    body = r.get_json()
    assert isinstance(body, dict) and set(body) == {"error", "message"}
    assert isinstance(body["error"], str) and isinstance(body["message"], str) and body["message"]
    assert count_rows(app) == before


def _valid_success(path, value):
    """The one well-formed body that may legitimately succeed: a real anonymous registration."""
    return (path == "/agent/auth" and isinstance(value, dict) and value.get("type") == "anonymous"
            and value.get("requested_credential_type") in (None, "api_key"))


@pytest.mark.parametrize("path", ENDPOINTS)
def test_random_json_values(app, client, path):
    before = count_rows(app)

    @SETTINGS
    @given(value=st.one_of(json_values, near_miss))
    def run(value):
        if _valid_success(path, value):
            return
        r = client.post(path, data=json.dumps(value), content_type="application/json")
        assert_json_4xx(app, before, r)

    run()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_random_bytes_and_content_types(app, client, path):
    before = count_rows(app)

    @SETTINGS
    @given(raw=st.binary(max_size=300), ctype=content_types)
    def run(raw, ctype):
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if _valid_success(path, value):
            return
        try:
            r = client.post(path, data=raw, headers={"Content-Type": ctype})
        except ValueError:  # a content type the test client itself cannot send (e.g. a newline)
            return
        assert_json_4xx(app, before, r)

    run()
