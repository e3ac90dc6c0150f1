"""Console session room: Flask's signed-cookie sessions, kept to the pages that use them.

Two changes to Flask's stock interface:
- The signing serializer is made once per key set. Flask opens the session on every request, and the
  stock interface built a new itsdangerous serializer each time (whose constructor also test-serializes
  an empty dict to learn whether the output is text): ~9 µs of every request, /healthz and the
  credential check included (bench/README.md). The serializer holds nothing per request, so one is kept
  per (SECRET_KEY, SECRET_KEY_FALLBACKS): a key rotated in the app's config applies to the next request.
- Agent-facing endpoints (discovery, /auth.md, registration, the protected API, health) never use the
  console session, but Flask-Login looks into it after every request, and a session that was looked at
  makes Flask add `Vary: Cookie`: a shared cache (a CDN in front of authmd) then will not serve the
  discovery documents and /auth.md the spec lets clients cache. For the blueprints named
  `cookieless`, an unmodified session is not saved: no `Vary: Cookie`, no Set-Cookie. Their answers do
  not depend on the session cookie, so that is what the header should say.
"""
from flask import request
from flask.sessions import SecureCookieSessionInterface


class CookieSessionInterface(SecureCookieSessionInterface):
    def __init__(self, cookieless=()):
        self.cookieless = frozenset(cookieless)  # blueprint names
        self._made = (None, None)  # (key set, serializer), replaced as one tuple

    def get_signing_serializer(self, app):
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        made_for, serializer = self._made
        if made_for != keys:
            serializer = super().get_signing_serializer(app)
            self._made = (keys, serializer)
        return serializer

    def save_session(self, app, session, response):
        if not session.modified and request.blueprint in self.cookieless:
            return
        super().save_session(app, session, response)
