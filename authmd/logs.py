"""Logging room: text or one JSON object a line (AUTHMD_LOG_FORMAT=json), for the app and for gunicorn."""
import json
import logging
import os
import sys
from datetime import datetime, timezone

try:
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # gunicorn is only needed to serve, not to run the CLI or the tests
    _GunicornLogger = object

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# loggers whose lines operators need: ours and flask-limiter's (store failures)
APP_LOGGERS = ("authmd", "flask-limiter")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def wants_json(value=None) -> bool:
    value = value if value is not None else os.environ.get("AUTHMD_LOG_FORMAT", "text")
    return str(value).strip().lower() == "json"


def formatter(json_format: bool) -> logging.Formatter:
    return JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT)


def configure(app) -> None:
    """One stderr handler on the app's loggers, in the configured format (re-applied per app)."""
    json_format = wants_json(app.config.get("LOG_FORMAT", "text"))
    level = logging.DEBUG if app.debug else logging.INFO
    for name in APP_LOGGERS:
        logger = logging.getLogger(name)
        if name == "authmd":
            logger.setLevel(level)
        ours = [h for h in logger.handlers if getattr(h, "_authmd", False)]
        if not ours:
            handler = logging.StreamHandler()
            handler._authmd = True
            logger.addHandler(handler)
            ours = [handler]
        for handler in ours:
            handler.setFormatter(formatter(json_format))
            handler.stream = sys.stderr  # today's stderr (pytest and daemons swap it)
        logger.propagate = False


class GunicornLogger(_GunicornLogger):
    """gunicorn's logger with JSON lines when AUTHMD_LOG_FORMAT=json.

    The access line never carries the query string (claim links hold tokens) nor any request header
    but the user agent (Authorization holds credentials).
    """

    def setup(self, cfg):
        super().setup(cfg)
        if wants_json():
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        if not wants_json():
            return super().access(resp, req, environ, request_time)
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        fields = {"remote_addr": environ.get("REMOTE_ADDR"), "method": environ.get("REQUEST_METHOD"),
                  "path": environ.get("PATH_INFO"), "status": int(status),
                  "bytes": getattr(resp, "sent", None),
                  "duration_ms": round(request_time.total_seconds() * 1000, 3),
                  "user_agent": environ.get("HTTP_USER_AGENT")}
        self.access_log.info("%s %s %s", fields["method"], fields["path"], status, extra={"fields": fields})
