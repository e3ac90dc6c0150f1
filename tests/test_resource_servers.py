"""Resource servers: `flask resource-servers …` (the domain the console shares), secrets kept as digests
only and never in an audit row, and each worker's short cache of the table (an injected clock, two apps
on one database standing in for two workers)."""
import hashlib
import json
from datetime import datetime, timedelta

import pytest

from authmd import resource_servers
from authmd.extensions import db
from authmd.models import ResourceServer
from tests.conftest import count_rows
from tests.fixtures.flows import ANON, audit_rows
from tests.fixtures.resource import ResourceServerCredentials, add_resource_server

T0 = datetime(2026, 5, 20, 12, 0, 0)


@pytest.mark.parametrize("args", [[], ["add"], ["list"], ["rotate-secret"], ["disable"], ["enable"], ["remove"]])
def test_every_command_has_help(runner, args):
    r = runner.invoke(args=["resource-servers", *args, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def _stored(app) -> list[dict]:
    with app.app_context():
        return [dict(row._mapping) for row in db.session.execute(db.select(ResourceServer.__table__))]


def _secret_nowhere_but_as_digest(app, secret):
    rows = _stored(app)
    assert secret not in json.dumps(rows, default=str)
    assert hashlib.sha256(secret.encode()).hexdigest() in {r["secret_digest"] for r in rows}
    assert secret not in json.dumps(audit_rows(app))


def test_add_prints_the_client_id_and_the_secret_once(app, runner):
    r = runner.invoke(args=["resource-servers", "add", "Billing API"])
    assert r.exit_code == 0, r.output
    client_id = r.output.split("client_id:", 1)[1].split()[0]
    secret = r.output.split("client_secret:", 1)[1].split()[0]
    assert client_id.startswith("rs_") and secret.startswith("rsec_") and len(secret) >= 40
    _secret_nowhere_but_as_digest(app, secret)
    listing = runner.invoke(args=["resource-servers", "list"]).output
    assert "Billing API\t" + client_id + "\tenabled" in listing and "never used" in listing
    assert secret not in listing
    [event] = audit_rows(app)
    assert event["event"] == "resource_server.added" and event["actor_kind"] == "admin" and event["actor_id"] == "cli"
    assert event["data"] == {"client_id": client_id, "resource_server": "Billing API",
                             "resource_server_id": _stored(app)[0]["id"]}


def test_add_json_prints_one_object(app, runner):
    r = runner.invoke(args=["resource-servers", "add", "--json", "Billing"])
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert set(out) == {"name", "client_id", "client_secret"} and out["name"] == "Billing"
    _secret_nowhere_but_as_digest(app, out["client_secret"])


@pytest.mark.parametrize("name", ["", " ", "-lead", "tab\there", "semi;colon", "new\nline", "x" * 101, "émoji"])
def test_bad_names_are_refused_and_nothing_is_written(app, runner, name):
    before = count_rows(app)
    r = runner.invoke(args=["resource-servers", "add", "--", name])
    assert r.exit_code != 0 and "A name is" in r.output
    assert count_rows(app) == before


def test_a_taken_name_is_refused(app, runner):
    assert runner.invoke(args=["resource-servers", "add", "Billing"]).exit_code == 0
    before = count_rows(app)
    r = runner.invoke(args=["resource-servers", "add", "Billing"])
    assert r.exit_code != 0 and "exists" in r.output and count_rows(app) == before


def test_rotate_disable_enable_remove(app, runner, client):
    out = json.loads(runner.invoke(args=["resource-servers", "add", "--json", "Billing"]).output)
    first = ResourceServerCredentials("Billing", out["client_id"], out["client_secret"])
    token = client.post("/agent/auth", json=ANON).get_json()["credential"]

    def works(creds):
        return client.post("/oauth2/introspect", data={"token": token}, headers=creds.basic).status_code == 200

    assert works(first)
    r = runner.invoke(args=["resource-servers", "rotate-secret", "--json", "Billing"])
    second = ResourceServerCredentials("Billing", first.client_id, json.loads(r.output)["client_secret"])
    assert second.secret != first.secret and not works(first) and works(second)
    _secret_nowhere_but_as_digest(app, second.secret)

    assert runner.invoke(args=["resource-servers", "disable", "Billing"]).output.strip() == "disabled Billing"
    assert "disabled" in runner.invoke(args=["resource-servers", "list"]).output and not works(second)
    assert "already disabled" in runner.invoke(args=["resource-servers", "disable", "Billing"]).output
    assert runner.invoke(args=["resource-servers", "enable", "Billing"]).output.strip() == "enabled Billing"
    assert works(second)
    assert runner.invoke(args=["resource-servers", "remove", "Billing"]).output.strip() == "removed Billing"
    assert not works(second) and _stored(app) == []
    assert runner.invoke(args=["resource-servers", "list"]).output.strip() == "no resource servers"
    events = [e["event"] for e in audit_rows(app) if e["event"].startswith("resource_server.")]
    assert events == ["resource_server.added", "resource_server.secret_rotated", "resource_server.disabled",
                      "resource_server.enabled", "resource_server.removed"]
    for secret in (first.secret, second.secret):
        assert secret not in json.dumps(audit_rows(app))


@pytest.mark.parametrize("command", ["rotate-secret", "disable", "enable", "remove"])
def test_an_unknown_name_is_an_error(app, runner, command):
    before = count_rows(app)
    r = runner.invoke(args=["resource-servers", command, "nope"])
    assert r.exit_code != 0 and "no resource server named nope" in r.output and count_rows(app) == before


# ------------------------------------------------------------------ the per-worker cache

@pytest.fixture
def two_workers(make_app, app, clock):
    """Two apps on one database: each keeps its own copy of the table, as two gunicorn workers do."""
    clock.frozen = T0
    resource_servers.forget()
    return app, make_app()


def _check(app, creds, now):
    with app.app_context():
        try:
            return resource_servers.authenticate(creds.client_id, creds.secret, now).client_id
        except Exception as exc:  # noqa: BLE001 - the test reads the refusal
            return getattr(exc, "code", repr(exc))
        finally:
            db.session.rollback()


def test_a_disabled_resource_server_stops_within_a_second_on_every_worker(two_workers, clock):
    worker_a, worker_b = two_workers
    creds = add_resource_server(worker_a)
    assert _check(worker_b, creds, clock()) == creds.client_id  # worker B now holds a copy
    with worker_a.app_context():
        resource_servers.set_enabled(resource_servers.by_name(creds.name), False, actor_id="test")
        db.session.commit()
    assert _check(worker_a, creds, clock()) == "invalid_client"  # the worker that committed: at once
    clock.advance(milliseconds=999)
    assert _check(worker_b, creds, clock()) == creds.client_id  # the other: until its copy is a second old
    clock.advance(milliseconds=1)
    assert _check(worker_b, creds, clock()) == "invalid_client"


def test_a_rotated_secret_stops_within_a_second_and_the_new_one_works_at_once(two_workers, clock):
    worker_a, worker_b = two_workers
    old = add_resource_server(worker_a)
    assert _check(worker_b, old, clock()) == old.client_id
    with worker_a.app_context():
        new = ResourceServerCredentials(old.name, old.client_id,
                                        resource_servers.rotate(resource_servers.by_name(old.name), actor_id="test"))
        db.session.commit()
    assert _check(worker_b, new, clock()) == old.client_id  # a miss is read from the database
    clock.advance(seconds=1)
    assert _check(worker_b, old, clock()) == "invalid_client"


def test_a_new_or_re_enabled_server_works_at_once_on_every_worker(two_workers, clock):
    worker_a, worker_b = two_workers
    first = add_resource_server(worker_a, "First")
    assert _check(worker_b, first, clock()) == first.client_id
    second = add_resource_server(worker_a, "Second")
    assert _check(worker_b, second, clock()) == second.client_id
    with worker_a.app_context():
        resource_servers.set_enabled(resource_servers.by_name("First"), False, actor_id="test")
        db.session.commit()
    clock.advance(seconds=1)
    assert _check(worker_b, first, clock()) == "invalid_client"
    with worker_a.app_context():
        resource_servers.set_enabled(resource_servers.by_name("First"), True, actor_id="test")
        db.session.commit()
    assert _check(worker_b, first, clock()) == first.client_id


def test_without_the_cache_every_check_reads_the_database(make_app, app, clock):
    clock.frozen = T0
    worker_a, worker_b = app, make_app(RESOURCE_SERVER_CACHE_SECONDS=0)
    creds = add_resource_server(worker_a)
    assert _check(worker_b, creds, clock()) == creds.client_id
    with worker_a.app_context():
        resource_servers.remove(resource_servers.by_name(creds.name), actor_id="test")
        db.session.commit()
    assert _check(worker_b, creds, clock()) == "invalid_client"


def test_a_clock_that_goes_back_reloads_the_table(two_workers, clock):
    worker_a, worker_b = two_workers
    creds = add_resource_server(worker_a)
    assert _check(worker_b, creds, clock()) == creds.client_id
    with worker_a.app_context():
        resource_servers.set_enabled(resource_servers.by_name(creds.name), False, actor_id="test")
        db.session.commit()
    clock.advance(seconds=-5)
    assert _check(worker_b, creds, clock()) == "invalid_client"


def test_last_used_is_written_at_most_once_a_minute(app, client, clock, resource_server):
    clock.frozen = T0
    token = client.post("/agent/auth", json=ANON).get_json()["credential"]

    def last_used():
        with app.app_context():
            return db.session.execute(db.select(ResourceServer.last_used_at)).scalar()

    client.post("/oauth2/introspect", data={"token": token}, headers=resource_server.basic)
    assert last_used() == T0
    clock.advance(seconds=59)
    client.post("/oauth2/introspect", data={"token": token}, headers=resource_server.basic)
    assert last_used() == T0
    clock.advance(seconds=1)
    client.post("/oauth2/introspect", data={"token": "sk_unknown"}, headers=resource_server.basic)
    assert last_used() == T0 + timedelta(seconds=60)  # an inactive answer is a use too
