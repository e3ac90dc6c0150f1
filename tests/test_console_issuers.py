"""Trusted issuers page: the Test button against a real JWKS served over loopback HTTP."""
from authmd.extensions import db
from authmd.models import TrustedIssuer
from tests.fixtures.console import post_form
from tests.fixtures.provider import trust


def _press_test(app, admin_client):
    with app.app_context():
        iid = db.session.execute(db.select(TrustedIssuer.id)).scalar()
    return post_form(admin_client, "/console/issuers", {}, post_url=f"/console/issuers/{iid}/test")


def test_test_button_lists_the_key_ids_of_the_live_jwks(app, admin_client, provider):
    trust(app, provider)
    r = _press_test(app, admin_client)
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "Test result" in html
    for key in provider.keys:
        assert key.kid in html and key.alg in html


def test_test_button_shows_the_exact_error_when_the_jwks_is_down(app, admin_client, provider):
    trust(app, provider)
    provider.down = True
    html = _press_test(app, admin_client).get_data(as_text=True)
    assert 'class="field-error"' in html and "JWKS answered HTTP 503" in html
    assert "The JWKS answered with" not in html
