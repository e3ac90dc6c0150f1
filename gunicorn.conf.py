"""gunicorn settings for authmd: `gunicorn -c gunicorn.conf.py wsgi:app`."""
import multiprocessing
import os

bind = os.environ.get("AUTHMD_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("AUTHMD_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("AUTHMD_THREADS", 1))
worker_class = "sync"
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 10000
max_requests_jitter = 1000
accesslog = os.environ.get("AUTHMD_ACCESS_LOG", "-")
# path without the query string (claim links carry tokens); never the Authorization header
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
errorlog = "-"
loglevel = os.environ.get("AUTHMD_LOG_LEVEL", "info")
forwarded_allow_ips = os.environ.get("AUTHMD_FORWARDED_ALLOW_IPS", "127.0.0.1")
