"""Console session room: Flask's signed-cookie sessions, with the signing serializer made once per key set.

Flask opens the session on every request, agent endpoints included, and its stock interface builds a new
itsdangerous serializer each time (whose constructor also test-serializes an empty dict to learn whether
the output is text): ~20 µs of every request, /healthz and the credential check too (bench/README.md).
The serializer holds nothing per request, so one is kept per (SECRET_KEY, SECRET_KEY_FALLBACKS): rotating
the key in the app's config is picked up on the next request, and old cookies stop working as before.
"""
from flask.sessions import SecureCookieSessionInterface


class CookieSessionInterface(SecureCookieSessionInterface):
    def __init__(self):
        self._made = (None, None)  # (key set, serializer), replaced as one tuple

    def get_signing_serializer(self, app):
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        made_for, serializer = self._made
        if made_for != keys:
            serializer = super().get_signing_serializer(app)
            self._made = (keys, serializer)
        return serializer
