"""Health room: liveness and readiness for load balancers."""
from flask import Blueprint, jsonify
from sqlalchemy import text

from .extensions import db

bp = Blueprint("health", __name__)
_OK = b'{"status":"ok"}\n'


@bp.get("/healthz")
def healthz():
    # constant body, no database: the framework's own floor in the benchmark
    return _OK, 200, {"Content-Type": "application/json"}


@bp.get("/readyz")
def readyz():
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any database failure means not ready
        db.session.rollback()
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503, {"Retry-After": "5"}
    return jsonify({"status": "ready", "database": "ok"})
