"""Console page /console/resource-servers: add (the secret shown once, never cached), rotate and remove with
a confirmation, disable/enable; errors next to the field; admins only."""
import base64
import json
import re

import pytest

from authmd.extensions import db
from authmd.models import ResourceServer
from tests.conftest import count_rows
from tests.fixtures.console import csrf_token, post_form
from tests.fixtures.flows import ANON, audit_rows

PAGE = "/console/resource-servers/"


def _secret_on(html: str) -> tuple[str, str]:
    client_id = re.search(r"<code>(rs_[0-9a-f]+)</code>", html).group(1)
    secret = re.search(r'<code id="client-secret">(rsec_[^<]+)</code>', html).group(1)
    return client_id, secret


def _introspect(client, client_id, secret, token="sk_unknown"):
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post("/oauth2/introspect", data={"token": token}, headers={"Authorization": "Basic " + auth})


def _row(app, name="Billing API"):
    with app.app_context():
        return db.session.execute(db.select(ResourceServer).where(ResourceServer.name == name)).scalar()


def test_the_page_is_in_the_navigation_and_lists_servers(admin_client):
    page = admin_client.get("/console/").get_data(as_text=True)
    assert 'href="/console/resource-servers/"' in page
    r = admin_client.get(PAGE)
    assert r.status_code == 200 and "No resource server yet." in r.get_data(as_text=True)


def test_add_shows_the_secret_once_and_never_again(app, admin_client):
    r = post_form(admin_client, PAGE, {"name": "Billing API"})
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    html = r.get_data(as_text=True)
    client_id, secret = _secret_on(html)
    assert "shown this once" in html
    assert _introspect(app.test_client(), client_id, secret).get_json() == {"active": False}  # it works
    listing = admin_client.get(PAGE).get_data(as_text=True)
    assert "Billing API" in listing and client_id in listing and secret not in listing
    row = _row(app)
    assert row.secret_digest != secret and secret not in json.dumps(audit_rows(app))
    [event] = audit_rows(app, "resource_server.added")
    assert event["actor_kind"] == "admin" and event["actor_id"] == "root@example.com" and event["user_id"]


@pytest.mark.parametrize("name,message", [("", "Name the API"), ("bad;name", "A name is"), ("x" * 101, "")])
def test_a_bad_name_is_shown_next_to_the_field(app, admin_client, name, message):
    before = count_rows(app)
    r = post_form(admin_client, PAGE, {"name": name})
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert 'class="field-error"' in html and message in html and "client-secret" not in html
    assert count_rows(app) == before


def test_a_taken_name_is_shown_next_to_the_field(app, admin_client):
    post_form(admin_client, PAGE, {"name": "Billing API"})
    before = count_rows(app)
    r = post_form(admin_client, PAGE, {"name": "Billing API"})
    assert r.status_code == 400 and "exists" in r.get_data(as_text=True) and count_rows(app) == before


def test_rotate_asks_first_then_shows_the_new_secret_once(app, admin_client):
    client_id, old = _secret_on(post_form(admin_client, PAGE, {"name": "Billing API"}).get_data(as_text=True))
    url = f"{PAGE}{_row(app).id}/rotate"
    before = count_rows(app)
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and "Rotate secret" in confirm.get_data(as_text=True)
    assert count_rows(app) == before  # asking changes nothing
    r = post_form(admin_client, url, {})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    same_id, new = _secret_on(r.get_data(as_text=True))
    assert same_id == client_id and new != old
    api = app.test_client()
    assert _introspect(api, client_id, old).status_code == 401
    assert _introspect(api, client_id, new).status_code == 200
    assert [e["event"] for e in audit_rows(app) if e["event"].startswith("resource_server.")] == [
        "resource_server.added", "resource_server.secret_rotated"]


def test_disable_and_enable(app, admin_client):
    client_id, secret = _secret_on(post_form(admin_client, PAGE, {"name": "Billing API"}).get_data(as_text=True))
    url = f"{PAGE}{_row(app).id}/toggle"
    r = post_form(admin_client, PAGE, {}, post_url=url)
    assert r.status_code == 302 and _row(app).enabled is False
    api = app.test_client()
    assert _introspect(api, client_id, secret).status_code == 401
    assert "disabled" in admin_client.get(PAGE).get_data(as_text=True)
    post_form(admin_client, PAGE, {}, post_url=url)
    assert _row(app).enabled is True and _introspect(api, client_id, secret).status_code == 200


def test_remove_asks_first(app, admin_client):
    client_id, secret = _secret_on(post_form(admin_client, PAGE, {"name": "Billing API"}).get_data(as_text=True))
    url = f"{PAGE}{_row(app).id}/remove"
    assert "Remove Billing API?" in admin_client.get(url).get_data(as_text=True) and _row(app) is not None
    r = post_form(admin_client, url, {})
    assert r.status_code == 302 and _row(app) is None
    assert _introspect(app.test_client(), client_id, secret).status_code == 401
    assert audit_rows(app, "resource_server.removed")[0]["data"]["client_id"] == client_id


def test_changes_without_the_csrf_token_are_refused(app, admin_client):
    post_form(admin_client, PAGE, {"name": "Billing API"})
    row_id = _row(app).id
    before = count_rows(app)
    assert admin_client.post(PAGE, data={"name": "Other"}).status_code == 400
    for action in ("rotate", "toggle", "remove"):
        assert admin_client.post(f"{PAGE}{row_id}/{action}").status_code == 400
    assert count_rows(app) == before and _row(app).enabled is True


def test_unknown_ids_are_404(admin_client):
    for action in ("rotate", "remove"):
        assert admin_client.get(f"{PAGE}999/{action}").status_code == 404


def test_signed_out_visitors_and_non_admins_are_kept_out(app, client):
    r = client.get(PAGE)
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    page = client.get("/console/login")
    r = client.post(PAGE, data={"csrf_token": csrf_token(page.get_data(as_text=True)), "name": "Sneaky"})
    assert r.status_code == 302 and _row(app, "Sneaky") is None
    # a signed-in user who is no admin (a portal user): Flask-Login's session keys, as its login_user sets them
    from authmd.models import User
    from authmd.util import utcnow
    with app.app_context():
        user = User(email="user@example.com", email_verified=True, created_at=utcnow())
        db.session.add(user)
        db.session.commit()
        user_id = user.id
    with client.session_transaction() as session:
        # a portal session as open_session stamps it (method, generation, sign-in time)
        now = utcnow().isoformat()
        session.update({"_user_id": str(user_id), "_fresh": True, "auth_method": "link", "gen": 0,
                        "signed_in_at": now, "last_active": now})
    assert client.get(PAGE).status_code == 403
    assert client.post("/agent/auth", json=ANON).status_code == 200  # the agent side is untouched
