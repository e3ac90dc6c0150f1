"""Fixtures for the authmd_resource tests: one live authmd under gunicorn per module (on the suite's
database, emptied before each test by the `app` fixture), an API served on a loopback port (Werkzeug in a
thread for WSGI, uvicorn in a thread for ASGI), and a clock the helper's cache reads."""
import threading
import time

import pytest
import requests

from tests.fixtures.flows import ANON
from tests.fixtures.gunicorn import free_port, start_gunicorn
from tests.fixtures.resource import add_resource_server

ISSUER = "http://localhost:8000"  # what the gunicorn fixture sets as authmd's ISSUER


@pytest.fixture(scope="module")
def authmd_server(schema, tmp_path_factory):
    server = start_gunicorn(str(tmp_path_factory.mktemp("gunicorn")), schema, workers=2)
    yield server
    server.stop()


class Live:
    """authmd under gunicorn, and this test's resource server on it."""

    def __init__(self, app, server, rs):
        self.app, self.server, self.rs = app, server, rs
        self.url = server.url

    def settings(self, **extra) -> dict:
        """Client settings for the resource server (authmd reached at its loopback address)."""
        return {"issuer": ISSUER, "client_id": self.rs.client_id, "client_secret": self.rs.secret,
                "introspection_endpoint": self.url + "/oauth2/introspect", **extra}

    def register(self) -> dict:
        r = requests.post(self.url + "/agent/auth", json=ANON, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def live(app, authmd_server):
    return Live(app, authmd_server, add_resource_server(app, "Helper API"))


class FakeTime:
    """Seconds since the epoch for the helper's cache: real time until a test moves it."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.time() + self.offset

    def advance(self, seconds: float):
        self.offset += seconds


@pytest.fixture
def helper_clock():
    return FakeTime()


@pytest.fixture
def serve_wsgi():
    """serve_wsgi(wsgi_app) -> base URL of the app on a loopback port (Werkzeug, threaded)."""
    from werkzeug.serving import make_server
    servers = []

    def start(wsgi_app) -> str:
        server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def serve_asgi():
    """serve_asgi(asgi_app) -> base URL of the app on a loopback port (uvicorn in a thread)."""
    import uvicorn
    servers = []

    def start(asgi_app) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)  # waiting for a thread to bind its socket, not for the app's clock
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=5)
