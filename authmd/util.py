"""Shared helpers room: the injectable clock, time formatting, the domain error."""
from datetime import datetime, timezone

from flask import current_app, has_app_context


def utcnow() -> datetime:
    """Naive UTC now; tests inject a clock with app.config['CLOCK']."""
    if has_app_context():
        clock = current_app.config.get("CLOCK")
        if clock is not None:
            return clock()
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(dt):
    if dt is None:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class ProtocolError(Exception):
    """A failure with its HTTP status, wire error code and human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
