"""Console formatting room: the Jinja filters every page uses for times, lifetimes, counts and long tokens."""
import re
from datetime import datetime, timedelta, timezone

from markupsafe import Markup, escape

from ..util import iso, utcnow

_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def _as_datetime(value) -> datetime | None:
    """A naive UTC datetime (as the database keeps them) from a datetime or an ISO 8601 string."""
    if isinstance(value, str) and value:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def when(value, seconds: bool = False, empty: str = "") -> Markup:
    """The one way a page shows a moment: <time datetime="…Z">2026-05-01 14:03 UTC</time>. Takes a naive UTC
    datetime (the database's) or an ISO 8601 string (the protocol's); empty for None."""
    dt = _as_datetime(value)
    if dt is None:
        return Markup(escape(empty))
    # the day and the time each stay whole: a narrow cell wraps between them, never inside "2026-05-01"
    shown = Markup('<span class="nowrap">{}</span> <span class="nowrap">{} UTC</span>').format(
        dt.strftime("%Y-%m-%d"), dt.strftime("%H:%M:%S" if seconds else "%H:%M"))
    return Markup('<time datetime="{}">{}</time>').format(iso(dt), shown)


def plural(word: str, n) -> str:
    """'claim' for 1, 'claims' otherwise ('1 claim waiting', '2 claims waiting')."""
    return word if n == 1 else word + "s"


def duration(seconds) -> str:
    """A lifetime in its two largest units, rounded down: '10 minutes', '1 hour 30 minutes', '1 day'."""
    try:
        left = int(seconds)
    except (TypeError, ValueError):
        return ""
    if left <= 0:
        return "0 seconds"
    parts = []
    for unit, size in _UNITS:
        n, left = divmod(left, size)
        if n:
            parts.append(f"{n} {plural(unit, n)}")
    return " ".join(parts[:2])


def relative(value, now=None) -> str:
    """'in 23 hours' or '5 minutes ago', rounded down to its largest unit."""
    dt = _as_datetime(value)
    if dt is None:
        return ""
    delta = dt - (now or utcnow())
    ahead = delta >= timedelta(0)
    secs = int(abs(delta.total_seconds()))
    for unit, size in _UNITS:
        if secs >= size or unit == "second":
            n = secs // size
            text = f"{n} {plural(unit, n)}"
            return f"in {text}" if ahead else f"{text} ago"
    return ""


_SEPARATORS = re.compile(r"([/.:@,&=?_])")


def breakable(value) -> Markup:
    """Text that may wrap at its spaces and after a separator (/ . : @ , & = ? _), never inside a word: a long
    URL, id or JSON value in a cell wraps where a reader expects it."""
    pieces = _SEPARATORS.split("" if value is None else str(value))  # separators at the odd indexes
    return Markup("").join(escape(p) + (Markup("<wbr>") if i % 2 else "") for i, p in enumerate(pieces))


def register(app) -> None:
    for fn in (when, plural, duration, relative, breakable):
        app.add_template_filter(fn)
