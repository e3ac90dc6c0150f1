"""Console common room: the one `admin` blueprint (/console/) every feature module adds its views to, and what
those views share: the signed-in actor, the confirmation form, and parsing of list filters."""
from datetime import date, datetime, timedelta

from flask import Blueprint, request
from flask_login import current_user

from .. import settings, tx
from ..extensions import db
from ..util import ProtocolError
from .forms import ButtonForm

bp = Blueprint("admin", __name__, url_prefix="/console")


@bp.context_processor
def _ctx():
    return {"service_name": settings.get("service_name"), "layout": "console/layout.html",
            "logout_form": ButtonForm()}


def actor() -> str:
    """How the audit log names the signed-in admin."""
    return current_user.email or str(current_user.id)


def who() -> dict:
    """Who asks, for a domain function's audit row: the admin, their address and browser."""
    return {"actor_id": actor(), "ip": request.remote_addr, "user_agent": request.user_agent.string}


def _confirm_form_ok() -> bool:
    return ButtonForm().validate_on_submit()


def run(fn, *args, **kwargs) -> tuple:
    """Call one domain function and commit once: (its result, None). When it refuses (ProtocolError), the
    request's transaction ends the one way (tx.rollback) and the answer is (None, the error) for the page."""
    try:
        result = fn(*args, **kwargs)
        db.session.commit()
    except ProtocolError as exc:
        tx.rollback()
        return None, exc
    return result, None


# --- list filters: a query string's text → plain values for authmd.queries, errors shown beside the field -------
def text_arg(args, name: str) -> str:
    return (args.get(name) or "").strip()


def int_arg(args, name: str) -> int | None:
    value = text_arg(args, name)
    return int(value) if value.isdigit() else None


def choice_arg(args, name: str, choices, errors: dict, message: str) -> str | None:
    value = args.get(name) or ""
    if value and value not in choices:
        errors[name] = message
        return None
    return value or None


def date_arg(args, name: str, errors: dict, end=False) -> datetime | None:
    """The start of the day named YYYY-MM-DD; with end, the start of the next day (an exclusive bound)."""
    value = text_arg(args, name)
    if not value:
        return None
    try:
        d = date.fromisoformat(value)
    except ValueError:
        errors[name] = "Use the form YYYY-MM-DD."
        return None
    start = datetime.combine(d, datetime.min.time())
    return start + timedelta(days=1) if end else start


def cursor_arg(value: str | None) -> tuple | None:
    """'<iso time>~<id>' → (datetime, id), or None."""
    if not value or "~" not in value:
        return None
    t, _, i = value.partition("~")
    try:
        return datetime.fromisoformat(t), i
    except ValueError:
        return None


def next_page(args, key: str, value) -> dict | None:
    """The query string of the next page: the same filters, the new cursor (None when there is no next page)."""
    if value is None:
        return None
    return {**{k: v for k, v in args.items() if v and k != key}, key: value}
