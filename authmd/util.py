"""Shared helpers room: the injectable clock, time formatting, the domain error."""
import logging
import re
from datetime import datetime, timezone

from flask import current_app, has_app_context


def utcnow() -> datetime:
    """Naive UTC now; tests inject a clock with app.config['CLOCK']."""
    if has_app_context():
        clock = current_app.config.get("CLOCK")
        if clock is not None:
            return clock()
    return datetime.now(timezone.utc).replace(tzinfo=None)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def printable(value, limit: int = 300):
    """A client-supplied header (User-Agent) fit to store, mail and show: no control characters (PostgreSQL
    refuses NUL; a newline would forge lines in a text mail), at most limit characters; None when empty."""
    if not value:
        return None
    return _CONTROL.sub("", str(value))[:limit] or None


def iso(dt):
    if dt is None:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class ProtocolError(Exception):
    """A failure with its HTTP status, wire error code and human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}  # more fields of the JSON answer (e.g. the claim block of interaction_required)


class RedactTokens(logging.Filter):
    """Blank token-bearing query parameters in log lines (the dev server logs claim links with their token)."""

    # also percent-encoded inside another parameter: the sign-in page's next=%2Fclaim%3Fclaim_attempt_token%3D…
    PATTERN = re.compile(r"((?:token|claim_token|claim_attempt_token|access_token|otp)(?:=|%3[dD]))[^&%\s\"'\x1b]+")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's problem, not ours
            return True
        redacted = self.PATTERN.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
