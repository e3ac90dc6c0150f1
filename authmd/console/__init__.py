"""Console room: server-rendered pages for admins (/console/) and users (/portal/)."""
from flask import redirect, url_for
from flask_login import current_user


def register(app):
    from . import admin, auth, portal, setup
    from .. import settings
    from ..extensions import login_manager

    login_manager.login_view = "console_auth.login"
    login_manager.session_protection = "basic"
    for bp in (auth.bp, admin.bp, portal.bp, setup.bp):
        app.register_blueprint(bp)
    from .resource_servers import bp as resource_servers_bp
    app.register_blueprint(resource_servers_bp)

    @app.get("/")
    def home():
        if current_user.is_authenticated:
            return redirect(url_for("admin.dashboard" if current_user.is_admin else "portal.home"))
        from flask import render_template
        return render_template("landing.html", service_name=settings.get("service_name"))
