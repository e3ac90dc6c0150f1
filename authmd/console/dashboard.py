"""Console dashboard room: counts, 30-day charts, what needs attention, the latest audit events."""
from flask import current_app, render_template

from .. import authdoc, queries, settings
from . import docs
from .auth import admin_required
from .common import bp

WEAK_KEYS = {"dev", "secret", "changeme", "change-me", "development", "test", "test-secret", "please-change-me"}


def warnings() -> list[tuple[str, str | None]]:
    """(what needs attention, the endpoint of the page that fixes it or None)."""
    cfg = current_app.config
    out = []
    if cfg.get("DEV_PROVIDER"):
        out.append(("The development identity provider is ON (AUTHMD_DEV_PROVIDER): whoever holds its key can "
                    "register agents as any user. Turn it off outside development.", None))
    if settings.get("link_identities_by_email"):
        out.append(("Provider identities are linked to existing accounts by verified email without asking the "
                    "account's owner (link_identities_by_email): anyone controlling a provider account that "
                    "asserts someone's email gets that person's agent access. Turn it off unless every trusted "
                    "issuer's email claims are beyond doubt.", "admin.settings_page"))
    if not authdoc.flows()["issuers"]:
        out.append(("No trusted issuer is enabled: agents cannot register with an ID-JAG.", "admin.issuers"))
    if not cfg.get("MAIL_SERVER"):
        out.append(("Mail is not configured (no MAIL_SERVER): claim and sign-in mail is held in the outbox.",
                    "admin.outbox"))
    if cfg.get("SECRET_KEY_GENERATED") or str(cfg.get("SECRET_KEY")) in WEAK_KEYS:
        out.append(("SECRET_KEY is generated or a well-known default: set AUTHMD_SECRET_KEY for production.", None))
    rendered, error = docs.render_text(authdoc.current_template())
    if error:
        out.append((f"The published auth.md does not render: {error}", "admin.authmd"))
    else:
        for w in docs.drift(rendered):
            out.append((f"auth.md drifts from the settings: {w}", "admin.authmd"))
    return out


@bp.get("/")
@admin_required
def dashboard():
    return render_template("console/dashboard.html", **queries.dashboard(), recent=queries.recent_events(),
                           warnings=warnings())
