"""What an agent says about itself cannot speak for the service: everywhere people read it (the claim mail,
the claim page, the portal, the console) it is labelled self-reported, quoted, capped, and carries no URL
a mail client or browser would make clickable (authmd/agent_text.py)."""
import re

import pytest

from authmd.agent_text import self_reported
from tests.fixtures.console import csrf_token, post_form
from tests.fixtures.flows import ANON, Agent, ClientTransport, Person, email_body

HOSTILE = "ACME Security Team: your account will be deleted – confirm at https://evil.example/login"
DEFANGED = "ACME Security Team: your account will be deleted – confirm at https[:]//evil[.]example/login"

# quoted as data; in a table cell the quote holds the console's clipped span (whole text in its title)
QUOTED = re.compile(r'<q class="data">(<span class="clip[^"]*" title="[^"]*">)?ACME Security Team')


def assert_safe(body: str, label: str = "self-reported"):
    """The hostile text is there only defanged, with the label; nothing of it is a link."""
    assert DEFANGED in body or DEFANGED.replace("–", "&ndash;") in body
    assert label in body
    assert "evil.example" not in body and not re.search(r"(?i)https?:/+[^\s\"'<>]*evil", body)
    assert 'href="https[' not in body and "evil[.]example\"" not in body


def hostile_agent(app) -> Agent:
    return Agent(ClientTransport(app), user_agent=HOSTILE)


def test_the_claim_mail_shows_the_user_agent_as_self_reported_defanged_text(app, smtp):
    agent = hostile_agent(app)
    reg = agent.register_anonymous()
    assert agent.claim(reg["claim_token"], "victim@example.com").status_code == 200
    [msg] = smtp.to("victim@example.com")
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    assert_safe(text)
    assert f'"{DEFANGED}"' in text  # quoted, as data
    assert_safe(html)
    assert "<code>&quot;ACME Security Team" in html
    # the only link in either body is the service's own claim link
    assert re.findall(r"https?://[^\s\"'<>]+", text) == [smtp.last_link("victim@example.com")]


def test_the_email_registration_mail_too(app, smtp):
    assert hostile_agent(app).post("/agent/auth", email_body("v2@example.com")).status_code == 200
    [msg] = smtp.to("v2@example.com")
    assert_safe(msg.get_body(preferencelist=("plain",)).get_content())
    assert_safe(msg.get_body(preferencelist=("html",)).get_content())


def test_the_claim_page_shows_it_as_self_reported_defanged_text(app, smtp):
    agent = hostile_agent(app)
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "victim@example.com")
    person = Person(ClientTransport(app), smtp)
    page = person.open(person.link("victim@example.com"))
    assert page.status_code == 200
    assert_safe(page.text)
    assert '<q class="data">ACME Security Team' in page.text


def _portal_user(app, smtp, email):
    client = app.test_client()
    r = post_form(client, "/portal/login", {"email": email})
    assert r.status_code == 200
    link = smtp.last_link(email, r"https?://\S+/portal/login/link\?token=\S+").replace("http://localhost:8000", "")
    page = client.get(link)
    client.post("/portal/login/link", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                            "token": link.split("token=")[1]})
    return client


def test_the_portal_pending_claim_and_its_deny_page_show_it_as_self_reported(app, smtp):
    agent = hostile_agent(app)
    reg = agent.register_anonymous()
    attempt = agent.claim(reg["claim_token"], "victim@example.com").json()
    user = _portal_user(app, smtp, "victim@example.com")
    home = user.get("/portal/").get_data(as_text=True)
    assert_safe(home)
    assert "<h3" in home and not re.search(r"<h3[^>]*>[^<]*ACME", home)  # never the heading
    deny = user.get(f"/portal/claims/{attempt['claim_attempt_id']}/deny").get_data(as_text=True)
    assert_safe(deny)


def test_my_agents_and_the_console_show_it_as_self_reported(app, smtp, admin_client):
    agent = hostile_agent(app)
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "victim@example.com")
    person = Person(ClientTransport(app), smtp)
    assert agent.complete(reg["claim_token"], person.reveal(person.link("victim@example.com"))).status_code == 200
    user = _portal_user(app, smtp, "victim@example.com")
    mine = user.get("/portal/").get_data(as_text=True)
    assert "self-reported" in mine and "evil.example" not in mine and "https://evil" not in mine
    assert "ACME Security Team" in mine  # capped to 40 characters there: the URL part is cut off anyway
    for path in ("/console/registrations", f"/console/registrations/{reg['registration_id']}"):
        page = admin_client.get(path)
        assert page.status_code == 200, path
        html = page.get_data(as_text=True)
        assert "self-reported" in html and "evil.example" not in html and "https://evil" not in html, path
        assert QUOTED.search(html)


@pytest.mark.parametrize("said, shown", [
    (HOSTILE, DEFANGED),
    ("TestAgent/1.0 (pytest)", "TestAgent/1.0 (pytest)"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109",
     "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109"),
    ("visit www.evil.example now", "visit www[.]evil[.]example now"),
    ("evil\u3002example and evil\uff0eexample", "evil[.]example and evil[.]example"),  # dots IDNA accepts
    ("mail me: a@evil.example", "mail me: a@evil[.]example"),
    ("http:\\\\evil.example", "http[:]\\\\evil[.]example"),
    ("a\u202eelpmaxe.live\u202c b\u200bc", "aelpmaxe[.]live bc"),  # bidi overrides and zero-width out
    ("two\r\nlines\tand  spaces", "two lines and spaces"),
    ("", None), ("   ", None), (None, None),
])
def test_self_reported_text_is_defanged(said, shown):
    assert self_reported(said) == shown


def test_self_reported_text_is_capped():
    shown = self_reported("x" * 500)
    assert len(shown) == 120 and shown.endswith("…")
    assert self_reported("evil.example/" + "a" * 50, limit=20) == "evil[.]example/aaaaaa…"


def test_registration_user_agents_are_stored_as_sent_and_shown_defanged(app, client):
    # defanging is for display: the audit trail keeps what the agent actually sent
    from authmd.extensions import db
    from authmd.models import Registration
    assert client.post("/agent/auth", json=ANON, headers={"User-Agent": HOSTILE}).status_code == 200
    with app.app_context():
        assert db.session.execute(db.select(Registration.user_agent)).scalar() == HOSTILE


def test_a_providers_agent_platform_is_shown_as_self_reported_too(app, client, provider, register_id_jag,
                                                                  admin_client, smtp):
    """agent_platform and agent_context_id come in a signed ID-JAG, but they are the provider's free text: the
    portal and the console show them like a User-Agent."""
    from tests.fixtures.provider import trust
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(agent_platform=HOSTILE, agent_context_id=HOSTILE))
    assert r.status_code == 200
    reg_id = r.get_json()["registration_id"]
    from authmd.extensions import db
    from authmd.models import User
    with app.app_context():
        user_id = db.session.execute(db.select(User.id).where(User.email == "user@example.com")).scalar()
    user = _portal_user(app, smtp, "user@example.com")
    pages = {"/portal/": user, "/console/delegations": admin_client, f"/console/users/{user_id}": admin_client,
             f"/console/registrations/{reg_id}": admin_client, "/console/registrations": admin_client}
    for path, who in pages.items():
        page = who.get(path)
        assert page.status_code == 200, path
        html = page.get_data(as_text=True)
        assert "self-reported" in html and "evil.example" not in html and "https://evil" not in html, path
        assert QUOTED.search(html), path
