"""Extensions room: created here, bound in create_app (the rate limiter: declared here, built per app)."""
import ipaddress

from flask import request
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


_IP_KEY = "authmd.client_ip"


def client_ip() -> str:
    """The client as every per-IP limit counts it: an IPv4 address as is (an IPv4-mapped IPv6 address as
    its IPv4), an IPv6 address by its /64 (one subscriber's LAN or host gets a whole /64, so counting
    single addresses would hand each client 2^64 budgets).

    ProxyFix (enabled only with TRUSTED_PROXIES) has already rewritten remote_addr. Audit rows keep the
    full address (request.remote_addr); only the limits group it."""
    env = request.environ
    key = env.get(_IP_KEY)
    if key is None:
        key = env[_IP_KEY] = _ip_key(request.remote_addr)
    return key


def _ip_key(addr: str | None) -> str:
    if not addr:
        return "unknown"
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])  # a zone id (fe80::1%eth0) names no other host
    except ValueError:
        return addr[:100]  # not an address (a proxy's header): counted as it is, bounded
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LimitDeclarations:
    """Flask-Limiter's limit() / shared_limit() decorators, recorded on the view instead of bound to one
    Limiter: ratelimit.init_app builds each app its own Limiter (its own storage and settings) and applies
    what the views of that app declare. The signatures are Flask-Limiter's."""

    ATTR = "_authmd_rate_limits"

    def limit(self, limit_value, **kwargs):
        return self._declare(False, limit_value, kwargs)

    def shared_limit(self, limit_value, scope, **kwargs):
        return self._declare(True, limit_value, dict(kwargs, scope=scope))

    def _declare(self, shared: bool, limit_value, kwargs: dict):
        declaration = (shared, limit_value, kwargs)  # one object, so a shared limit stays one per app

        def decorate(view):
            # innermost decorator first, as Flask-Limiter's own decorators would stack
            view.__dict__.setdefault(self.ATTR, []).append(declaration)
            return view
        return decorate


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
limiter = LimitDeclarations()
