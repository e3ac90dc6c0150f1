"""JWKS fetching and the per-worker cache: Cache-Control clamping, unknown-kid refetch, rotation,
an issuer that goes down, and the SSRF guard - all against a real JWKS served over loopback HTTP."""
import json
import socket
import threading
from datetime import datetime, timedelta

import pytest

from authmd import trust
from authmd.extensions import db
from authmd.models import TrustedIssuer
from tests.fixtures.provider import trust as trust_provider


def _ts(clock) -> int:
    return int((clock() - datetime(1970, 1, 1)).total_seconds())


def _token(provider, clock, **claims):
    """An ID-JAG dated by the app's clock (the tests move time)."""
    now = _ts(clock)
    return provider.id_jag(iat=now, exp=now + 300, **claims)


def _ok(client, register_id_jag, token):
    r = register_id_jag(client, token)
    assert r.status_code == 200, r.json
    return r


def _refused(client, register_id_jag, token):
    r = register_id_jag(client, token)
    assert r.status_code == 400 and r.json["error"] == "invalid_signature", r.json
    return r


def test_keys_are_fetched_once_and_shared_by_every_request_and_app_of_the_worker(app, make_app, client, provider,
                                                                                register_id_jag, clock):
    trust_provider(app, provider)
    other_instance = make_app().test_client()
    for c in (client, other_instance, client):
        _ok(c, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 1


@pytest.mark.parametrize("header,lifetime", [("max-age=5", 600), ("max-age=3600", 3600), ("max-age=999999", 86400),
                                             ("no-store", 600), ("", 3600), ("public, max-age=\"1200\"", 1200),
                                             ("max-age=abc", 3600)])
def test_cache_control_is_clamped_between_ten_minutes_and_a_day(header, lifetime):
    assert trust.cache_lifetime(header) == timedelta(seconds=lifetime)


def test_cache_expires_per_clamped_max_age(app, client, provider, register_id_jag, clock):
    provider.cache_control = "max-age=5"  # clamped up to 10 minutes
    trust_provider(app, provider)
    _ok(client, register_id_jag, _token(provider, clock))
    clock.advance(minutes=9)
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 1
    clock.advance(minutes=2)
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 2


def test_long_max_age_is_clamped_to_a_day(app, client, provider, register_id_jag, clock):
    provider.cache_control = "max-age=31536000"
    trust_provider(app, provider)
    _ok(client, register_id_jag, _token(provider, clock))
    clock.advance(hours=23)
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 1
    clock.advance(hours=2)
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 2


def test_new_kid_triggers_one_refetch_then_works(app, client, provider, register_id_jag, clock):
    trust_provider(app, provider)
    _ok(client, register_id_jag, _token(provider, clock))
    rotated = provider.add_key("EC")
    _ok(client, register_id_jag, _token(provider, clock, key=rotated))
    assert provider.jwks_requests == 2


def test_unknown_kid_refetches_at_most_once_a_minute(app, client, provider, register_id_jag, clock):
    trust_provider(app, provider)
    _ok(client, register_id_jag, _token(provider, clock))
    from tests.fixtures.provider import Key
    stranger = Key("EC", "not-published")
    for _ in range(3):
        _refused(client, register_id_jag, provider.sign(provider.claims("http://localhost:8000", iat=_ts(clock),
                                                                        exp=_ts(clock) + 300), key=stranger))
    assert provider.jwks_requests == 2  # the first fetch, then one refetch for the unknown kid
    # a key published within that minute is found at the next allowed refetch
    fresh = provider.add_key("EC")
    _refused(client, register_id_jag, _token(provider, clock, key=fresh))
    assert provider.jwks_requests == 2
    clock.advance(seconds=61)
    _ok(client, register_id_jag, _token(provider, clock, key=fresh))
    assert provider.jwks_requests == 3


def test_removed_kid_stops_working_after_the_refetch(app, client, provider, register_id_jag, clock):
    trust_provider(app, provider)
    old = provider.key("EC")
    _ok(client, register_id_jag, _token(provider, clock, key=old))
    new = provider.add_key("EC")
    provider.remove_key(old.kid)
    _ok(client, register_id_jag, _token(provider, clock, key=new))  # the refetch that learns about the rotation
    _refused(client, register_id_jag, _token(provider, clock, key=old))


def test_removed_kid_stops_working_when_the_cache_expires(app, client, provider, register_id_jag, clock):
    trust_provider(app, provider)
    old = provider.key("EC")
    _ok(client, register_id_jag, _token(provider, clock, key=old))
    provider.remove_key(old.kid)
    _ok(client, register_id_jag, _token(provider, clock, key=old))  # still cached
    clock.advance(minutes=11)
    _refused(client, register_id_jag, _token(provider, clock, key=old))


def test_cached_keys_keep_working_when_the_issuer_goes_down(app, client, provider, register_id_jag, clock):
    trust_provider(app, provider)
    _ok(client, register_id_jag, _token(provider, clock))
    provider.down = True
    clock.advance(hours=30)  # far past the cache lifetime: the refetch fails, the old keys stay
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 2
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 2  # a failed refetch is retried at most once a minute
    clock.advance(seconds=61)
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 3
    provider.down = False
    clock.advance(seconds=61)
    _ok(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 4


def test_an_unreachable_issuer_without_cached_keys_is_invalid_signature(app, client, provider, register_id_jag,
                                                                        clock):
    provider.down = True
    trust_provider(app, provider)
    _refused(client, register_id_jag, _token(provider, clock))
    _refused(client, register_id_jag, _token(provider, clock))
    assert provider.jwks_requests == 1  # no hammering of a failing issuer
    provider.down = False
    clock.advance(seconds=61)
    _ok(client, register_id_jag, _token(provider, clock))


def test_pinned_jwks_uri_is_used(app, client, provider, make_provider, register_id_jag, clock):
    other = make_provider("keys-elsewhere", ("EC",))
    other.keys = provider.keys
    trust_provider(app, provider, jwks_uri=other.jwks_uri)
    _ok(client, register_id_jag, _token(provider, clock))
    assert (provider.jwks_requests, other.jwks_requests) == (0, 1)


def test_oversized_jwks_is_refused(app, client, provider, register_id_jag, clock):
    provider.extra_jwks = [{"kty": "oct", "k": "A" * 70000}]
    trust_provider(app, provider)
    _refused(client, register_id_jag, _token(provider, clock))


def test_private_parts_and_symmetric_keys_in_a_jwks_are_ignored(app):
    with app.app_context():
        from joserfc.jwk import ECKey, OctKey
        priv = ECKey.generate_key("P-256").as_dict(private=True) | {"kid": "leaked"}
        oct_ = OctKey.generate_key(256).as_dict() | {"kid": "hmac"}
        pub = ECKey.generate_key("P-256").as_dict(private=False) | {"kid": "good"}
        enc = ECKey.generate_key("P-256").as_dict(private=False) | {"kid": "enc", "use": "enc"}
        assert list(trust._import_keys({"keys": [priv, oct_, pub, enc, "junk", {"kty": "EC"}]})) == ["good"]


# ------------------------------------------------------------------ fetch limits and the SSRF guard

def _silent_server():
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    return sock


def test_fetch_times_out(app):
    sock = _silent_server()
    try:
        with app.app_context():
            with pytest.raises(trust.FetchError):
                trust.fetch_jwks(f"http://127.0.0.1:{sock.getsockname()[1]}/jwks.json", timeout=0.3)
    finally:
        sock.close()


def test_default_timeout_is_three_seconds_and_cap_64_kib(app):
    assert app.config["JWKS_TIMEOUT"] == 3 and app.config["JWKS_MAX_BYTES"] == 64 * 1024


def test_redirects_are_not_followed(app):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with app.app_context():
            with pytest.raises(trust.FetchError, match="302"):
                trust.fetch_jwks(f"http://127.0.0.1:{server.server_port}/jwks.json")
    finally:
        server.shutdown()


@pytest.mark.parametrize("url", ["http://example.com/jwks.json", "ftp://127.0.0.1/jwks", "file:///etc/passwd",
                                 "https://user:pw@example.com/jwks", "jwks.json"])
def test_only_https_or_loopback_http_urls(app, url):
    with app.app_context():
        with pytest.raises(trust.FetchError):
            trust.fetch_jwks(url)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.169.254", "127.0.0.2",
                                  "[fe80::1]", "[fd00::1]", "0.0.0.0", "[::ffff:10.0.0.1]"])
def test_private_and_link_local_jwks_addresses_are_refused_unless_allowed(app, host):
    with app.app_context():
        with pytest.raises(trust.FetchError, match="private or link-local"):
            trust.fetch_jwks(f"https://{host}:9/jwks.json")
        # allowed explicitly: the guard steps aside and the (closed) port is what fails
        with pytest.raises(trust.FetchError) as exc:
            trust.fetch_jwks(f"https://{host}:9/jwks.json", allow_private=True, timeout=0.3)
        assert "private or link-local" not in str(exc.value)


def test_issuer_flagged_allow_private_jwks_may_use_a_private_address(app, client, provider, register_id_jag, clock):
    # 127.0.0.2 is loopback but not one of the literal loopback names, so it counts as private
    uri = provider.jwks_uri.replace("127.0.0.1", "127.0.0.2").replace("http://", "https://")
    trust_provider(app, provider, jwks_uri=uri)
    _refused(client, register_id_jag, _token(provider, clock))


def test_test_issuer_fetches_now_bypassing_the_cache(app, provider):
    trust_provider(app, provider)
    with app.app_context():
        row = db.session.execute(db.select(TrustedIssuer)).scalar_one()
        out = trust.test_issuer(row)
        assert out["ok"] is True and out["error"] is None
        assert {(k["kid"], k["kty"]) for k in out["keys"]} == {(k.kid, k.kind) for k in provider.keys}
        trust.test_issuer(row)
        assert provider.jwks_requests == 2
        provider.down = True
        out = trust.test_issuer(row)
        assert out["ok"] is False and out["keys"] == [] and "503" in out["error"]


def _tls_jwks_server(tmp_path, jwks: dict):
    """A JWKS over real TLS on loopback, with a self-signed certificate for localhost."""
    import datetime as dt
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    body = json.dumps(jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, str(cert_file)


def test_https_jwks_verifies_the_certificate(app, make_app, provider, tmp_path):
    server, ca = _tls_jwks_server(tmp_path, provider.jwks())
    url = f"https://localhost:{server.server_port}/jwks.json"
    try:
        with app.app_context():
            with pytest.raises(trust.FetchError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
                trust.fetch_jwks(url)
        with make_app(JWKS_CA_FILE=ca).app_context():
            jwks, _life = trust.fetch_jwks(url)
            assert {k["kid"] for k in jwks["keys"]} == {k.kid for k in provider.keys}
    finally:
        server.shutdown()
