"""The console session stays off agent-facing answers (authmd/cookie_session.py): a browser signed in to the
console sends its cookie to every path of the origin, and an answer that says `Vary: Cookie` (or sets a
cookie) cannot be shared by a cache in front of authmd, though the spec lets clients cache discovery."""
import pytest

from tests.fixtures.flows import ANON

AGENT_GETS = ["/auth.md", "/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource",
              "/healthz", "/readyz", "/api/resource"]


def no_cookie_business(r):
    return "cookie" not in r.headers.get("Vary", "").lower() and "Set-Cookie" not in r.headers


@pytest.mark.parametrize("path", AGENT_GETS)
def test_agent_facing_gets_do_not_vary_on_the_console_cookie(admin_client, path):
    r = admin_client.get(path)
    assert r.status_code in (200, 401), r.status_code
    assert no_cookie_business(r), dict(r.headers)


def test_agent_facing_posts_do_not_vary_on_the_console_cookie_and_the_session_survives(admin_client):
    r = admin_client.post("/agent/auth", json=ANON)
    assert r.status_code == 200 and no_cookie_business(r)
    credential = r.get_json()["credential"]
    r = admin_client.get("/api/resource", headers={"Authorization": "Bearer " + credential})
    assert r.status_code == 200 and no_cookie_business(r)
    r = admin_client.post("/agent/auth/claim", json={"claim_token": "clm_nope", "email": "a@example.com"})
    assert r.status_code == 401 and no_cookie_business(r)
    assert admin_client.get("/console/").status_code == 200  # still signed in


def test_pages_that_use_the_session_still_say_so(admin_client, agent, person, smtp):
    r = admin_client.get("/console/")
    assert r.status_code == 200 and "cookie" in r.headers.get("Vary", "").lower()
    # the claim page (a human's page under /agent/auth) keeps its CSRF token in the session
    reg = agent.register_anonymous()
    assert agent.claim(reg["claim_token"], "sam@example.com").status_code == 200
    page = person.open(person.link("sam@example.com"))
    assert page.status_code == 200 and "Set-Cookie" in page.headers
    assert "cookie" in page.headers.get("Vary", "").lower()
