"""Transaction room: one commit per request, and the one path for writes that must outlive a refused request.

Domain code adds and flushes; the view (or CLI command) that called it commits once. When the request
fails, the error handler rolls everything back. A few writes must land although the request fails: a
wrong code counted toward the lockout, a registration found past its deadline marked expired, an
assertion refused recorded in the audit log. Domain code does not commit them itself: it hands them to
`keep_on_error()`, and `rollback()` (called by every error handler and by views that turn a domain error
into a page) runs them in a fresh transaction after the rollback and commits that. A request that
succeeds never runs them: the caller's own transaction carries what it wrote.

Where the failing transaction itself holds exactly what the failure must leave behind, and must land
atomically with the check that found it (a wrong code counted under the registration's lock, so that
concurrent guesses cannot overshoot the limit), domain code calls `commit_on_error()` just before it
raises: `rollback()` then commits that transaction instead of rolling it back.
"""
import logging

from flask import g

from .extensions import db

log = logging.getLogger("authmd")
_KEY = "authmd_keep_on_error"
_COMMIT = "authmd_commit_on_error"


def keep_on_error(fn, *args, **kwargs) -> None:
    """Run fn(*args, **kwargs) in a transaction of its own if this request (or CLI call) fails.

    fn must be safe to run after the request's transaction was rolled back: it re-reads what it needs
    and writes with conditional statements, never with ORM objects loaded by the failed transaction."""
    g.setdefault(_KEY, []).append((fn, args, kwargs))


def commit_on_error() -> None:
    """What this transaction has written is what the coming failure must leave behind: the error handler
    commits it instead of rolling it back. Call it right before raising, with nothing else pending."""
    g.setdefault(_COMMIT, True)


def pending() -> int:
    return len(g.get(_KEY) or ()) + bool(g.get(_COMMIT))


def rollback(unexpected: bool = False) -> None:
    """End a failed request's transaction: roll it back (or commit it, after commit_on_error), then run and
    commit the writes kept for this failure. unexpected: the failure was no refusal but a fault (a 500):
    whatever the transaction holds is rolled back, even after commit_on_error."""
    kept = g.pop(_KEY, None) or []
    if g.pop(_COMMIT, False) and not unexpected:
        try:
            db.session.commit()
        except Exception:  # noqa: BLE001 - as below: the refusal stands, the bookkeeping is logged
            db.session.rollback()
            log.exception("could not commit what a refused request must leave behind")
    else:
        db.session.rollback()
    if not kept:
        return
    try:
        for fn, args, kwargs in kept:
            fn(*args, **kwargs)
        db.session.commit()
    except Exception:  # noqa: BLE001 - a failed bookkeeping write must not turn a 4xx into a 500
        db.session.rollback()
        log.exception("could not write what a refused request must leave behind (%d write(s))", len(kept))


def commit() -> None:
    """Commit the request's transaction; writes kept for a failure are dropped (the request succeeded)."""
    g.pop(_KEY, None)
    g.pop(_COMMIT, None)
    db.session.commit()
