"""Redirect room: the one check for every redirect target a request names (next=, back=, return_to=)."""
from urllib.parse import urlsplit

from ..util import has_control


def safe_target(value, default: str) -> str:
    """value when it is a path on this host, else default.

    Nothing is stripped or repaired: a value that needs repair is refused. Refused: anything but a
    string; control characters (browsers drop a tab or newline and read "/\\t/evil" as "//evil");
    backslashes (browsers read "/\\evil" as "//evil"); a scheme or a host (urlsplit); anything that does
    not start with exactly one "/".
    """
    if not isinstance(value, str) or not value or len(value) > 2000:
        return default
    if has_control(value) or "\\" in value:
        return default
    if not value.startswith("/") or value.startswith("//"):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value
