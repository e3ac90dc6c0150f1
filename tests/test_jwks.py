"""JWKS fetching and the per-worker cache: Cache-Control clamping, unknown-kid refetch, rotation,
an issuer that goes down, and the SSRF guard - all against a real JWKS served over loopback HTTP."""
import json
import re
import socket
import socketserver
import threading
import time
from datetime import datetime, timedelta

import pytest

from authmd.trust import jwks
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
    assert jwks.cache_lifetime(header) == timedelta(seconds=lifetime)


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
        assert list(jwks.import_keys({"keys": [priv, oct_, pub, enc, "junk", {"kty": "EC"}]})) == ["good"]


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
            with pytest.raises(jwks.FetchError):
                jwks.fetch_jwks(f"http://127.0.0.1:{sock.getsockname()[1]}/jwks.json", timeout=0.3)
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
            with pytest.raises(jwks.FetchError, match="302"):
                jwks.fetch_jwks(f"http://127.0.0.1:{server.server_port}/jwks.json")
    finally:
        server.shutdown()


@pytest.mark.parametrize("url,message", [
    ("http://example.com/jwks.json", "Use https:// (plain http is allowed only on localhost, 127.0.0.1 and [::1])."),
    ("ftp://127.0.0.1/jwks", "Enter an absolute URL starting with https://."),
    ("file:///etc/passwd", "Enter an absolute URL starting with https://."),
    ("jwks.json", "Enter an absolute URL starting with https://."),
    ("https://user:pw@example.com/jwks", "The URL must not carry a query, a fragment or credentials."),
    ("https://example.com/jwks?x=1", "The URL must not carry a query, a fragment or credentials."),
    ("https://example.com:99999/jwks", "The URL's port must be a number from 1 to 65535."),
    ("https://example.com/jw ks", "Enter a URL of at most 1000 characters, without spaces."),
])
def test_only_https_or_loopback_http_urls(app, url, message):
    with app.app_context():
        with pytest.raises(jwks.FetchError, match="^" + re.escape("the JWKS URL is refused: " + message) + "$"):
            jwks.fetch_jwks(url)


def test_a_url_the_http_client_cannot_send_is_a_fetch_error(app):
    with app.app_context():
        with pytest.raises(jwks.FetchError, match="UnicodeEncodeError"):
            jwks.fetch_jwks("http://127.0.0.1:9/\u043a\u043b\u044e\u0447\u0438")


def test_plain_http_is_refused_off_the_loopback_names_even_where_private_addresses_are_allowed(app):
    # a live JWKS on 127.0.0.2 (not one of the loopback names): only the http rule stands in the way
    plain = _Served(b'{"keys": []}', host="127.0.0.2")
    try:
        with app.app_context():
            with pytest.raises(jwks.FetchError, match=re.escape("refused: Use https:// (plain http is allowed only")):
                jwks.fetch_jwks(plain.url, allow_private=True)
        assert plain.requests == 0
    finally:
        plain.close()


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.169.254", "127.0.0.2",
                                  "[fe80::1]", "[fd00::1]", "0.0.0.0", "[::ffff:10.0.0.1]"])
def test_private_and_link_local_jwks_addresses_are_refused_unless_allowed(app, host):
    with app.app_context():
        with pytest.raises(jwks.FetchError, match="private or link-local"):
            jwks.fetch_jwks(f"https://{host}:9/jwks.json")
        # allowed explicitly: the guard steps aside and the (closed) port is what fails
        with pytest.raises(jwks.FetchError) as exc:
            jwks.fetch_jwks(f"https://{host}:9/jwks.json", allow_private=True, timeout=0.3)
        assert "private or link-local" not in str(exc.value)


def test_issuer_flagged_allow_private_jwks_may_use_a_private_address(app, make_app, provider, register_id_jag, clock,
                                                                    tmp_path):
    # 127.0.0.2 is loopback but not one of the literal loopback names, so to the guard it is a private address;
    # the JWKS is served there over TLS with a certificate for that address
    context, ca = _tls_context(tmp_path)
    keys = _Served(json.dumps(provider.jwks()).encode(), host="127.0.0.2", tls=context)
    try:
        client = make_app(JWKS_CA_FILE=ca).test_client()
        trust_provider(app, provider, jwks_uri=keys.url)
        r = _refused(client, register_id_jag, _token(provider, clock))
        assert r.json["message"] == "The issuer's keys could not be fetched."
        assert keys.requests == 0  # refused before connecting
        with app.app_context():
            db.session.execute(db.update(TrustedIssuer).values(allow_private_jwks=True))
            db.session.commit()
        _ok(client, register_id_jag, _token(provider, clock))
        assert keys.requests == 1
    finally:
        keys.close()


# ------------------------------------------------------------------ one deadline for the whole fetch

def _unavailable(client, register_id_jag, provider, clock):
    r = _refused(client, register_id_jag, _token(provider, clock))
    assert r.json["message"] == "The issuer's keys could not be fetched."


def _backed_off(client, register_id_jag, provider, clock, served):
    """After one failed fetch: not asked again within the minute, asked once more after it."""
    _unavailable(client, register_id_jag, provider, clock)
    assert served.requests == 1
    clock.advance(seconds=61)
    _unavailable(client, register_id_jag, provider, clock)
    assert served.requests == 2


def test_default_deadline_is_five_seconds(app):
    assert app.config["JWKS_DEADLINE"] == 5


@pytest.mark.parametrize("trickle", ["head", "body"])
def test_a_trickling_jwks_is_given_up_at_the_deadline_and_not_asked_again_within_the_backoff(
        app, make_app, provider, register_id_jag, clock, trickle):
    # a byte every 50 ms: no single read ever waits long enough for the 3 s socket timeout, and the whole
    # answer (status line and headers, or the body) would take from 5 s to a minute
    slow = _Served(json.dumps(provider.jwks()).encode(), trickle=trickle)
    try:
        trust_provider(app, provider, jwks_uri=slow.url)
        client = make_app(JWKS_DEADLINE=1).test_client()
        started = time.monotonic()
        _unavailable(client, register_id_jag, provider, clock)
        assert time.monotonic() - started < 4  # the deadline, not the trickle, ended it
        _backed_off(client, register_id_jag, provider, clock, slow)
    finally:
        slow.close()


@pytest.mark.parametrize("body", [b"[" * 2000 + b"]" * 2000, b'{"keys": ' + b"[" * 2000 + b"]" * 2000 + b"}"],
                         ids=["top", "keys"])
def test_a_deeply_nested_jwks_is_a_clean_refusal_with_backoff(app, client, provider, register_id_jag, clock, body):
    deep = _Served(body)
    clock.frozen = clock()
    try:
        trust_provider(app, provider, jwks_uri=deep.url)
        _unavailable(client, register_id_jag, provider, clock)
        [entry] = jwks._cache.values()
        assert entry.failed_at == clock.frozen and not entry.keys
        _backed_off(client, register_id_jag, provider, clock, deep)
    finally:
        deep.close()


def test_probe_jwks_fetches_now_bypassing_the_cache(app, provider):
    trust_provider(app, provider)
    with app.app_context():
        row = db.session.execute(db.select(TrustedIssuer)).scalar_one()
        out = jwks.probe_jwks(row)
        assert out["ok"] is True and out["error"] is None
        assert {(k["kid"], k["kty"]) for k in out["keys"]} == {(k.kid, k.kind) for k in provider.keys}
        jwks.probe_jwks(row)
        assert provider.jwks_requests == 2
        provider.down = True
        out = jwks.probe_jwks(row)
        assert out["ok"] is False and out["keys"] == [] and "503" in out["error"]


def test_https_jwks_verifies_the_certificate(app, make_app, provider, tmp_path):
    context, ca = _tls_context(tmp_path)
    server = _Served(json.dumps(provider.jwks()).encode(), tls=context)
    url = server.url.replace("127.0.0.1", "localhost")
    try:
        with app.app_context():
            with pytest.raises(jwks.FetchError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
                jwks.fetch_jwks(url)
        with make_app(JWKS_CA_FILE=ca).app_context():
            fetched, _life = jwks.fetch_jwks(url)
            assert {k["kid"] for k in fetched["keys"]} == {k.kid for k in provider.keys}
    finally:
        server.close()


# ------------------------------------------------------------------ test servers

class _Served:
    """A JWKS endpoint on a loopback address answering `body` with 200 (over TLS when given a context),
    counting the requests it reads. trickle: send the status line and headers ("head") or the body
    ("body") one byte every 50 ms, as a hostile issuer would, until the client hangs up."""

    def __init__(self, body: bytes, host: str = "127.0.0.1", tls=None, trickle: str | None = None):
        self.body, self.trickle, self.requests = body, trickle, 0
        self.stop = threading.Event()
        served = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                served.requests += 1
                head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(served.body))
                try:
                    for part, name in ((head, "head"), (served.body, "body")):
                        if served.trickle != name:
                            self.request.sendall(part)
                            continue
                        for i in range(len(part)):
                            if served.stop.wait(0.05):
                                return
                            self.request.sendall(part[i:i + 1])
                except OSError:  # the client gave up
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

        self.server = Server((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def _tls_context(tmp_path):
    """A server TLS context with a self-signed certificate for localhost, 127.0.0.1 and 127.0.0.2, and the
    path of that certificate (for JWKS_CA_FILE)."""
    import datetime as dt
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    names = [x509.DNSName("localhost")] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "127.0.0.2")]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)
