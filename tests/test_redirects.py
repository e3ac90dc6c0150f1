"""Redirect targets a request names (the sign-in's next=, the revoke page's back=) stay on this site:
every form a browser could read as another host falls back to the default; same-site paths pass."""
import pytest

from authmd.console.redirects import safe_target
from tests.fixtures.console import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, post_form

DEFAULT = "/console/"

# each is a way to name another host (or no path at all) that a browser or a server might follow
BAD = [
    "//evil.example", "//evil.example/console/", "///evil.example", "/\\evil.example", "\\\\evil.example",
    "/\\/evil.example", "\\/evil.example", "/\t/evil.example", "/\n/evil.example", "/\r/evil.example",
    "\t//evil.example", " //evil.example", "/%09/evil.example".replace("%09", "\t"), "/\x00/evil.example",
    "https://evil.example", "http://evil.example/console/", "HTTPS://evil.example", "javascript:alert(1)",
    "data:text/html,hi", "evil.example", "console/users", "./console/", "../console/", "?next=x", "#frag",
    "", None, 42, ["/console/"], "/" + "a" * 2001,
]
GOOD = ["/console/", "/console/users", "/console/users?q=a&admins=1", "/console/registrations/reg_1?x=%2F%2Fy",
        "/console/audit?event=claim.*&from=2026-01-01", "/portal/", "/console/settings#limits"]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_target_that_could_leave_the_site_falls_back(value):
    assert safe_target(value, DEFAULT) == DEFAULT


@pytest.mark.parametrize("value", GOOD)
def test_a_same_site_path_with_a_query_passes(value):
    assert safe_target(value, DEFAULT) == value


# what the browser sends: the query string as it appears in the address bar
LOGIN_BAD = ["/%09/evil.example", "//evil.example/", "/%5Cevil.example", "%2F%2Fevil.example", "/%0A/evil.example",
             "https://evil.example/", "https:evil.example", "evil.example", "/\\evil.example"]


@pytest.mark.parametrize("raw", LOGIN_BAD)
def test_sign_in_never_redirects_off_site(app, admin_user, raw):
    client = app.test_client()
    url = "/console/login?next=" + raw
    page = client.get(url)
    r = client.post(url, data={"csrf_token": csrf_token(page.get_data(as_text=True)), "email": ADMIN_EMAIL,
                               "password": ADMIN_PASSWORD})
    assert r.status_code == 302 and r.headers["Location"] == "/console/"


def test_sign_in_follows_a_same_site_next_with_its_query(app, admin_user):
    client = app.test_client()
    r = post_form(client, "/console/login?next=/console/users%3Fq%3Droot%26admins%3D1",
                  {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert r.status_code == 302 and r.headers["Location"] == "/console/users?q=root&admins=1"
    # the guard builds next= for the page asked for, and sign-in brings the admin back there
    fresh = app.test_client()
    to_login = fresh.get("/console/audit?event=admin.login")
    assert to_login.status_code == 302
    login_url = to_login.headers["Location"]
    r = post_form(fresh, login_url, {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert r.headers["Location"] == "/console/audit?event=admin.login"


def _revoke_target(app):
    reg = app.test_client().post("/agent/auth", json={"type": "anonymous"}).get_json()
    return reg["registration_id"]


REVOKE_BAD = ["//evil.example", "/%09/evil.example", "/%5Cevil.example", "https://evil.example/", "evil.example",
              "/%0D%0A/evil.example", "javascript:alert(1)"]


@pytest.mark.parametrize("raw", REVOKE_BAD)
def test_the_revoke_pages_cancel_link_and_redirect_stay_on_site(app, admin_client, raw):
    target = _revoke_target(app)
    url = f"/console/revoke?kind=registration&target={target}&back={raw}"
    page = admin_client.get(url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'href="/console/registrations">Cancel' in html
    assert 'name="back" value="/console/registrations"' in html
    assert "evil" not in html and "javascript:" not in html
    # the POST names back= itself (a forged form): the redirect after revoking falls back too
    r = admin_client.post("/console/revoke?back=" + raw, data={
        "csrf_token": csrf_token(html), "kind": "registration", "target": target})
    assert r.status_code == 302 and r.headers["Location"] == "/console/registrations"


def test_the_revoke_page_goes_back_to_a_same_site_page(app, admin_client):
    target = _revoke_target(app)
    back = f"/console/registrations/{target}"
    page = admin_client.get(f"/console/revoke?kind=registration&target={target}&back={back}")
    html = page.get_data(as_text=True)
    assert f'href="{back}">Cancel' in html
    r = admin_client.post("/console/revoke", data={"csrf_token": csrf_token(html), "kind": "registration",
                                                   "target": target, "back": back})
    assert r.status_code == 302 and r.headers["Location"] == back
