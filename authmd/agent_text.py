"""Agent text room: what an agent says about itself (User-Agent, platform names), made fit to show people.

Such text is the agent's own claim, unverified: "ACME Security Team: your account will be deleted, confirm
at https://evil.example/login" is a valid User-Agent. Wherever people read it (the claim mail, the claim
page, the portal, the console) it is shown quoted under a "self-reported" label, capped, on one line, and
with nothing a mail client or browser would turn into a link.
"""
import re
import unicodedata

LIMIT = 120
# what IDNA treats as a label separator besides "."; NFKC folds the full-width and one-dot-leader forms
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//|\\\\)")
# a dot followed by a label holding a letter: "evil.example", "www.x" (not "1.0" or "Chrome/120.0.6099")
_DOMAIN_DOT = re.compile(r"(?<=\w)\.(?=[\w-]*[^\W\d_])")


def self_reported(value, limit: int = LIMIT) -> str | None:
    """The text defanged ("https://evil.example/x" → "https[:]//evil[.]example/x"), on one line, at most
    `limit` characters (then "…"); None when there is nothing to show."""
    if not value:
        return None
    text = unicodedata.normalize("NFKC", str(value)).translate(_DOTS)
    # control and format characters (bidi overrides, zero-width joiners) out; any run of spaces is one space
    kept = (" " if unicodedata.category(c)[0] == "Z" or c in "\t\r\n" else c for c in text
            if unicodedata.category(c)[0] != "C" or c in "\t\r\n")
    text = " ".join("".join(kept).split())
    if not text:
        return None
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    return _DOMAIN_DOT.sub("[.]", _SCHEME.sub(r"\1[:]", text))
