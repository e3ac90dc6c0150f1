"""Client IP: X-Forwarded-For is believed only with AUTHMD_TRUSTED_PROXIES=N (Werkzeug's ProxyFix)."""
import pytest

from authmd.extensions import db
from authmd.models import AuditEvent, Registration

ANON = {"type": "anonymous", "requested_credential_type": "api_key"}


def register(client, xff=None, ip="127.0.0.1"):
    headers = {"X-Forwarded-For": xff} if xff else {}
    return client.post("/agent/auth", json=ANON, headers=headers, environ_base={"REMOTE_ADDR": ip})


def recorded_ip(app, registration_id):
    with app.app_context():
        reg = db.session.get(Registration, registration_id)
        event = db.session.execute(db.select(AuditEvent).where(
            AuditEvent.registration_id == registration_id, AuditEvent.event == "registration.created")).scalar_one()
        return reg.ip, event.ip


def test_forwarded_for_is_ignored_by_default(app, make_app):
    limited = make_app(RATELIMIT_ENABLED=True)
    client = limited.test_client()
    first = register(client, xff="203.0.113.1").get_json()
    assert recorded_ip(limited, first["registration_id"]) == ("127.0.0.1", "127.0.0.1")
    for i in range(2, 6):
        assert register(client, xff=f"203.0.113.{i}").status_code == 200
    # a client that invents a new X-Forwarded-For each time cannot walk around the per-IP limit
    resp = register(client, xff="203.0.113.99")
    assert resp.status_code == 429 and resp.get_json()["error"] == "rate_limited"


@pytest.mark.parametrize("hops,xff,expected", [
    (1, "198.51.100.7", "198.51.100.7"),
    (1, "6.6.6.6, 198.51.100.7", "198.51.100.7"),     # only the hop our proxy added is believed
    (2, "6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7"),
])
def test_forwarded_for_names_the_client_behind_trusted_proxies(app, make_app, hops, xff, expected):
    proxied = make_app(TRUSTED_PROXIES=hops)
    reg = register(proxied.test_client(), xff=xff, ip="10.0.0.1").get_json()
    assert recorded_ip(proxied, reg["registration_id"]) == (expected, expected)


def test_limits_key_on_the_forwarded_client_behind_a_trusted_proxy(app, make_app):
    client = make_app(TRUSTED_PROXIES=1, RATELIMIT_ENABLED=True).test_client()
    for _ in range(5):
        assert register(client, xff="198.51.100.7", ip="10.0.0.1").status_code == 200
    assert register(client, xff="198.51.100.7", ip="10.0.0.1").status_code == 429
    # another client behind the same proxy has its own budget
    assert register(client, xff="198.51.100.8", ip="10.0.0.1").status_code == 200
