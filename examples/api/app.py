"""An example API protected by authmd_resource: agents call it with the credential authmd gave them.

Run it from the repository root, with authmd running at AUTHMD_ISSUER:

    flask --app app resource-servers add "Example API"        # on authmd: prints client_id and secret
    AUTHMD_ISSUER=http://localhost:8000 AUTHMD_CLIENT_ID=rs_… AUTHMD_CLIENT_SECRET=rsec_… \
        python -m flask --app examples.api.app run --port 5001

    curl -H "Authorization: Bearer sk_…" http://localhost:5001/v1/notes
"""
import os

from flask import Flask, jsonify, request

from authmd_resource.flask import CONFIG, Authmd, current_identity


def create_app(**settings) -> Flask:
    """settings: Client options (issuer, client_id, client_secret, ...), else from the AUTHMD_* environment."""
    app = Flask(__name__)
    for name in CONFIG.values():
        if name in os.environ:
            app.config[name] = os.environ[name]
    authmd = Authmd(app, **settings)
    notes: list[dict] = []

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/v1/notes")
    @authmd.require("api.read")
    def list_notes():
        return jsonify({"notes": notes, "caller": current_identity().sub})

    @app.post("/v1/notes")
    @authmd.require("api.write")
    def add_note():
        caller = current_identity()
        note = {"text": str((request.get_json(silent=True) or {}).get("text", ""))[:500], "by": caller.sub,
                "agent": caller.client_id}
        notes.append(note)
        return jsonify(note), 201

    return app


if os.environ.get("AUTHMD_ISSUER"):
    app = create_app()
