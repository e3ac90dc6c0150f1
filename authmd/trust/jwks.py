"""Trust room (keys): an issuer's JWKS fetched under one deadline behind the SSRF guard, key sources the
app serves itself, and the per-worker key cache with its backoff."""
import binascii
import http.client
import io
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import current_app
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..util import has_control, utcnow

log = logging.getLogger("authmd.trust")

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CACHE_MIN = timedelta(minutes=10)
CACHE_MAX = timedelta(hours=24)
CACHE_DEFAULT = timedelta(hours=1)
REFETCH_INTERVAL = timedelta(minutes=1)
_LOCAL = "authmd.local_jwks"


class FetchError(Exception):
    """The JWKS could not be had; the message says why (for the log and the console's test button)."""


def check_url(url, max_chars: int = 500) -> str:
    """https, or http on a loopback host (development and tests need no certificates). The one rule for an
    issuer's URLs, applied when they are saved and again before every fetch; ValueError says what to fix."""
    if not isinstance(url, str) or not url:
        raise ValueError("Enter a URL.")
    if len(url) > max_chars or has_control(url) or any(c.isspace() for c in url):
        raise ValueError(f"Enter a URL of at most {max_chars} characters, without spaces.")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("Enter an absolute URL starting with https://.")
    try:
        parts.port
    except ValueError:
        raise ValueError("The URL's port must be a number from 1 to 65535.") from None
    if "?" in url or "#" in url or parts.username is not None or parts.password is not None:
        raise ValueError("The URL must not carry a query, a fragment or credentials.")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError("Use https:// (plain http is allowed only on localhost, 127.0.0.1 and [::1]).")
    return url


def jwks_uri_of(row) -> str:
    return row.jwks_uri or row.issuer.rstrip("/") + "/.well-known/jwks.json"


# ---------------------------------------------------------------- key sources served by this app

def register_local_jwks(app, url_fn, keys_fn) -> None:
    """Keys this app publishes itself (the development provider): when a JWKS URL equals url_fn(), keys_fn()
    answers in-process instead of a fetch (a single sync worker fetching its own URL would wait on itself)."""
    app.extensions.setdefault(_LOCAL, []).append((url_fn, keys_fn))


def _local_jwks(url: str):
    for url_fn, keys_fn in current_app.extensions.get(_LOCAL, ()):
        if url == url_fn():
            return keys_fn()
    return None


# ---------------------------------------------------------------- the fetch: deadline and SSRF guard

class _Deadline:
    """What is left of one fetch's time, handed to every blocking step. A socket timeout bounds a single
    step only: an issuer trickling a byte every two seconds would otherwise hold the worker for ever."""

    def __init__(self, seconds: float, step: float):
        self.seconds, self.step = seconds, step
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within the {self.seconds:g} s deadline")
        return min(left, self.step)


def _refuse_address(ip) -> bool:
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or (getattr(ip, "ipv4_mapped", None) is not None and _refuse_address(ip.ipv4_mapped)))


def _getaddrinfo(host: str, port: int, deadline: _Deadline) -> list:
    """getaddrinfo has no timeout of its own: it runs in a thread the fetch stops waiting for at the deadline
    (the thread ends when the system resolver gives up)."""
    out = {}

    def run():
        try:
            out["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            out["error"] = exc

    worker = threading.Thread(target=run, name="jwks-resolve", daemon=True)
    worker.start()
    worker.join(deadline.left())
    if worker.is_alive():
        raise FetchError(f"cannot resolve {host}: no answer within the deadline")
    if "error" in out:
        raise FetchError(f"cannot resolve {host}: {out['error']}")
    return out["infos"]


def _resolve(host: str, port: int, allow_private: bool, deadline: _Deadline) -> list[str]:
    """The addresses to connect to; refuses private and link-local ones unless allowed (SSRF guard).
    Literal loopback hosts are always allowed (development and tests)."""
    addrs = []
    for info in _getaddrinfo(host, port, deadline):
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if host not in LOOPBACK_HOSTS and not allow_private and _refuse_address(ip):
            raise FetchError(f"{host} resolves to a private or link-local address ({ip}); refused")
        addrs.append(str(ip))
    if not addrs:
        raise FetchError(f"cannot resolve {host}")
    return addrs


class _Reader(io.RawIOBase):
    def __init__(self, owner: "_DeadlineSocket"):
        self._owner = owner

    def readable(self):
        return True

    def readinto(self, buffer):
        sock = self._owner.sock
        sock.settimeout(self._owner.deadline.left())
        return sock.recv_into(buffer)

    def close(self):
        if not self.closed:
            super().close()
            self._owner.release()


class _DeadlineSocket:
    """The connected socket as http.client uses it (sendall, makefile, close): each step gets only what is
    left of the deadline, so the status line, the headers and the body all share it. As with a socket's
    own makefile(), the socket closes once the connection and every reader have let go of it (http.client
    closes the connection as soon as the response is under way)."""

    def __init__(self, sock, deadline: _Deadline):
        self.sock, self.deadline = sock, deadline
        self._users = 1

    def sendall(self, data):
        self.sock.settimeout(self.deadline.left())
        self.sock.sendall(data)

    def makefile(self, _mode="rb", *_args, **_kwargs):
        self._users += 1
        return io.BufferedReader(_Reader(self))

    def release(self):
        self._users -= 1
        if self._users == 0:
            self.sock.close()

    def close(self):
        self.release()


class _Pinned(http.client.HTTPConnection):
    """Connects to the address we checked, with TLS verifying the certificate for the host name."""

    def __init__(self, host, address, port, deadline: _Deadline, context: ssl.SSLContext | None):
        super().__init__(host, port=port)
        self.default_port = 443 if context is not None else 80  # no ":443" in the Host header
        self._address, self._deadline, self._context = address, deadline, context

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self._deadline.left())
        try:
            if self._context is not None:
                # CPython times the whole handshake against the socket's timeout
                sock.settimeout(self._deadline.left())
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._deadline)


def fetch_jwks(url: str, *, allow_private: bool = False, timeout: float | None = None,
               max_bytes: int | None = None, deadline: float | None = None) -> tuple[dict, timedelta]:
    """GET a JWKS: the whole exchange (name lookup, connect, TLS, request, every byte of the answer) within
    JWKS_DEADLINE seconds, each step within JWKS_TIMEOUT, a size cap, no redirects, the checked address.
    Returns (jwks, cache lifetime); every failure is a FetchError."""
    cfg = current_app.config
    local = _local_jwks(url)
    if local is not None:
        return local, CACHE_MAX
    try:
        check_url(url, 1000)
    except ValueError as exc:
        raise FetchError(f"the JWKS URL is refused: {exc}") from None
    clock = _Deadline(deadline or float(cfg.get("JWKS_DEADLINE", 5)), timeout or float(cfg.get("JWKS_TIMEOUT", 3)))
    max_bytes = max_bytes or int(cfg.get("JWKS_MAX_BYTES", 64 * 1024))
    parts = urlsplit(url)
    https = parts.scheme == "https"
    try:
        # JWKS_CA_FILE: an extra CA bundle for issuers behind a private CA (certificates are always verified)
        context = ssl.create_default_context(cafile=cfg.get("JWKS_CA_FILE") or None) if https else None
        port = parts.port or (443 if https else 80)
        conn = _Pinned(parts.hostname, _resolve(parts.hostname, port, allow_private, clock)[0], port, clock, context)
        try:
            conn.request("GET", parts.path or "/", headers={"Accept": "application/json", "User-Agent": "authmd-jwks/1"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise FetchError(f"JWKS answered HTTP {resp.status}")
            body = bytearray()
            while len(body) <= max_bytes:
                chunk = resp.read(min(16384, max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"JWKS is larger than {max_bytes} bytes")
            cache_control = resp.getheader("Cache-Control") or ""
        finally:
            conn.close()
    # timeouts, TLS, refused connections, bad HTTP; ValueError: what http.client cannot send (a non-ASCII path)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(f"JWKS fetch failed: {exc.__class__.__name__}: {exc}") from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested deeper than the parser goes
        raise FetchError("JWKS is not JSON (or is nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise FetchError("JWKS has no keys array")
    return data, cache_lifetime(cache_control)


def cache_lifetime(cache_control: str) -> timedelta:
    """Cache-Control max-age clamped to [10 min, 24 h]; no-store / no-cache count as the minimum."""
    cc = cache_control.lower()
    if "no-store" in cc or "no-cache" in cc:
        return CACHE_MIN
    m = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", cc)
    life = timedelta(seconds=int(m.group(1))) if m else CACHE_DEFAULT
    return max(CACHE_MIN, min(CACHE_MAX, life))


def import_keys(jwks: dict) -> dict:
    """kid -> (joserfc key, jwk dict); keys we cannot use (private parts, oct, bad params) are skipped."""
    out = {}
    for i, entry in enumerate(jwks.get("keys", [])):
        if not isinstance(entry, dict) or entry.get("kty") not in ("EC", "RSA", "OKP"):
            continue
        if any(p in entry for p in ("d", "p", "q", "k")) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = KeySet.import_key_set({"keys": [entry]}).keys[0]
        except (JoseError, ValueError, TypeError, KeyError, binascii.Error, RecursionError):
            continue
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) else f"#{i}"
        out.setdefault(kid, (key, entry))
    return out


def probe_jwks(row) -> dict:
    """Fetch the issuer's JWKS now, bypassing the cache (the console's "test" button)."""
    try:
        jwks, _life = fetch_jwks(jwks_uri_of(row), allow_private=bool(row.allow_private_jwks))
    except FetchError as exc:
        return {"ok": False, "keys": [], "error": str(exc)}
    keys = [{"kid": e.get("kid"), "kty": e.get("kty"), "alg": e.get("alg")} for _k, e in import_keys(jwks).values()]
    if not keys:
        return {"ok": False, "keys": [], "error": "the JWKS holds no usable public signing key"}
    return {"ok": True, "keys": keys, "error": None}


# ---------------------------------------------------------------- the per-worker cache

@dataclass
class _Entry:
    keys: dict = field(default_factory=dict)
    expires_at: datetime | None = None
    failed_at: datetime | None = None  # the last fetch failed: retry at most once a minute
    kid_refetch_at: datetime | None = None  # the last refetch for an unknown kid: at most once a minute
    lock: threading.Lock = field(default_factory=threading.Lock)


# Shared by every request of this worker; the lock guards the dict, each entry's lock its fetches.
_cache: dict = {}
_cache_lock = threading.Lock()


def _entry(cache_key) -> _Entry:
    with _cache_lock:
        entry = _cache.get(cache_key)
        if entry is None:
            entry = _cache[cache_key] = _Entry()
        return entry


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def forget(issuer: str) -> None:
    with _cache_lock:
        for k in [k for k in _cache if k[0] == issuer]:
            del _cache[k]


def _refresh(row, entry: _Entry, now: datetime) -> None:
    """One fetch; on failure the keys already cached keep working."""
    try:
        jwks, life = fetch_jwks(jwks_uri_of(row), allow_private=bool(row.allow_private_jwks))
    except FetchError as exc:
        entry.failed_at = now
        log.warning("JWKS for %s unavailable: %s", row.issuer, exc)
        if not entry.keys:
            raise
        return
    entry.keys = import_keys(jwks)
    entry.expires_at = now + life
    # an empty key set counts as a failure, so it is not refetched on every request
    entry.failed_at = None if entry.keys else now


def keys_for(row, kid: str | None) -> list:
    """The issuer's keys matching kid (all of them when the token names none). Fetches when the cache is
    empty or past its lifetime; refetches on an unknown kid at most once a minute; a failing issuer is
    retried at most once a minute while its cached keys keep working. row: a TrustedIssuer or a row of its
    columns (issuer, jwks_uri, allow_private_jwks)."""
    entry = _entry((row.issuer, jwks_uri_of(row), bool(row.allow_private_jwks)))
    with entry.lock:
        now = utcnow()
        backing_off = entry.failed_at is not None and now - entry.failed_at < REFETCH_INTERVAL
        stale = not entry.keys or (entry.expires_at is not None and now >= entry.expires_at)
        fetched = False
        if stale and not backing_off:
            _refresh(row, entry, now)
            fetched = True
        elif not entry.keys:
            raise FetchError("the issuer's JWKS failed less than a minute ago")
        if (kid is not None and kid not in entry.keys and not fetched and not backing_off
                and (entry.kid_refetch_at is None or now - entry.kid_refetch_at >= REFETCH_INTERVAL)):
            entry.kid_refetch_at = now
            _refresh(row, entry, now)
        if kid is None:
            return [k for k, _ in entry.keys.values()]
        found = entry.keys.get(kid)
        return [found[0]] if found else []
