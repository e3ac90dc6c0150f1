"""Console auth.md room: Markdown preview (markdown-it-py + nh3), drift check, version diffs."""
import difflib
import re

import nh3
from markdown_it import MarkdownIt

from .. import authdoc
from ..wire import ID_JAG
from ..extensions import db
from ..models import Scope

_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
KNOWN_PATHS = {"/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server", "/auth.md",
               "/agent/auth", "/agent/auth/claim", "/agent/auth/claim/complete", "/agent/auth/revoke",
               "/agent/auth/claim/view", "/agent/auth/claim/attempt/challenge", "/api/resource", "/api/",
               "/api", "/.well-known/jwks.json", "/.well-known/oauth-protected-resource/api/",
               "/agent/identity", "/agent/identity/claim", "/agent/identity/claim/complete", "/agent/event/notify"}
PATH_RE = re.compile(r"(?<![\w/.])(/(?:agent|api|\.well-known)(?:/[\w.\-]*)*)")
SCOPE_ARRAY_RE = re.compile(r'"(?:scopes|scope|scopes_supported|post_claim_scopes)"\s*:\s*\[([^\]]*)\]')
STRING_RE = re.compile(r'"([^"]*)"')


def render_text(template_text: str) -> tuple[str | None, str | None]:
    """(rendered Markdown, None) or (None, a message saying why the template does not render and at which line
    of the admin's text)."""
    return authdoc.try_render(template_text)


def to_html(markdown_text: str) -> str:
    return nh3.clean(_md.render(markdown_text))


def drift(rendered: str) -> list[str]:
    """Warnings for endpoints, scopes and flows the text names that the live metadata does not offer."""
    from flask import current_app
    issuer = current_app.config["ISSUER"]
    ctx = authdoc.context()
    flows = ctx["flows"]
    enabled = {s["name"] for s in ctx["scopes"]}
    warnings = []
    text = rendered.replace(issuer, "")
    for path in sorted(set(PATH_RE.findall(text))):
        if path.rstrip(".") not in KNOWN_PATHS:
            warnings.append(f"The text names the endpoint {path}, which this service does not offer.")
    named = set()
    for arr in SCOPE_ARRAY_RE.findall(rendered):
        named.update(s for s in STRING_RE.findall(arr) if s and "…" not in s)
    disabled = {n for (n,) in db.session.execute(db.select(Scope.name).where(Scope.enabled.is_(False)))}
    for name in disabled:
        if re.search(r"(?<![\w.])" + re.escape(name) + r"(?![\w])", rendered):
            named.add(name)
    for name in sorted(named - enabled):
        warnings.append(f"The text names the scope {name}, which is not an enabled scope.")
    checks = [(flows["anonymous"], '"type": "anonymous"', "anonymous start"),
              (flows["verified_email"], '"verified_email"', "email-required (verified_email)"),
              (flows["id_jag"], ID_JAG, "ID-JAG")]
    for on, needle, label in checks:
        if not on and needle in rendered:
            warnings.append(f"The text describes the {label} flow, which is switched off.")
    return warnings


def diff_lines(old: str, new: str, old_label: str, new_label: str) -> list[tuple[str, str]]:
    """(css class, line) pairs of a unified diff, for a <pre> the template colours by class."""
    out = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label, lineterm="", n=3):
        kind = ("meta" if line.startswith(("---", "+++", "@@")) else
                "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx")
        out.append((kind, line))
    return out
