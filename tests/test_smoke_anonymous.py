"""The anonymous start, end to end over real HTTP and real SMTP, as an agent and a person would walk it."""
import re

import requests


def test_anonymous_key_is_claimed_through_the_emailed_code_and_upgraded_in_place(live_server, smtp):
    base = live_server.url
    reg = requests.post(base + "/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).json()
    key, claim_token = reg["credential"], reg["claim_token"]
    auth = {"Authorization": "Bearer " + key}
    assert requests.get(base + "/api/resource", headers=auth).json()["credential"]["scope"] == ["api.read"]
    assert requests.post(base + "/api/resource", headers=auth).status_code == 403

    r = requests.post(base + "/agent/auth/claim", json={"claim_token": claim_token, "email": "ada@example.com"})
    assert r.status_code == 200 and r.json()["status"] == "initiated"
    link = smtp.last_link("ada@example.com").replace("http://localhost:8000", base)

    person = requests.Session()
    page = person.get(link)
    assert page.status_code == 200 and "Show code" in page.text
    form = dict(re.findall(r'name="(csrf_token|token)" value="([^"]+)"', page.text))
    revealed = person.post(base + "/agent/auth/claim/view", data={**form, "action": "reveal"})
    code = re.search(r'id="otp"[^>]*>(\d{6})<', revealed.text).group(1)

    done = requests.post(base + "/agent/auth/claim/complete", json={"claim_token": claim_token, "otp": code})
    assert done.status_code == 200 and done.json() == {"registration_id": reg["registration_id"], "status": "claimed"}
    after = requests.post(base + "/api/resource", headers=auth)
    assert after.status_code == 200
    assert after.json()["user"]["email"] == "ada@example.com"
