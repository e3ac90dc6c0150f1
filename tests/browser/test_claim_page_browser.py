"""In real chromium with JavaScript off: a person opens an agent's verification_uri, signs in with the emailed
link, lands back on the claim page, presses Authorize and reads the code the agent then completes with."""
import pytest
import requests

from tests.fixtures.person import SIGN_IN_LINK

pytestmark = pytest.mark.browser


def test_the_latest_claim_works_in_a_browser_without_javascript(live_server, smtp, browser):
    base = live_server.url
    agent = requests.post(base + "/agent/identity", json={"type": "service_auth", "login_hint": "ada@example.com"},
                          timeout=10).json()
    uri = agent["claim"]["attempt"]["verification_uri"].replace("http://localhost:8000", base)
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto(uri)
        assert "/portal/login?" in page.url
        assert page.get_by_label("Email").input_value() == "ada@example.com"
        page.get_by_role("button", name="Email me a sign-in link").click()
        page.get_by_role("heading", name="Check your email").wait_for()
        page.goto(smtp.last_link("ada@example.com", SIGN_IN_LINK).replace("http://localhost:8000", base))
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="An agent asks to act for you").wait_for()
        assert page.url == uri
        assert "(self-reported, not verified)" in page.inner_text("main")
        page.get_by_role("button", name="Authorize").click()
        code = page.locator("#user-code").inner_text().strip()
        assert len(code) == 6 and code.isdigit()
        done = requests.post(base + "/agent/identity/claim/complete",
                             json={"claim_token": agent["claim"]["token"], "user_code": code}, timeout=10)
        assert done.status_code == 200, done.text
        page.goto(uri)
        page.locator("#claimed").wait_for()
        assert code not in page.content()
    finally:
        context.close()
