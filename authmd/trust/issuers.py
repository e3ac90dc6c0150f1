"""Trust room (issuers): the trust list - add, edit, enable or disable, remove - with one set of rules and
one audit payload, for the CLI, the console and init-db alike. Callers commit."""
from .. import audit, authdoc
from .. import scopes as scope_mod
from ..extensions import db
from ..models import TrustedIssuer
from ..util import has_control, utcnow
from . import jwks

# What an issuer may be allowed; never "none", never an HMAC algorithm (a public key is no secret).
SUPPORTED_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")
DEFAULT_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
# the settings of an issuer as the console's form and the domain's keywords both name them
SETTINGS = ("name", "jwks_uri", "algorithms", "scopes", "require_amr", "allowed_client_ids",
            "allow_private_jwks", "enabled")


class IssuerError(ValueError):
    """Input the trust list refuses. errors: {field: a sentence for a person}, field being "issuer" or one
    of SETTINGS, so the console shows each beside its field and the CLI prints them all."""

    def __init__(self, errors: dict):
        self.errors = dict(errors)
        super().__init__("; ".join(self.errors.values()))


def get(issuer: str) -> TrustedIssuer | None:
    if "\x00" in issuer:  # no issuer is stored with a NUL, and PostgreSQL refuses one in a parameter
        return None
    return db.session.execute(db.select(TrustedIssuer).where(TrustedIssuer.issuer == issuer)).scalar()


def list_all(enabled_only: bool = False) -> list[TrustedIssuer]:
    query = db.select(TrustedIssuer).order_by(TrustedIssuer.issuer)
    if enabled_only:
        query = query.where(TrustedIssuer.enabled.is_(True))
    return list(db.session.execute(query).scalars())


def find(ref) -> TrustedIssuer:
    """ref: a row (the console's, read by id) or an issuer URL (the CLI's)."""
    if isinstance(ref, TrustedIssuer):
        return ref
    row = get(ref)
    if row is None:
        raise IssuerError({"issuer": f"{ref} is not in the trust list."})
    return row


def algorithms_of(row) -> list[str]:
    return [a for a in (row.algorithms or " ".join(DEFAULT_ALGORITHMS)).split() if a in SUPPORTED_ALGORITHMS]


def _words(value) -> list[str]:
    """Space-separated text (the console) or a list of items (the CLI), once each, in order."""
    items = value.split() if isinstance(value, str) else [w for v in (value or ()) for w in str(v).split()]
    return list(dict.fromkeys(items))


def _text(errors: dict, field: str, value, limit: int, spaces: bool = True) -> str | None:
    value = (value or "").strip()
    if len(value) > limit or has_control(value) or (not spaces and " " in value):
        errors[field] = f"Use at most {limit} characters{'' if spaces else ' without spaces'}, no control characters."
    return value or None


def _clean(issuer, *, name="", jwks_uri=None, algorithms=None, scopes=None, require_amr=None,
           allowed_client_ids=None, allow_private_jwks=False, enabled=True, row_id=None) -> dict:
    """The column values of an issuer from what a person typed, or IssuerError naming every bad field."""
    errors = {}
    for field, value, limit in (("issuer", issuer, 500), ("jwks_uri", jwks_uri, 1000)):
        if field == "issuer" or value:
            try:
                jwks.check_url(value, limit)
            except ValueError as exc:
                errors[field] = str(exc)
    algs = _words(algorithms) or list(DEFAULT_ALGORITHMS)
    bad = [a for a in algs if a not in SUPPORTED_ALGORITHMS]
    if bad:
        errors["algorithms"] = f"Not allowed: {' '.join(bad)}. Choose from {' '.join(SUPPORTED_ALGORITHMS)}."
    scope_names = _words(scopes)
    if scope_names:
        known = scope_mod.names()
        unknown = [s for s in scope_names if s not in known]
        if unknown:
            errors["scopes"] = f"Unknown scope(s): {' '.join(unknown)}. The enabled scopes are: {' '.join(known)}."
    client_ids = " ".join(_words(allowed_client_ids)) or None
    values = {"name": _text(errors, "name", name, 200) or "", "jwks_uri": jwks_uri or None,
              "algorithms": " ".join(algs), "scopes": " ".join(scope_names) or None,
              "require_amr": _text(errors, "require_amr", require_amr, 50, spaces=False),
              "allowed_client_ids": _text(errors, "allowed_client_ids", client_ids, 4000),
              "allow_private_jwks": bool(allow_private_jwks), "enabled": bool(enabled)}
    if "issuer" not in errors:
        clash = db.select(TrustedIssuer.id).where(TrustedIssuer.issuer == issuer, TrustedIssuer.id != (row_id or -1))
        if db.session.execute(clash).first():
            errors["issuer"] = "This issuer is already in the list of trusted issuers."
    if errors:
        raise IssuerError(errors)
    return {"issuer": issuer, **values}


def add(issuer: str, *, actor: str, ip=None, user_agent=None, **settings) -> TrustedIssuer:
    """Trust a provider (settings: see SETTINGS). Raises IssuerError. ip, user_agent: who asked (console)."""
    values = _clean(issuer, **settings)
    row = TrustedIssuer(created_at=utcnow(), **values)
    db.session.add(row)
    db.session.flush()
    audit.record("issuer.added", "admin", actor_id=actor, iss=row.issuer, issuer_id=row.id,
                 changes={k: v for k, v in values.items() if k != "issuer"}, ip=ip, user_agent=user_agent)
    authdoc.config_changed()
    return row


def update(ref, *, actor: str, issuer: str, ip=None, user_agent=None, **settings) -> TrustedIssuer:
    """Replace an issuer's URL and settings (the console's edit form sends them all). Raises IssuerError."""
    row = find(ref)
    values = _clean(issuer, row_id=row.id, **settings)
    changes = {k: [getattr(row, k), v] for k, v in values.items() if getattr(row, k) != v}
    jwks.forget(row.issuer)  # its keys are fetched again under the new settings
    for k, v in values.items():
        setattr(row, k, v)
    db.session.flush()
    audit.record("issuer.updated", "admin", actor_id=actor, iss=row.issuer, issuer_id=row.id, changes=changes,
                 ip=ip, user_agent=user_agent)
    authdoc.config_changed()
    return row


def set_enabled(ref, enabled: bool, *, actor: str, ip=None, user_agent=None) -> TrustedIssuer:
    row = find(ref)
    row.enabled = bool(enabled)
    audit.record("issuer.enabled" if enabled else "issuer.disabled", "admin", actor_id=actor, iss=row.issuer,
                 issuer_id=row.id, ip=ip, user_agent=user_agent)
    authdoc.config_changed()
    return row


def remove(ref, *, actor: str, ip=None, user_agent=None) -> str:
    """Forget an issuer and this worker's cache of its keys. Credentials it vouched for stay until they
    expire or are revoked. Returns its issuer URL."""
    row = find(ref)
    iss, issuer_id = row.issuer, row.id
    db.session.delete(row)
    jwks.forget(iss)
    audit.record("issuer.removed", "admin", actor_id=actor, iss=iss, issuer_id=issuer_id, ip=ip,
                 user_agent=user_agent)
    authdoc.config_changed()
    return iss
