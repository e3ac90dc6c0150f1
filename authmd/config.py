"""Configuration room: defaults, instance/config.py, then AUTHMD_* environment variables."""
import os
import secrets


class Defaults:
    ENV_NAME = "production"
    DEBUG = False
    ISSUER = "http://localhost:8000"
    RESOURCE = None  # derived: <ISSUER>/api/
    DATABASE_URL = None  # derived: sqlite in the instance folder
    SECRET_KEY = None
    SERVICE_NAME = "authmd"
    MAX_CONTENT_LENGTH = 64 * 1024
    # mail: with no MAIL_SERVER, messages are held in the outbox table
    MAIL_SERVER = None
    MAIL_PORT = 25
    MAIL_USE_TLS = False
    MAIL_USE_SSL = False
    MAIL_USERNAME = None
    MAIL_PASSWORD = None
    MAIL_DEFAULT_SENDER = "authmd <no-reply@localhost>"
    # seconds for the whole SMTP conversation of a request (connect to QUIT), well under gunicorn's worker
    # timeout (30 s): a silent or trickling mail server gets a 503 email_unavailable, never a killed worker
    MAIL_DEADLINE = 8
    MAIL_RETRY_AFTER = 60
    # rate limits (flask-limiter); memory counters are per worker process
    RATELIMIT_ENABLED = True
    RATELIMIT_STORAGE_URI = "memory://"
    RATELIMIT_HEADERS_ENABLED = False
    RATELIMIT_SWALLOW_ERRORS = True  # fail open when the store is down
    TRUSTED_PROXIES = 0
    # JWT checks
    CLOCK_SKEW = 60
    ID_JAG_MAX_LIFETIME = 3600
    JWKS_TIMEOUT = 3  # seconds for one step of a JWKS fetch (connect, TLS handshake, one read)
    JWKS_DEADLINE = 5  # seconds for the whole fetch, however the issuer spreads its bytes
    JWKS_MAX_BYTES = 64 * 1024
    DEV_PROVIDER = False
    LOG_FORMAT = "text"
    # seconds another worker may serve discovery and /auth.md built before a config change (0: no cache)
    DISCOVERY_CACHE_SECONDS = 1
    SESSION_IDLE_MINUTES = 30
    SESSION_MAX_HOURS = 12  # a console or portal session ends this long after sign-in, however busy
    SQLALCHEMY_TRACK_MODIFICATIONS = False


def _coerce(value: str):
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    try:
        return int(value)
    except ValueError:
        return value


def load(app, test_config=None):
    app.config.from_object(Defaults)
    app.config.from_pyfile("config.py", silent=True)
    for key, value in os.environ.items():
        if key.startswith("AUTHMD_") and not key.startswith("AUTHMD_TEST_"):
            app.config[key[len("AUTHMD_"):]] = _coerce(value) if key not in (
                "AUTHMD_SECRET_KEY", "AUTHMD_MAIL_PASSWORD", "AUTHMD_MAIL_USERNAME") else value
    if test_config:
        app.config.update(test_config)
    cfg = app.config
    cfg["ISSUER"] = str(cfg["ISSUER"]).rstrip("/")
    if not cfg.get("RESOURCE"):
        cfg["RESOURCE"] = cfg["ISSUER"] + "/api/"
    if not cfg.get("DATABASE_URL"):
        os.makedirs(app.instance_path, exist_ok=True)
        cfg["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "authmd.sqlite3")
    cfg["SQLALCHEMY_DATABASE_URI"] = cfg["DATABASE_URL"]
    if cfg["DATABASE_URL"].startswith("sqlite"):
        cfg.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 30}})
    else:
        cfg.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})
    cfg["DEVELOPMENT"] = cfg.get("ENV_NAME") in ("development", "test") or bool(cfg.get("TESTING"))
    if not cfg.get("SECRET_KEY"):
        cfg["SECRET_KEY"] = _instance_secret(app)
        cfg["SECRET_KEY_GENERATED"] = True
    cfg["RATELIMIT_STORAGE_URI"] = cfg.get("RATELIMIT_STORAGE_URI") or "memory://"
    cfg["SESSION_COOKIE_HTTPONLY"] = True
    cfg["SESSION_COOKIE_SAMESITE"] = "Lax"
    cfg["SESSION_COOKIE_SECURE"] = not cfg["DEVELOPMENT"] and cfg["ISSUER"].startswith("https://")
    cfg["REMEMBER_COOKIE_SECURE"] = cfg["SESSION_COOKIE_SECURE"]
    cfg["WTF_CSRF_TIME_LIMIT"] = None


def _instance_secret(app) -> str:
    """A key generated once into the instance folder, so every worker shares it."""
    path = os.path.join(app.instance_path, "secret_key")
    os.makedirs(app.instance_path, exist_ok=True)
    try:
        with open(path) as fh:
            key = fh.read().strip()
            if key:
                return key
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key
    except FileExistsError:  # another worker won the race
        with open(path) as fh:
            return fh.read().strip()
