"""In a real browser: an admin configures and revokes; a user signs in by email link and answers a claim."""
import re

import pytest
import requests

from authmd.agent_text import self_reported

from tests.fixtures.console import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.browser


def test_admin_adds_issuer_publishes_authmd_and_revokes_an_agent(live_server, admin_user, page):
    base = live_server.url
    agent = requests.post(base + "/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).json()
    key = {"Authorization": "Bearer " + agent["credential"]}
    assert requests.get(base + "/api/resource", headers=key).status_code == 200

    page.goto(base + "/console/")
    assert "/console/login" in page.url
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()

    # add a trusted issuer (a validation error first, shown beside the field)
    page.get_by_role("link", name="Issuers").click()
    page.get_by_role("link", name="Add an issuer").click()
    page.get_by_label("Issuer URL").fill("http://provider.example")
    page.get_by_role("button", name="Save").click()
    assert "Use https://" in page.locator("#issuer-error").inner_text()
    page.get_by_label("Issuer URL").fill("https://provider.example")
    page.get_by_label("Display name").fill("Example provider")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved https://provider.example.").wait_for()
    assert page.get_by_role("cell", name="https://provider.example").is_visible()
    meta = requests.get(base + "/.well-known/oauth-authorization-server").json()
    assert meta["agent_auth"]["trusted_issuers"] == ["https://provider.example"]

    # edit and publish auth.md, without relying on JavaScript for the preview
    page.get_by_role("link", name="auth.md").first.click()
    page.get_by_label("auth.md template").fill("# Welcome agents of {{ service_name }}\n\nRegister at {{ register_uri }}.\n")
    page.get_by_role("button", name="Preview").click()
    page.locator("#preview h1").get_by_text("Welcome agents of authmd").wait_for()
    page.get_by_label("Note for the history").fill("shorter doc")
    page.get_by_role("button", name="Publish").click()
    page.get_by_text("/auth.md serves it now").wait_for()
    served = requests.get(base + "/auth.md").text
    assert served == "# Welcome agents of authmd\n\nRegister at http://localhost:8000/agent/auth.\n"

    # revoke the agent's registration, confirming first
    page.get_by_role("link", name="Registrations").click()
    page.get_by_role("link", name=agent["registration_id"]).click()
    page.get_by_role("link", name="Revoke this registration").click()
    assert "1 live credential(s) will stop working" in page.locator(".count").inner_text()
    assert requests.get(base + "/api/resource", headers=key).status_code == 200
    page.get_by_role("button", name="Revoke").click()
    page.get_by_text("Revoked 1 credential(s)").wait_for()
    after = requests.get(base + "/api/resource", headers=key)
    assert after.status_code == 401 and after.json()["error"] == "invalid_token"
    assert agent["credential"] not in page.content()


def test_user_signs_in_by_email_link_reveals_code_and_agent_completes_claim(live_server, smtp, page):
    base = live_server.url
    agent = requests.post(base + "/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).json()
    r = requests.post(base + "/agent/auth/claim", json={"claim_token": agent["claim_token"], "email": "ada@example.com"})
    assert r.status_code == 200

    page.goto(base + "/portal/login")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    link = smtp.last_link("ada@example.com", r"https?://\S+/portal/login/link\?token=\S+")
    page.goto(link.replace("http://localhost:8000", base))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Agents asking to act for you").wait_for()
    assert "api.read, api.write" in page.locator(".claim-request").inner_text()

    page.get_by_role("button", name="Show code").click()
    code = page.locator("#otp").inner_text().strip()
    assert re.fullmatch(r"\d{6}", code)
    done = requests.post(base + "/agent/auth/claim/complete", json={"claim_token": agent["claim_token"], "otp": code})
    assert done.status_code == 200 and done.json()["status"] == "claimed"
    me = requests.get(base + "/api/resource", headers={"Authorization": "Bearer " + agent["credential"]}).json()
    assert me["user"]["email"] == "ada@example.com" and "api.write" in me["credential"]["scope"]

    page.goto(base + "/portal/")
    page.get_by_text("No agent is waiting for you.").wait_for()
    assert page.get_by_role("cell", name=re.compile(agent["registration_id"])).is_visible()


def test_console_is_usable_on_a_narrow_screen_and_by_keyboard(live_server, admin_user, browser):
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    try:
        page.goto(live_server.url + "/console/login")
        # the email field takes the focus on load (autofocus), so a keyboard user types there at once. (Tabbing
        # towards it raced the autofocus under load: a Tab landing just after it moved past the field.)
        page.wait_for_function("document.activeElement && document.activeElement.id === 'email'")
        active = lambda: page.evaluate("document.activeElement && document.activeElement.id")  # noqa: E731
        page.keyboard.type(ADMIN_EMAIL)
        page.keyboard.press("Tab")
        assert active() == "password"
        page.keyboard.type(ADMIN_PASSWORD)
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Dashboard").wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375 + 1, f"the dashboard scrolls sideways on a phone ({width}px)"
    finally:
        context.close()


def test_live_preview_updates_as_the_admin_types(live_server, admin_user, page):
    csp_errors = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(live_server.url + "/console/login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(live_server.url + "/console/authmd")
    page.get_by_label("auth.md template").fill("## Typed live for {{ service_name }}")
    page.locator("#preview h2").get_by_text("Typed live for authmd").wait_for()
    assert csp_errors == []


def test_first_admin_is_created_from_the_link_init_db_prints(live_server, runner, page):
    base = live_server.url
    page.goto(base + "/console/login")
    assert "No admin yet" in page.locator("main").inner_text()

    printed = runner.invoke(args=["init-db"]).output
    link = re.search(r"open (http://localhost:8000/console/setup\?token=\S+) to create one", printed).group(1)
    page.goto(link.replace("http://localhost:8000", base))
    page.get_by_label("Email").fill("first@example.com")
    page.get_by_label("Password", exact=True).fill("four random words here")
    page.get_by_label("Repeat the password").fill("four random words HERE")
    page.get_by_role("button", name="Create admin").click()
    assert "The two passwords differ." in page.locator("#confirm-error").inner_text()
    page.get_by_label("Password", exact=True).fill("four random words here")
    page.get_by_label("Repeat the password").fill("four random words here")
    page.get_by_role("button", name="Create admin").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    assert "first@example.com is the first admin" in page.content()

    page.get_by_role("button", name="Sign out first@example.com").click()
    page.get_by_label("Email").fill("first@example.com")
    page.get_by_label("Password").fill("four random words here")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    assert requests.get(link.replace("http://localhost:8000", base)).status_code == 404


LONG_EMAIL = "margaret.hamilton.long-address@apollo-guidance.example.com"
LONG_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 "
           "Safari/537.36 agent-runner/3.2.1")


@pytest.mark.parametrize("width", [900, 1280])
def test_the_registrations_table_fits_the_window_and_clips_long_values_with_a_title(live_server, admin_user,
                                                                                   browser, width):
    base = live_server.url
    ids = [requests.post(base + "/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"},
                         headers={"User-Agent": LONG_UA}).json()["registration_id"] for _ in range(2)]
    ids.append(requests.post(base + "/agent/auth", json={"type": "identity_assertion", "assertion_type": "verified_email",
                                                         "assertion": LONG_EMAIL, "requested_credential_type": "api_key"}
                             ).json()["registration_id"])
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    try:
        page.goto(base + "/console/login")
        page.get_by_label("Email").fill(ADMIN_EMAIL)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Dashboard").wait_for()
        page.goto(base + "/console/registrations")
        sizes = page.evaluate("""() => {
            const table = document.querySelector("table.registrations");
            const box = table.parentElement;  // the .scroll wrapper: it would scroll if the table were wider
            return {page: document.documentElement.scrollWidth, table: table.scrollWidth, box: box.clientWidth};
        }""")
        assert sizes["page"] <= width, f"the page scrolls sideways at {width}px: {sizes}"
        assert sizes["table"] <= sizes["box"], f"the table is wider than its box at {width}px: {sizes}"
        # every cell's content stays inside its cell: nothing spills over the next column
        spills = page.evaluate("""() => [...document.querySelectorAll("table.registrations td")]
            .filter(td => [...td.children].some(el => el.getBoundingClientRect().right > td.getBoundingClientRect().right + 1))
            .map(td => td.innerText)""")
        assert spills == []
        for reg_id in ids:
            link = page.locator(f'table.registrations a[title="{reg_id}"]')
            assert link.inner_text() == reg_id  # the whole id is in the page, for search and screen readers
            link_style = link.evaluate("""el => ({clipped: el.scrollWidth > el.clientWidth,
                                                  overflow: getComputedStyle(el).textOverflow})""")
            assert link_style["overflow"] == "ellipsis"
            if width == 900:
                assert link_style["clipped"], f"{reg_id} is not cut at {width}px"
        email = page.locator(f'table.registrations span[title="{LONG_EMAIL}"]')
        assert email.inner_text() == LONG_EMAIL
        assert email.evaluate("el => el.scrollWidth > el.clientWidth"), "the long email is not cut"
        agent = page.locator("table.registrations span.clip", has_text="HeadlessChrome").first
        assert agent.get_attribute("title") == self_reported(LONG_UA)  # the agent's words, capped and defanged
        # a clipped line is one line: no id, email or agent is broken across lines
        heights = page.evaluate("""() => [...document.querySelectorAll("table.registrations .clip")]
            .map(el => el.getBoundingClientRect().height)""")
        assert max(heights) < 2 * min(heights)
        page.locator(f'a[title="{ids[0]}"]').click()
        page.get_by_role("heading", name=f"Registration {ids[0]}").wait_for()
    finally:
        context.close()
