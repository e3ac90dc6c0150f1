"""authmd_resource with JWT access tokens (RFC 9068) from a live authmd under gunicorn: verified in the API's
process with the keys fetched from authmd's jwks_uri over HTTP, every check of the token refusing what it must,
and the trade-off: a JWT revoked at authmd is refused there at once but accepted here until it expires."""
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
import requests
from joserfc.jwk import ECKey

from authmd import keys
from authmd.extensions import db
from authmd.models import SigningKey
from authmd_resource import Client, Denied, Unavailable
from tests.fixtures.flows import set_settings
from tests.fixtures.gunicorn import ROOT, free_port
from tests.fixtures.provider import trust

from .conftest import ISSUER

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
RESOURCE = ISSUER + "/api/"  # authmd's RESOURCE under the gunicorn fixture
LEEWAY = 30

_PINNED: dict = {}


@pytest.fixture(autouse=True)
def pinned_key(app):
    """The same signing key row in every test of this module, although each test starts from an emptied
    database: the gunicorn workers keep the keys they read for up to a minute, and must sign with a key the
    table (and so every worker's JWKS) still has."""
    with app.app_context():
        if not _PINNED:
            row = keys.create()
            db.session.commit()
            _PINNED.update({c.key: getattr(row, c.key) for c in SigningKey.__table__.columns})
        else:
            db.session.add(SigningKey(**_PINNED))
            db.session.commit()
        keys.forget()
    return _PINNED["kid"]


@pytest.fixture
def jwt_live(live):
    set_settings(live.app, access_token_format="jwt")
    return live


class Counting:
    """An opener that remembers the URLs the helper asked (and asks them for real)."""

    def __init__(self):
        self.inner, self.urls = urllib.request.build_opener(), []

    def open(self, request, timeout=None):
        self.urls.append(request.full_url)
        return self.inner.open(request, timeout=timeout)

    def count(self, suffix: str) -> int:
        return sum(url.endswith(suffix) for url in self.urls)


class Frozen:
    """The helper's clock standing still until the test moves it (the one-minute limit is counted on it)."""

    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now

    def advance(self, seconds: float):
        self.now += seconds


def helper(live, **extra) -> Client:
    """A client that verifies JWTs with authmd's JWKS over HTTP; its introspection goes to authmd too."""
    return Client(**live.settings(**{"resource": RESOURCE, "jwks_uri": live.url + "/.well-known/jwks.json",
                                     **extra}))


def local_only(live, **extra) -> Client:
    """A client whose introspection endpoint answers nothing: what it accepts, it verified itself."""
    return helper(live, introspection_endpoint=f"http://127.0.0.1:{free_port()}/oauth2/introspect", timeout=2,
                  **extra)


def access_token(live, **form) -> tuple[dict, dict]:
    """(registration, token answer) over HTTP: /agent/identity anonymous, then /oauth2/token."""
    reg = requests.post(live.url + "/agent/identity", json={"type": "anonymous"}, timeout=10).json()
    r = requests.post(live.url + "/oauth2/token", timeout=10,
                      data={"grant_type": JWT_BEARER, "assertion": reg["identity"]["assertion"], **form})
    assert r.status_code == 200, r.text
    return reg, r.json()


def claims_of(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(live, claims: dict, typ: str = "at+jwt") -> str:
    """A token signed by authmd's own key (keys.sign, as authmd signs): what only authmd could make."""
    with live.app.test_request_context():
        return keys.sign(claims, typ)


def good_claims(live) -> dict:
    _, answer = access_token(live)
    return claims_of(answer["access_token"])


def refused(client, token, scopes=()):
    with pytest.raises(Denied) as denied:
        client.identify("Bearer " + token, scopes)
    assert (denied.value.status, denied.value.error) == (401, "invalid_token")


# ------------------------------------------------------------------ a live JWT

def test_a_jwt_is_verified_locally_and_says_what_introspection_says(jwt_live, pinned_key):
    reg, answer = access_token(jwt_live, resource=RESOURCE)
    token = answer["access_token"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "at+jwt", "alg": "ES256", "kid": pinned_key}
    opener = Counting()
    client = local_only(jwt_live, opener=opener)
    who = client.identify("Bearer " + token, ("api.read",))
    assert opener.count("/.well-known/jwks.json") == 1 and opener.count("/oauth2/introspect") == 0
    said = helper(jwt_live).introspect(token)  # authmd's own answer for the same token
    assert said["active"] is True and said["protocol"] == "latest"
    assert (who.sub, who.client_id, who.scopes, who.registration_type, who.protocol, who.exp) == (
        said["sub"], said["client_id"], tuple(said["scope"].split()), said["registration_type"], said["protocol"],
        said["exp"])
    assert who.sub == "registration:" + reg["id"] and who.registration_type == "anonymous"
    assert who.claims["aud"] == said["aud"] == RESOURCE and who.claims["iss"] == said["iss"] == ISSUER
    for _ in range(3):  # the keys are kept: no second fetch
        assert client.identify("Bearer " + token).sub == who.sub
    assert opener.count("/.well-known/jwks.json") == 1


def test_a_jwt_without_the_scope_is_403(jwt_live):
    token = access_token(jwt_live)[1]["access_token"]
    with pytest.raises(Denied) as denied:
        local_only(jwt_live).identify("Bearer " + token, ("api.write",))
    assert (denied.value.status, denied.value.error) == (403, "insufficient_scope")


def test_revoked_at_authmd_it_is_refused_there_at_once_and_accepted_here_until_exp(jwt_live):
    helper_clock = Frozen()
    token = access_token(jwt_live)[1]["access_token"]
    client = local_only(jwt_live, clock=helper_clock)
    assert client.identify("Bearer " + token).sub
    assert requests.post(jwt_live.url + "/oauth2/revoke", data={"token": token}, timeout=10).status_code == 200
    # authmd's own checks: refused at once
    assert helper(jwt_live).introspect(token) is None
    bearer = {"Authorization": "Bearer " + token}
    r = requests.get(jwt_live.url + "/auth/forward", headers=bearer, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert requests.get(jwt_live.url + "/api/resource", headers=bearer, timeout=10).status_code == 401
    # verified here: the documented trade-off, accepted until exp (plus the clock skew allowed)...
    exp = claims_of(token)["exp"]
    helper_clock.advance(exp + LEEWAY - 0.5 - helper_clock())
    assert client.identify("Bearer " + token).sub
    helper_clock.advance(0.5)  # ...and not a moment longer
    refused(client, token)


def test_opaque_credentials_still_go_to_introspection(jwt_live):
    opener = Counting()
    client = helper(jwt_live, opener=opener)
    v01 = jwt_live.register()["credential"]  # sk_…
    assert client.identify("Bearer " + v01).protocol == "v0.1"
    set_settings(jwt_live.app, access_token_format="opaque")
    at = access_token(jwt_live)[1]["access_token"]
    assert at.startswith("at_") and client.identify("Bearer " + at).protocol == "latest"
    assert opener.count("/oauth2/introspect") == 2 and opener.count("/.well-known/jwks.json") == 0


def test_local_jwt_off_sends_jwts_to_introspection_which_sees_a_revocation(jwt_live):
    token = access_token(jwt_live)[1]["access_token"]
    client = helper(jwt_live, local_jwt=False, cache_seconds=0)
    assert client.identify("Bearer " + token).protocol == "latest"
    requests.post(jwt_live.url + "/oauth2/revoke", data={"token": token}, timeout=10)
    refused(client, token)


# ------------------------------------------------------------------ each check of the token

def test_typ_must_be_at_jwt(jwt_live):
    claims = good_claims(jwt_live)
    client = local_only(jwt_live)
    assert client.identify("Bearer " + signed(jwt_live, claims)).sub  # the same claims as at+jwt pass
    for typ in ("JWT", "oauth-id-jag+jwt", "at+jwt+x"):
        refused(client, signed(jwt_live, claims, typ))
    assert client.identify("Bearer " + signed(jwt_live, claims, "application/AT+JWT")).sub  # RFC 9068 §4
    # authmd's own identity assertion is signed by the same key and names authmd: never an access token
    reg = requests.post(jwt_live.url + "/agent/identity", json={"type": "anonymous"}, timeout=10).json()
    refused(local_only(jwt_live, resource=ISSUER), reg["identity"]["assertion"])


def test_aud_must_be_this_api(jwt_live):
    token = access_token(jwt_live)[1]["access_token"]
    refused(local_only(jwt_live, resource="https://other-api.example/"), token)
    assert local_only(jwt_live, resource=RESOURCE.rstrip("/")).identify("Bearer " + token).sub  # final slash
    claims = good_claims(jwt_live)
    client = local_only(jwt_live)
    assert client.identify("Bearer " + signed(jwt_live, {**claims, "aud": ["https://x.example/", RESOURCE]})).sub
    for aud in (["https://x.example/"], None, 7):
        refused(client, signed(jwt_live, {**claims, "aud": aud}))


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", "es256"])
def test_only_es256_is_accepted(jwt_live, pinned_key, alg):
    claims = good_claims(jwt_live)
    signing_input = b64(json.dumps({"alg": alg, "typ": "at+jwt", "kid": pinned_key}).encode()) + "." + \
        b64(json.dumps(claims).encode())
    if alg == "HS256":  # the classic confusion: the public key as an HMAC secret
        secret = json.dumps(json.loads(_PINNED["public_jwk"]), sort_keys=True).encode()
        signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    elif alg == "none":
        signature = ""
    else:  # a real ES256 signature by authmd's key over a header naming another algorithm
        signature = _es256(jwt_live, signing_input)
    refused(local_only(jwt_live), signing_input + "." + signature)


def _es256(live, signing_input: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    with live.app.app_context():
        pem = keys._open(_PINNED["kid"], _PINNED["private_key"])  # authmd's private key, as keys.sign uses it
    r, s = decode_dss_signature(load_pem_private_key(pem, None).sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_exp_is_checked_with_a_small_leeway(jwt_live):
    helper_clock = Frozen()
    token = access_token(jwt_live)[1]["access_token"]
    client = local_only(jwt_live, clock=helper_clock)
    exp = claims_of(token)["exp"]
    helper_clock.advance(exp - helper_clock() + LEEWAY - 0.5)
    assert client.identify("Bearer " + token).sub
    helper_clock.advance(0.5)
    refused(client, token)
    claims = good_claims(jwt_live)
    for value in (None, "soon", True):
        refused(local_only(jwt_live), signed(jwt_live, {**claims, "exp": value}))


def test_nbf_and_iat_must_not_be_in_the_future(jwt_live):
    claims = good_claims(jwt_live)
    now = int(time.time())
    client = local_only(jwt_live)
    assert client.identify("Bearer " + signed(jwt_live, {**claims, "nbf": now - 5})).sub
    for changed in ({"nbf": now + 600}, {"iat": now + 600}, {"iat": None}, {"nbf": "now"}):
        refused(client, signed(jwt_live, {**claims, **changed}))


def test_iss_sub_and_client_id_are_checked(jwt_live):
    claims = good_claims(jwt_live)
    client = local_only(jwt_live)
    for changed in ({"iss": "https://evil.example"}, {"sub": None}, {"client_id": ""}, {"scope": ["api.read"]}):
        refused(client, signed(jwt_live, {**claims, **changed}))
    token = access_token(jwt_live)[1]["access_token"]
    refused(local_only(jwt_live, issuer="https://not-authmd.example"), token)


def test_a_tampered_token_is_refused(jwt_live):
    token = access_token(jwt_live)[1]["access_token"]
    head, payload, signature = token.split(".")
    more = b64(json.dumps({**claims_of(token), "scope": "api.read api.write"}).encode())
    client = local_only(jwt_live)
    for bad in (f"{head}.{more}.{signature}", f"{head}.{payload}.{signature[:-4]}AAAA", f"{head}.{payload}."):
        refused(client, bad)


def test_an_unknown_key_refetches_at_most_once_a_minute_then_asks_introspection(jwt_live):
    helper_clock = Frozen()
    claims = good_claims(jwt_live)
    stranger = ECKey.generate_key("P-256")
    from joserfc import jwt as joserfc_jwt
    forged = joserfc_jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "stranger"}, claims, stranger)
    opener = Counting()
    client = helper(jwt_live, opener=opener, clock=helper_clock)
    for _ in range(3):
        refused(client, forged)  # not a key authmd publishes; introspection says it is not authmd's token
    assert opener.count("/.well-known/jwks.json") == 1  # one fetch for the unknown kid, not three
    assert opener.count("/oauth2/introspect") == 1  # the inactive answer is cached
    good = access_token(jwt_live)[1]["access_token"]
    assert client.identify("Bearer " + good).sub  # authmd's key came with that fetch
    helper_clock.advance(59.9)
    refused(client, forged)
    assert opener.count("/.well-known/jwks.json") == 1 and opener.count("/oauth2/introspect") == 2
    helper_clock.advance(0.1)
    refused(client, forged)
    assert opener.count("/.well-known/jwks.json") == 2


# ------------------------------------------------------------------ key rotation (servers of its own)

@pytest.mark.slow
def test_after_a_rotation_the_old_key_verifies_until_exp_and_the_new_one_is_fetched(app, schema, gunicorn_server,
                                                                                   helper_clock):
    set_settings(app, access_token_format="jwt")
    before = gunicorn_server(schema, workers=1)
    rs = _resource_server(app)
    settings = {"issuer": ISSUER, "client_id": rs.client_id, "client_secret": rs.secret, "resource": RESOURCE,
                "clock": helper_clock}
    old_token = _token(before.url)
    opener = Counting()
    known = Client(**settings, jwks_uri=before.url + "/.well-known/jwks.json",
                   introspection_endpoint=f"http://127.0.0.1:{free_port()}/oauth2/introspect", opener=opener)
    assert known.identify("Bearer " + old_token).sub
    with app.app_context():
        new, retired = keys.rotate(actor_id="test")
        db.session.commit()
        new_kid = new.kid
    assert retired == [json.loads(base64.urlsafe_b64decode(old_token.split(".")[0] + "=="))["kid"]]
    after = gunicorn_server(schema, workers=1)  # a fresh worker: it signs with the new key at once
    new_token = _token(after.url)
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["kid"] == new_kid
    fresh = Client(**settings, jwks_uri=after.url + "/.well-known/jwks.json",
                   introspection_endpoint=f"http://127.0.0.1:{free_port()}/oauth2/introspect")
    assert fresh.identify("Bearer " + old_token).sub  # the retired key is still published
    assert fresh.identify("Bearer " + new_token).sub
    # the helper that knew only the old key fetches the set again for the new kid (its first fetch was the
    # only one so far, so this one is due) and verifies the new token locally
    known._jwt.keys.uri = after.url + "/.well-known/jwks.json"  # as a load balancer sends it to the fresh node
    helper_clock.advance(60)
    assert known.identify("Bearer " + new_token).sub
    assert opener.count("/.well-known/jwks.json") == 2 and opener.count("/oauth2/introspect") == 0


def _resource_server(app):
    from tests.fixtures.resource import add_resource_server
    return add_resource_server(app, "Rotation API")


def _token(url: str) -> str:
    reg = requests.post(url + "/agent/identity", json={"type": "anonymous"}, timeout=10).json()
    r = requests.post(url + "/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": reg["identity"]["assertion"]},
                      timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


# ------------------------------------------------------------------ frameworks and packaging

def test_the_example_api_and_a_fastapi_app_take_jwts(jwt_live, serve_wsgi, serve_asgi):
    from fastapi import Depends, FastAPI
    from authmd_resource import Identity
    from authmd_resource.starlette import Authmd as StarletteAuthmd
    from examples.api.app import create_app as example_api
    token = access_token(jwt_live)[1]["access_token"]
    settings = dict(jwt_live.settings(resource=RESOURCE, jwks_uri=jwt_live.url + "/.well-known/jwks.json"))
    flask_url = serve_wsgi(example_api(**settings))
    fast = FastAPI()
    authmd = StarletteAuthmd(fast, **settings)

    @fast.get("/v1/notes")
    async def notes(caller: Identity = Depends(authmd.require("api.read"))):
        return {"caller": caller.sub, "protocol": caller.protocol}

    fast_url = serve_asgi(fast)
    bearer = {"Authorization": "Bearer " + token}
    for url in (flask_url, fast_url):
        r = requests.get(url + "/v1/notes", headers=bearer, timeout=10)
        assert r.status_code == 200 and r.json()["caller"] == claims_of(token)["sub"], r.text
        again = requests.get(url + "/v1/notes", headers=bearer, timeout=10)  # the key now known: inline
        assert again.status_code == 200
        r = requests.post(url + "/v1/notes", headers=bearer, json={"text": "x"}, timeout=10)
        if url == flask_url:
            assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    bogus = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    r = requests.get(fast_url + "/v1/notes", headers={"Authorization": "Bearer " + bogus}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


def test_without_joserfc_jwts_are_introspected(jwt_live):
    token = access_token(jwt_live)[1]["access_token"]
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("joserfc", "cryptography"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from authmd_resource import Client
        client = Client(**{jwt_live.settings()!r})
        print(client.identify("Bearer " + {token!r}).protocol)
        try:
            Client(**{jwt_live.settings()!r}, local_jwt=True)
        except ImportError:
            print("required")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["latest", "required"], out.stderr


def test_authmd_unreachable_for_an_unknown_key_fails_closed(jwt_live):
    token = access_token(jwt_live)[1]["access_token"]
    dead = f"http://127.0.0.1:{free_port()}"
    client = Client(**jwt_live.settings(resource=RESOURCE, jwks_uri=dead + "/jwks.json",
                                        introspection_endpoint=dead + "/oauth2/introspect", timeout=2))
    with pytest.raises(Unavailable):
        client.identify("Bearer " + token)


def test_the_key_set_is_bounded(helper_clock):
    """authmd_resource.jwt_access.Keys against a key set served over loopback HTTP: at most max_keys keys from a
    document of at most max_bytes; what does not fit, or is not an ES256 signing key, is left out."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from authmd_resource.jwt_access import Keys
    ec = [{**ECKey.generate_key("P-256").as_dict(private=False), "kid": f"k{i}", "alg": "ES256", "use": "sig"}
          for i in range(20)]
    documents = {"/many": {"keys": ec}, "/big": {"keys": ec[:1], "pad": "x" * 70_000},
                 "/mixed": {"keys": [{**ec[0], "alg": "ES384"}, {**ec[1], "use": "enc"}, {"kty": "oct", "k": "c2Vj",
                            "kid": "hs"}, {**ec[2], "crv": "P-384"}, {**ec[3], "x": "!!"}, ec[4], "junk"]}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps(documents[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    import threading
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        def keys(path):
            return Keys(base + path, opener=urllib.request.build_opener(), timeout=5, clock=helper_clock)
        many = keys("/many")
        assert many.get("k0") is not None and many.get("k15") is not None and many.get("k16") is None
        assert len(many._keys) == 16
        assert keys("/big").get("k0") is None  # over 64 KiB: not read at all
        mixed = keys("/mixed")
        assert [kid for kid in ("k0", "k1", "hs", "k2", "k3", "k4") if mixed.get(kid) is not None] == ["k4"]
    finally:
        server.shutdown()
