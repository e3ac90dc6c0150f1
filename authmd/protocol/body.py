"""Request body room: an agent's JSON body, parsed once per request for the rate limiter and the view alike.

One parse, one answer: the limiter's key and exempt functions and the view read the same object, so
they cannot disagree about a body (a nesting deep enough to overflow the stack at the limiter's depth
once made the limiter skip every limit while the view, shallower, still registered the agent). The
nesting depth is counted by a linear scan before json.loads runs, so no body can make the parser recurse
deeper than MAX_DEPTH.
"""
import json
import re
from itertools import accumulate

from flask import current_app, request
from werkzeug.exceptions import HTTPException

from ..util import ProtocolError

MAX_DEPTH = 32  # our bodies are flat objects; 32 leaves room for any future field and is far from the stack
_CACHE = "authmd.json_body"  # in the WSGI environ: one per request, whatever app context is around
# a JSON string (escapes included) or one structural bracket; everything else is skipped in one go
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")


def nesting(text: str) -> int:
    """How deep arrays and objects nest in a JSON text, brackets inside strings not counted. Linear, no
    recursion; on a text that is not JSON the count may be off, but json.loads refuses that text anyway
    before it reaches a depth the count did not see."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def _parse():
    """The body as a dict, or (status, code, message) saying why it is refused."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and (request.content_length or 0) > limit:
        # the size is known before the type: a huge body is 413 whatever it claims to be (spec §6)
        return (413, "request_too_large", "The request body is larger than 64 KiB.")
    if request.mimetype != "application/json":
        return (415, "unsupported_media_type", "Send the body as Content-Type: application/json.")
    try:
        raw = request.get_data(cache=True)
    except HTTPException as exc:  # a chunked body past MAX_CONTENT_LENGTH, a client gone mid-body
        if exc.code == 413:
            return (413, "request_too_large", "The request body is larger than 64 KiB.")
        return (400, "invalid_request", "The body could not be read.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return (400, "invalid_request", "The body is not valid JSON (UTF-8).")
    try:
        data = loads(text)
    except TooDeep:
        return (400, "invalid_request", f"The body nests deeper than {MAX_DEPTH} levels.")
    except ValueError:
        return (400, "invalid_request", "The body is not valid JSON.")
    if not isinstance(data, dict):
        return (400, "invalid_request", "The body must be a JSON object.")
    return data


class TooDeep(ValueError):
    pass


def loads(text: str, max_depth: int = MAX_DEPTH):
    """json.loads for text from outside, with the nesting counted first: ValueError (TooDeep) for a text
    nested deeper than max_depth, ValueError for one that is not JSON (NaN and Infinity included). The one
    JSON parser for what clients send (request bodies; token parts may use it too)."""
    if nesting(text) > max_depth:
        raise TooDeep(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # cannot happen below max_depth; belt and braces
        raise ValueError("nested too deep") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: Python's json takes them, the JSON spec does not


def json_object() -> dict:
    """The request's JSON object, parsed once per request; else ProtocolError 400 / 413 / 415."""
    env = request.environ
    parsed = env.get(_CACHE)
    if parsed is None:
        parsed = env[_CACHE] = _parse()
    if isinstance(parsed, tuple):
        raise ProtocolError(*parsed)
    return parsed


def peek() -> dict:
    """The same object for the rate limiter's key and exempt functions, or {} when the body is refused
    (the view answers that). Never raises: an exception there would make Flask-Limiter skip every limit
    on the route."""
    try:
        return json_object()
    except Exception:  # noqa: BLE001 - see the docstring: any failure here must not switch the limits off
        return {}
