"""Console room: server-rendered pages for admins (/console/) and users (/portal/)."""
from flask import redirect, url_for
from flask_login import current_user

# the feature modules of /console/: each adds its views to the one `admin` blueprint (.common) on import
FEATURES = ("dashboard", "authdoc", "issuers", "scopes", "registrations", "delegations", "users", "audit",
            "settings", "outbox", "keys")


def register(app):
    import importlib

    from . import auth, common, formatting, portal, setup
    from .. import settings
    from ..extensions import login_manager

    for name in FEATURES:
        importlib.import_module(f"{__name__}.{name}")
    formatting.register(app)
    login_manager.login_view = "console_auth.login"
    login_manager.session_protection = "basic"
    for bp in (auth.bp, common.bp, portal.bp, setup.bp):
        app.register_blueprint(bp)
    from .resource_servers import bp as resource_servers_bp
    app.register_blueprint(resource_servers_bp)

    @app.get("/")
    def home():
        if current_user.is_authenticated:
            return redirect(url_for("admin.dashboard" if auth.console_session() else "portal.home"))
        from flask import render_template
        return render_template("landing.html", service_name=settings.get("service_name"))
