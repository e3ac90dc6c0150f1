"""Development provider room: a local identity provider (JWKS, ID-JAG and logout-token minting),
only when AUTHMD_DEV_PROVIDER is on. Never for production."""
import os
import uuid
from datetime import datetime

from flask import Blueprint, current_app, jsonify

from ..trust.verify import ID_JAG_TYP, LOGOUT_TYP, REVOKED_EVENT

PATH = "/dev-provider"
KEY_FILE = "dev-provider-key.pem"

bp = Blueprint("devprovider", __name__)


def register(app):
    """Serve the JWKS, hand its keys to the trust room in-process, and trust the provider at init-db.
    Nothing is read or created here: the key is made by init-db or on first use."""
    from ..cli import on_init_db
    from ..trust.jwks import register_local_jwks
    app.register_blueprint(bp)
    register_local_jwks(app, jwks_url, jwks)
    on_init_db(app, ensure_trusted)


@bp.get(PATH + "/.well-known/jwks.json")
def jwks_view():
    resp = jsonify(jwks())
    resp.headers["Cache-Control"] = "public, max-age=3600"
    return resp


def issuer() -> str:
    return current_app.config["ISSUER"] + PATH


def jwks_url() -> str:
    return issuer() + "/.well-known/jwks.json"


def _key_path() -> str:
    # AUTHMD_DEV_PROVIDER_KEY_FILE moves it (tests); default: the instance folder
    return current_app.config.get("DEV_PROVIDER_KEY_FILE") or os.path.join(current_app.instance_path, KEY_FILE)


def key():
    """The persisted EC P-256 key (file mode 0600), created on first use; a racing worker reads the winner's."""
    from joserfc.jwk import ECKey
    path = _key_path()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if data:
            return ECKey.import_key(data)
    except FileNotFoundError:
        pass
    new = ECKey.generate_key("P-256")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as fh:
            return ECKey.import_key(fh.read())
    with os.fdopen(fd, "wb") as fh:
        fh.write(new.as_pem(private=True))
    return new


def _public(k) -> dict:
    d = k.as_dict(private=False)
    d.update({"kid": k.thumbprint(), "alg": "ES256", "use": "sig"})
    return d


def jwks() -> dict:
    return {"keys": [_public(key())]}


def _sign(payload: dict, typ: str) -> str:
    from joserfc import jwt
    k = key()
    return jwt.encode({"alg": "ES256", "typ": typ, "kid": k.thumbprint()}, payload, k, algorithms=["ES256"])


def _now() -> int:
    # the app's clock, so tests that move time mint tokens in step with the verifier
    from authmd.util import utcnow
    return int((utcnow() - datetime(1970, 1, 1)).total_seconds())


def mint_id_jag(email: str, sub: str | None = None, aud: str | None = None, lifetime: int = 300, **extra) -> str:
    now = _now()
    payload = {"iss": issuer(), "sub": sub or email, "aud": aud or current_app.config["ISSUER"], "iat": now,
               "exp": now + lifetime, "jti": uuid.uuid4().hex, "email": email, "email_verified": True,
               "client_id": "authmd-dev-agent", "agent_platform": "authmd-dev-provider", "amr": ["pwd"]}
    payload.update(extra)
    return _sign(payload, ID_JAG_TYP)


def mint_logout_token(sub: str, aud: str | None = None) -> str:
    now = _now()
    payload = {"iss": issuer(), "sub": sub, "aud": aud or current_app.config["ISSUER"], "iat": now,
               "exp": now + 300, "jti": uuid.uuid4().hex, "events": {REVOKED_EVENT: {}}}
    return _sign(payload, LOGOUT_TYP)


def ensure_trusted() -> bool:
    """Create the key and add the provider to the trust list (init-db). Returns True when added. Caller commits."""
    from ..trust import issuers
    key()
    if issuers.get(issuer()) is not None:
        return False
    issuers.add(issuer(), name="Development provider (local)", actor="init-db")
    return True
