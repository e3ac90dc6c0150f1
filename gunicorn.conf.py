"""gunicorn settings for authmd: `gunicorn -c gunicorn.conf.py wsgi:app` (every value has an AUTHMD_* override)."""
import multiprocessing
import os


def _int(name, default):
    value = os.environ.get(name)
    return int(value) if value else default


# loopback by default: `make run` switches the development provider on. AUTHMD_BIND=0.0.0.0:8000 listens on
# every interface (in production, bind loopback and put the reverse proxy of docs/production.md in front).
bind = os.environ.get("AUTHMD_BIND", "127.0.0.1:8000")
# sync workers: each request holds one worker; the work is short database calls, so 2×CPU+1 keeps the
# CPUs busy while some wait on the database. Capped so a large box does not open hundreds of DB connections.
workers = _int("AUTHMD_WORKERS", min(multiprocessing.cpu_count() * 2 + 1, 12))
threads = _int("AUTHMD_THREADS", 1)
worker_class = "sync"
timeout = _int("AUTHMD_TIMEOUT", 30)          # a worker silent this long is killed and replaced
graceful_timeout = _int("AUTHMD_GRACEFUL_TIMEOUT", 20)
keepalive = _int("AUTHMD_KEEPALIVE", 5)        # behind a load balancer keep-alive saves a handshake per call
max_requests = _int("AUTHMD_MAX_REQUESTS", 10000)  # recycle workers now and then: bounds slow memory growth
max_requests_jitter = 1000
limit_request_line = 8190
limit_request_fields = 100

# Logs: text, or JSON lines with AUTHMD_LOG_FORMAT=json (authmd.logs.GunicornLogger does both).
logger_class = "authmd.logs.GunicornLogger"
_access = os.environ.get("AUTHMD_ACCESS_LOG", "-")
accesslog = None if _access.lower() in ("", "none", "off") else _access
# %(U)s is the path WITHOUT the query string (claim links carry tokens); no header but the user agent
# is logged (Authorization carries credentials); %(u)s would decode Basic credentials, so it is not used.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
errorlog = os.environ.get("AUTHMD_ERROR_LOG", "-")
loglevel = os.environ.get("AUTHMD_LOG_LEVEL", "info")
# which peers gunicorn believes about the scheme (X-Forwarded-Proto); client IPs are the app's
# business (AUTHMD_TRUSTED_PROXIES)
forwarded_allow_ips = os.environ.get("AUTHMD_FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "authmd"
# gunicorn's control socket defaults to one path per user: several authmd instances on one host (nodes,
# tests, the benchmark) would fight over it. Off unless a path is given.
_ctl = os.environ.get("AUTHMD_CONTROL_SOCKET")
control_socket_disable = not _ctl
if _ctl:
    control_socket = _ctl
