"""Secrets room: random prefixed tokens, their digests, constant-time comparison."""
import hashlib
import hmac
import secrets as _secrets


def new_token(prefix: str, nbytes: int = 32) -> str:
    """A random token of nbytes*8 bits (>=160), prefixed by kind: sk_, at_, clm_, cvt_, ..."""
    return prefix + _secrets.token_urlsafe(nbytes)


def new_id(prefix: str) -> str:
    return prefix + _secrets.token_hex(12)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_otp() -> str:
    return f"{_secrets.randbelow(1_000_000):06d}"


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def display_prefix(token: str) -> str:
    """What may be shown of a credential after issue: its kind and a few characters."""
    head, _, rest = token.partition("_")
    return f"{head}_{rest[:6]}"
