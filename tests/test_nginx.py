"""The production shape: the shipped docs/nginx/authmd.conf in front of authmd under gunicorn, with real nginx.

Slow clients (a header line or a body byte every few seconds) hold a sync worker each when they reach
gunicorn directly, and starve it; behind nginx they wait in nginx and /healthz keeps answering. Through
nginx the client's address reaches authmd (AUTHMD_TRUSTED_PROXIES=1) and a client cannot choose it,
bodies over authmd's 64 KiB are refused before gunicorn reads them, and TLS is 1.2+ with http redirected.
"""
import http.client
import json
import re
import socket
import ssl
import threading
import time

import pytest
import requests

from authmd.config import Defaults
from authmd.extensions import db
from authmd.models import AuditEvent, Registration
from tests.fixtures.nginx import SERVER_NAME, SHIPPED_CONF

ANON = {"type": "anonymous", "requested_credential_type": "api_key"}
PROBE_TIMEOUT = 2  # seconds a /healthz probe may take to count as answered
SLOW_EVERY = 2     # seconds between two trickled bytes of a slow client


def directives(text: str) -> dict:
    """name -> list of argument strings, for the simple one-line directives of an nginx file."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([a-z_0-9]+)\s+([^;{#]*);", line)
        if m:
            found.setdefault(m.group(1), []).append(m.group(2).strip())
    return found


def test_the_shipped_config_matches_authmd():
    """Not slow: the file's choices that must agree with authmd and its gunicorn settings."""
    with open(SHIPPED_CONF) as f:
        d = directives(f.read())
    assert d["client_max_body_size"] == ["64k"] and 64 * 1024 == Defaults.MAX_CONTENT_LENGTH
    assert d["proxy_request_buffering"] == ["on"] and d["proxy_buffering"] == ["on"]
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert len(d[name]) == 1 and int(d[name][0].rstrip("s")) <= 10, name
    assert d["server"] == ["127.0.0.1:8000"]  # the upstream: gunicorn on loopback
    assert d["proxy_set_header"][1:] == ["Host $host", "X-Forwarded-For $remote_addr",
                                         "X-Forwarded-Proto $scheme", "X-Forwarded-Host $host"]
    assert d["ssl_protocols"] == ["TLSv1.2 TLSv1.3"]
    # idle upstream connections are dropped before gunicorn's keep-alive (5 s) would close them under nginx
    assert int(d["keepalive_timeout"][0].rstrip("s")) < 5



class SlowClients:
    """`n` connections that never finish their request: half send a header line, half a body byte, every
    SLOW_EVERY seconds; a connection the server cuts is opened again, as an attacker would."""

    AGENT = "slow-client"  # their User-Agent, which gunicorn's access log would show

    def __init__(self, port: int, n: int, tls: ssl.SSLContext | None = None):
        self.port, self.n, self.tls = port, n, tls
        self.socks = [None] * n
        self.reconnects = 0
        self.hanging = 0  # connections that took the last round's byte
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=SERVER_NAME)
        if i % 2:
            # a real route that reads its body: the view waits on every byte
            sock.sendall(f"POST /agent/auth HTTP/1.1\r\nHost: {SERVER_NAME}\r\nUser-Agent: {self.AGENT}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{".encode())
        else:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {SERVER_NAME}\r\nUser-Agent: {self.AGENT}\r\n".encode())
        return sock

    def _trickle(self, i: int) -> bool:
        try:
            if self.socks[i] is None:
                self.socks[i] = self._open(i)
                self.reconnects += 1
            else:
                self.socks[i].sendall(b" " if i % 2 else b"X-Slow: 1\r\n")
            return True
        except OSError:
            if self.socks[i] is not None:
                self.socks[i].close()
                self.socks[i] = None
            return False

    def _run(self):
        while not self._stop.wait(SLOW_EVERY):
            self.hanging = sum(self._trickle(i) for i in range(self.n))

    def __enter__(self):
        self.socks = [self._open(i) for i in range(self.n)]
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def probes(url: str, count: int, verify=True) -> int:
    """How many of `count` GET /healthz probes (one a second) answered {"status":"ok"} within PROBE_TIMEOUT."""
    answered = 0
    for _ in range(count):
        try:
            r = requests.get(url + "/healthz", timeout=(PROBE_TIMEOUT, PROBE_TIMEOUT), verify=verify)
            answered += r.status_code == 200 and r.json() == {"status": "ok"}
        except requests.RequestException:
            pass
        time.sleep(1)  # pacing the probes across the attack, not measuring anything
    return answered


def client_context(cert: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False  # the slow clients name the server in SNI; the certificate covers it anyway
    return ctx


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_slow_clients_wait_in_nginx_and_healthz_keeps_answering(app, schema, gunicorn_server,
                                                                authmd_behind_nginx, tls):
    upstream = gunicorn_server(schema, workers=2, AUTHMD_TRUSTED_PROXIES=1)
    proxy, _, cert = authmd_behind_nginx(int(upstream.url.rsplit(":", 1)[1]), tls=tls)
    verify = cert if tls else True
    with SlowClients(proxy.port, 200, client_context(cert) if tls else None) as slow:
        answered = probes(proxy.url, 8, verify)
        hanging = slow.hanging
    assert answered == 8, f"only {answered} of 8 probes answered within {PROBE_TIMEOUT} s behind nginx"
    assert hanging == 200  # the attack was on to the end
    # gunicorn never saw a slow client: nginx passes a request on only once it has all of it
    assert SlowClients.AGENT not in upstream.output()


@pytest.mark.slow
def test_the_same_slow_clients_starve_gunicorn_without_nginx(app, schema, gunicorn_server):
    """What nginx is for: each slow client holds a sync worker, the probes queue behind them."""
    upstream = gunicorn_server(schema, workers=2)
    with SlowClients(int(upstream.url.rsplit(":", 1)[1]), 20):
        answered = probes(upstream.url, 3)
    assert answered == 0
    # and it was the slow clients: gone, gunicorn answers again
    assert requests.get(upstream.url + "/healthz", timeout=30).json() == {"status": "ok"}


def post_from(source_ip: str, port: int, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    """POST /agent/auth to nginx from a chosen loopback address (127.0.0.0/8 is all ours)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source_ip, 0))
    try:
        conn.request("POST", "/agent/auth", json.dumps(body),
                     {"Content-Type": "application/json", "Host": SERVER_NAME, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_the_client_address_reaches_authmd_and_cannot_be_chosen(app, schema, gunicorn_server, authmd_behind_nginx):
    upstream = gunicorn_server(schema, workers=1, AUTHMD_TRUSTED_PROXIES=1, AUTHMD_RATELIMIT_ENABLED=1,
                               AUTHMD_RATELIMIT_ANONYMOUS_PER_IP="2/hour")
    proxy, _, _ = authmd_behind_nginx(int(upstream.url.rsplit(":", 1)[1]))
    # every request invents another X-Forwarded-For: nginx replaces it with the address it saw
    first = [post_from("127.0.0.2", proxy.port, ANON, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(3)]
    assert [status for status, _ in first] == [200, 200, 429]
    assert first[2][1]["error"] == "rate_limited"
    # per-IP limits key on the client, not on nginx (whose address every request to gunicorn comes from)
    assert post_from("127.0.0.3", proxy.port, ANON)[0] == 200
    with app.app_context():
        reg = db.session.get(Registration, first[0][1]["registration_id"])
        event = db.session.execute(db.select(AuditEvent).where(
            AuditEvent.registration_id == reg.id, AuditEvent.event == "registration.created")).scalar_one()
        assert (reg.ip, event.ip) == ("127.0.0.2", "127.0.0.2")


@pytest.mark.slow
def test_bodies_over_64_kib_are_refused_by_nginx_in_authmds_json(app, schema, gunicorn_server, authmd_behind_nginx):
    upstream = gunicorn_server(schema, workers=1, AUTHMD_TRUSTED_PROXIES=1)
    proxy, _, _ = authmd_behind_nginx(int(upstream.url.rsplit(":", 1)[1]))

    def body_of(size: int) -> bytes:
        head = json.dumps({**ANON, "pad": ""}).encode()
        return head[:-2] + b"x" * (size - len(head)) + head[-2:]

    json_type = {"Content-Type": "application/json"}
    exactly = requests.post(proxy.url + "/agent/auth", data=body_of(64 * 1024), headers=json_type, timeout=10)
    assert exactly.status_code == 200, exactly.text  # authmd's own limit, passed through whole
    for size in (64 * 1024 + 1, 65 * 1024):
        r = requests.post(proxy.url + "/agent/auth", data=body_of(size), headers=json_type, timeout=10)
        assert r.status_code == 413 and r.headers["Content-Type"] == "application/json"
        assert r.json() == {"error": "request_too_large", "message": "The request body is larger than 64 KiB."}
        assert r.headers["Cache-Control"] == "no-store"
    requests.get(proxy.url + "/healthz", timeout=10)  # one more request, so the access log is surely written
    assert upstream.output().count('"POST /agent/auth ') == 1  # the refused bodies never reached gunicorn


@pytest.mark.slow
def test_tls_and_forwarded_proto_and_host(app, schema, gunicorn_server, authmd_behind_nginx):
    upstream = gunicorn_server(schema, workers=1, AUTHMD_TRUSTED_PROXIES=1,
                               AUTHMD_ISSUER=f"https://{SERVER_NAME}")
    proxy, redirect_url, cert = authmd_behind_nginx(int(upstream.url.rsplit(":", 1)[1]), tls=True)
    host = {"Host": SERVER_NAME}
    r = requests.get(redirect_url + "/healthz?x=1", headers=host, allow_redirects=False, timeout=10)
    assert r.status_code == 301 and r.headers["Location"] == f"https://{SERVER_NAME}/healthz?x=1"
    r = requests.get(proxy.url + "/healthz", headers=host, verify=cert, timeout=10)
    assert r.json() == {"status": "ok"} and r.headers["Strict-Transport-Security"] == "max-age=63072000"

    def handshake(low, high) -> str:
        ctx = client_context(cert)
        ctx.minimum_version, ctx.maximum_version = low, high
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions: the server must refuse
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
                return tls.version()

    assert handshake(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert handshake(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError) as refused:
        handshake(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    assert "PROTOCOL_VERSION" in str(refused.value).upper() or "UNSUPPORTED PROTOCOL" in str(refused.value).upper()

    # authmd knows the request came over https for auth.example.com (X-Forwarded-Proto/Host): Flask-WTF's
    # strict referrer check applies to https only, and compares the Referer with the forwarded host
    session = requests.Session()
    page = session.get(proxy.url + "/console/login", headers=host, verify=cert, timeout=10)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    form = {"csrf_token": token, "email": "nobody@example.com", "password": "not-the-password"}
    bare = session.post(proxy.url + "/console/login", data=form, headers=host, verify=cert, timeout=10)
    assert bare.status_code == 400 and "referrer header is missing" in bare.text
    refer = {**host, "Referer": f"https://{SERVER_NAME}/console/login"}
    signed = session.post(proxy.url + "/console/login", data=form, headers=refer, verify=cert, timeout=10)
    assert signed.status_code == 401 and "The email or password is not correct." in signed.text


@pytest.mark.slow
def test_gunicorn_down_answers_json_503_with_retry_after(app, schema, gunicorn_server, authmd_behind_nginx):
    upstream = gunicorn_server(schema, workers=1)
    proxy, _, _ = authmd_behind_nginx(int(upstream.url.rsplit(":", 1)[1]))
    assert requests.get(proxy.url + "/healthz", timeout=10).status_code == 200
    upstream.stop()
    for r in (requests.get(proxy.url + "/healthz", timeout=10),
              requests.post(proxy.url + "/agent/auth", json=ANON, timeout=10)):
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert r.json() == {"error": "service_unavailable", "message": "The service is not answering; retry later."}
