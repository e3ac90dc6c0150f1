"""Application factory: config, extensions, blueprints, error handlers, CLI."""
import logging

from flask import Flask

from authmd import config
from authmd.extensions import csrf, db, login_manager, migrate


def create_app(test_config=None) -> Flask:
    app = Flask(__name__, instance_relative_config=True, template_folder="templates",
                static_folder="static")
    config.load(app, test_config)
    _logging(app)

    # X-Forwarded-For is believed only for as many proxy hops as the admin declares; never by default,
    # or any client could pick its own IP and walk around the per-IP limits.
    if int(app.config.get("TRUSTED_PROXIES") or 0) > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix
        n = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    db.init_app(app)
    migrate.init_app(app, db, directory=app.config.get("MIGRATIONS_DIR", _migrations_dir()),
                     render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    _user_loader()
    if app.config["DATABASE_URL"].startswith("sqlite"):
        _sqlite_pragmas(app)
    _engine_events(app)

    from authmd import health
    from authmd.protocol import (agent_auth, api, claim_page, confirm_page, errors, events, forward, identity,
                                 introspect, oauth, revoke, well_known)
    agent_facing = (well_known.bp, agent_auth.bp, api.bp, revoke.bp, health.bp, introspect.bp, forward.bp, oauth.bp,
                    identity.bp, events.bp)
    for bp in agent_facing:
        csrf.exempt(bp)
        app.register_blueprint(bp)
    from authmd.cookie_session import CookieSessionInterface
    app.session_interface = CookieSessionInterface(cookieless={bp.name for bp in agent_facing})
    app.register_blueprint(claim_page.bp)
    app.register_blueprint(confirm_page.bp)  # people's pages: CSRF and the portal session
    from authmd.console import register as register_console
    register_console(app)
    if app.config.get("DEV_PROVIDER"):
        from authmd.devprovider import register as register_dev
        register_dev(app)
    from authmd import ratelimit
    ratelimit.init_app(app)  # after every blueprint: it applies the limits the registered views declare
    errors.register(app)
    from authmd.agent_text import self_reported
    app.jinja_env.filters["self_reported"] = self_reported  # what an agent says of itself, defanged and capped

    @app.after_request
    def security_headers(resp):
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype == "text/html":
            h.setdefault("Content-Security-Policy",
                         "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
                         "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        return resp

    from authmd import cli
    cli.register(app)
    return app


def _user_loader():
    # the session checks (generation, lifetime, active user) live with the console's sign-in
    from authmd.console.auth import load_user
    login_manager.user_loader(load_user)


def _migrations_dir():
    import os
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def _sqlite_pragmas(app):
    from sqlalchemy import event

    from authmd import sqlite_lock

    with app.app_context():
        engine = db.engine
        # writers queue on a kernel lock instead of polling in SQLite's busy handler (authmd/sqlite_lock.py)
        sqlite_lock.install(engine)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()


def _engine_events(app):
    from authmd import dbfaults
    with app.app_context():
        # a connection that saw a fault (read-only file, I/O error, a standby) is replaced, not pooled again
        dbfaults.install(db.engine)


def _logging(app):
    from authmd import logs
    from authmd.util import RedactTokens
    logs.configure(app)
    # Werkzeug's request log (flask run, tests) prints the query string, and claim links carry a token in it
    for name in ("werkzeug", "authmd"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
