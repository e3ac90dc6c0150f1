"""The service's signing keys: kept encrypted in the database, shared by every node, rotated without
breaking the tokens the old key signed, published at /.well-known/jwks.json."""
import json

import pytest
from jose import jwt as jose_jwt
from joserfc.jwk import ECKey

from authmd import assertions, keys
from authmd.extensions import db
from authmd.models import SigningKey
from authmd.util import ProtocolError


def _reg_assertion(app, reg_id="reg_test1"):
    with app.test_request_context():
        token, _ = assertions.issue(reg_id)
        db.session.commit()
        return token


def _check(app, token):
    with app.test_request_context():
        return assertions.check(token)


def test_a_signed_assertion_verifies_and_names_the_key_by_its_thumbprint(app, client):
    token = _reg_assertion(app)
    claims = _check(app, token)
    assert claims["sub"] == "reg_test1" and claims["iss"] == claims["aud"] == "http://localhost:8000"
    assert claims["exp"] - claims["iat"] == 3600
    header = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["typ"] == "oauth-id-jag+jwt"
    published = client.get("/.well-known/jwks.json")
    assert published.status_code == 200 and published.headers["Cache-Control"] == "public, max-age=300"
    (jwk,) = published.get_json()["keys"]
    assert jwk["kid"] == header["kid"] == ECKey.import_key(jwk).thumbprint()
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # never a private part


def test_the_private_key_is_stored_encrypted_and_needs_the_secret_key(app, make_app):
    _reg_assertion(app)
    with app.app_context():
        row = db.session.execute(db.select(SigningKey)).scalar_one()
        assert row.private_key.startswith("v1.") and "PRIVATE" not in row.private_key
        assert '"d"' not in row.public_jwk
    other = make_app(SECRET_KEY="another-secret")
    with other.app_context():
        with pytest.raises(keys.KeyError_, match="SECRET_KEY changed"):
            keys.sign({"sub": "x"}, "JWT")
    rotated = make_app(SECRET_KEY="another-secret", SECRET_KEY_FALLBACKS=["test-secret"])
    with rotated.app_context():
        assert keys.sign({"sub": "x"}, "JWT").count(".") == 2


def test_every_node_signs_and_accepts_the_same_keys(app, make_app):
    node_b = make_app()
    token_a = _reg_assertion(app, "reg_from_a")
    assert _check(node_b, token_a)["sub"] == "reg_from_a"
    # a key rotated on node B is accepted by node A at once, although A's copy of the keys is fresh
    with node_b.app_context():
        keys.rotate(actor_id="test")
        db.session.commit()
    token_b = _reg_assertion(node_b, "reg_from_b")
    with app.app_context():
        assert keys._cache().loaded_at is not None and keys._cache().signer[0] != json.loads(
            __import__("base64").urlsafe_b64decode(token_b.split(".")[0] + "=="))["kid"]
    assert _check(app, token_b)["sub"] == "reg_from_b"


def test_rotation_keeps_old_tokens_valid_until_they_expire(app, clock, client, runner):
    old_token = _reg_assertion(app)
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0 and result.output.startswith("new active key ")
    new_token = _reg_assertion(app)
    assert _check(app, old_token) and _check(app, new_token)
    kids = [k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]]
    assert len(kids) == 2
    listing = runner.invoke(args=["keys", "list"]).output.splitlines()
    assert [line.split("\t")[2] for line in listing] == ["active", "retired"]
    # past the old key's last possible token: no longer published, its tokens refused
    clock.advance(seconds=3600 + 61)
    with app.app_context():
        keys.forget()
    assert [k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]] == kids[:1]
    with pytest.raises(ProtocolError) as err:
        _check(app, old_token)
    assert err.value.code == "invalid_grant"


def test_the_published_set_names_a_key_another_worker_made_a_moment_ago(app, client):
    """This worker has read the key table (and keeps what it read for a minute); another worker or node then
    adds a key, which may sign at once: the published document names it on the very next fetch."""
    _reg_assertion(app)
    first = [k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]]
    other = ECKey.generate_key("P-256")
    with app.app_context():  # what keys.create does on another worker, without touching this worker's cache
        db.session.add(SigningKey(kid=other.thumbprint(), alg="ES256", private_key="sealed elsewhere",
                                  public_jwk=json.dumps({**other.as_dict(private=False), "kid": other.thumbprint(),
                                                         "alg": "ES256", "use": "sig"}),
                                  created_at=__import__("authmd.util", fromlist=["utcnow"]).utcnow()))
        db.session.commit()
    kids = [k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]]
    assert kids == [other.thumbprint()] + first


@pytest.mark.parametrize("change, message", [
    ({"iss": "https://evil.example"}, "not issued by and for"),
    ({"aud": "https://evil.example"}, "not issued by and for"),
    ({"exp": 1}, "expired"),
    ({"iat": 4_000_000_000, "exp": 4_000_003_600}, "iat is in the future"),
    ({"sub": "usr_1"}, "does not name a registration"),
])
def test_an_assertion_with_wrong_claims_is_invalid_grant(app, change, message):
    with app.test_request_context():
        token = _reg_assertion(app)
        claims = assertions.check(token)
        forged = keys.sign({**claims, **change}, "oauth-id-jag+jwt")  # our own key, wrong claims
        with pytest.raises(ProtocolError, match=message) as err:
            assertions.check(forged)
        assert err.value.status == 400 and err.value.code == "invalid_grant"


def test_a_token_not_signed_by_the_service_is_refused(app):
    token = _reg_assertion(app)
    claims = _check(app, token)
    header = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))
    # python-jose as an independent signer: a foreign key under our kid, HMAC with the public key, none
    foreign = ECKey.generate_key("P-256").as_pem(private=True).decode()
    with app.app_context():
        public = keys.jwks()["keys"][0]
    attempts = [
        jose_jwt.encode(claims, foreign, algorithm="ES256", headers={"kid": header["kid"], "typ": "oauth-id-jag+jwt"}),
        jose_jwt.encode(claims, json.dumps(public), algorithm="HS256", headers={"kid": header["kid"], "typ": "oauth-id-jag+jwt"}),
        token.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1][::-1],
        token.split(".")[0] + "." + token.split(".")[1] + ".",
    ]
    for forged in attempts:
        with pytest.raises(ProtocolError, match="not signed by this service|not a compact JWS"):
            _check(app, forged)
    # the right key but the wrong typ
    with app.app_context():
        wrong_typ = keys.sign(claims, "JWT")
    with pytest.raises(ProtocolError, match="typ"):
        _check(app, wrong_typ)
