"""Health room: liveness and readiness for load balancers."""
import logging

from flask import Blueprint, jsonify
from sqlalchemy import text

from . import dbfaults
from .extensions import db

bp = Blueprint("health", __name__)
_OK = b'{"status":"ok"}\n'
log = logging.getLogger("authmd")


@bp.get("/healthz")
def healthz():
    # constant body, no database: the framework's own floor in the benchmark
    return _OK, 200, {"Content-Type": "application/json"}


@bp.get("/readyz")
def readyz():
    """Ready when the database answers and takes writes: a node that can only read would fail every
    registration, so a load balancer polling this (every few seconds; it costs a statement or two)
    should send traffic elsewhere until the fault ends."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any database failure means not ready
        db.session.rollback()
        return _unavailable("unreachable")
    try:
        engine = db.engine
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        if path and path != ":memory:" and not path.startswith("file:"):
            db.session.rollback()  # nothing of the session's is held while the probe waits for the writer lock
            dbfaults.probe_sqlite(path)
        else:
            db.session.execute(text(dbfaults.PROBE))
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - the write probe failed: reads may work, writes do not
        db.session.rollback()
        cause = getattr(exc, "orig", None) or exc  # the driver's own error, without SQLAlchemy's SQL dump
        log.warning("readiness: the database does not take writes (%s: %s)", type(cause).__name__,
                    str(cause).splitlines()[0] if str(cause) else "")
        return _unavailable("not_writable")
    return jsonify({"status": "ready", "database": "ok"})


def _unavailable(why: str):
    return jsonify({"status": "unavailable", "database": why}), 503, {"Retry-After": "5"}
