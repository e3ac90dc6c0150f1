"""Mail room: builds messages from templates; delivers them after the request's commit, or holds them in the outbox.

Delivery never runs inside a write transaction: an SMTP server that is slow or silent would otherwise
hold the database's write lock (on SQLite, every other registration) for as long as it dawdles. So the
domain `queue()`s a message in its transaction, and the view calls `deliver_queued()` right after its
commit. The whole SMTP conversation has one deadline (MAIL_DEADLINE, well under gunicorn's worker
timeout), however slowly the server trickles its bytes. When delivery fails, what the message was for
is undone in a short transaction of its own (the `on_failure` the domain gave), and the agent gets
503 email_unavailable with Retry-After.

The queued message (it holds one-time links) is kept only in this request's memory: a process that dies
between the commit and the send loses it, and the agent retries. A message queued by a transaction
that then rolls back is dropped, never sent.

With no MAIL_SERVER the outbox table is the mailbox: the message is written in the caller's transaction
and counts as delivered at once.
"""
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

from flask import current_app, g, has_app_context, render_template
from sqlalchemy import event

from .extensions import db
from .models import OutboxMail
from .util import ProtocolError, utcnow

log = logging.getLogger("authmd.mail")
_QUEUE = "authmd_mail_queue"


def render(name: str, **context) -> tuple[str, str, str]:
    """(subject, text, html) from templates/mail/<name>.txt and .html; the subject is the first text line."""
    text = render_template(f"mail/{name}.txt", **context)
    html = render_template(f"mail/{name}.html", **context)
    subject, _, body = text.partition("\n")
    return subject.strip(), body.lstrip("\n"), html


@dataclass
class _Queued:
    message: EmailMessage
    on_sent: tuple | None
    on_failure: tuple | None


def queue(to: str, subject: str, text: str, html: str | None = None, *, on_sent: tuple | None = None,
          on_failure: tuple | None = None) -> bool:
    """Send this message once the caller's transaction has committed. True when it is already in the
    mailbox (the outbox, written in the caller's transaction); False when deliver_queued() will send it.

    on_sent, on_failure: (fn, *args), each run after delivery in a short transaction of its own, with
    plain values only (the request's ORM objects are stale by then): on_sent records the delivery,
    on_failure leaves the state as if the request had not happened, as far as the agent can tell."""
    cfg = current_app.config
    if not cfg.get("MAIL_SERVER"):
        row = OutboxMail(created_at=utcnow(), to_addr=to, subject=subject, body_text=text, body_html=html)
        db.session.add(row)
        db.session.flush()
        # The body holds one-time links: it stays in the outbox table, never in the log.
        log.info("mail held in outbox id=%s to=%s subject=%r (no AUTHMD_MAIL_SERVER set; "
                 "read it with `flask --app app outbox show %s` or in the console)", row.id, to, subject, row.id)
        return True
    msg = EmailMessage()
    msg["From"] = cfg["MAIL_DEFAULT_SENDER"]
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="authmd")
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    g.setdefault(_QUEUE, []).append(_Queued(msg, on_sent, on_failure))
    return False


def deliver_queued() -> None:
    """Deliver what this request queued. Call it right after the commit, with no transaction open (the
    SQLite write lock must not wait on a mail server). On a failure the failed message's on_failure (and
    those of the messages after it) run, then 503 email_unavailable is raised."""
    queued = g.pop(_QUEUE, None)
    if not queued:
        return
    # what a rolled-back transaction queued is gone already (_rolled_back); what is left was queued by a
    # transaction that is over, hence committed, unless the caller has not committed yet
    if db.session().in_transaction():
        # a programming error, not a mail fault: never send what no committed transaction stands behind
        raise RuntimeError("mail.deliver_queued() called before the transaction that queued the mail committed")
    cfg = current_app.config
    deadline = time.monotonic() + float(cfg["MAIL_DEADLINE"])
    for index, item in enumerate(queued):
        try:
            _send(item.message, deadline)
        except (smtplib.SMTPException, OSError) as exc:
            log.warning("mail to %s failed: %s", item.message["To"], type(exc).__name__)
            for undone in queued[index:]:
                _in_own_transaction(undone.on_failure, "undo what an undelivered mail was for")
            raise ProtocolError(503, "email_unavailable",
                                "The mail server did not accept the message; nothing was changed, retry later.",
                                {"Retry-After": str(cfg.get("MAIL_RETRY_AFTER", 60))}) from None
        log.info("mail sent to %s subject=%r", item.message["To"], item.message["Subject"])
        _in_own_transaction(item.on_sent, "record a delivered mail")


def _in_own_transaction(call: tuple | None, what: str) -> None:
    if call is None:
        return
    fn, *args = call
    try:
        fn(*args)
        db.session.commit()
    except Exception:  # noqa: BLE001 - the mail's outcome stands; the bookkeeping failure is logged
        db.session.rollback()
        log.exception("could not %s", what)


@event.listens_for(db.session, "after_rollback")
def _rolled_back(session):
    # what a rolled-back transaction queued must never leave. Mail is queued last in a request's
    # transaction and delivered right after its commit, so whatever is queued when the transaction rolls
    # back is that transaction's (a SAVEPOINT rolled back inside it changes nothing of the kind).
    if has_app_context() and not session.in_nested_transaction():
        g.pop(_QUEUE, None)


# --- SMTP with one deadline for the whole conversation ---------------------------------------------
def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the mail deadline passed")
    return left


class _DeadlineReader:
    """What smtplib reads replies through (its `file`): readline() that gives up at the deadline however
    slowly the server trickles bytes (a per-operation socket timeout restarts with every byte)."""

    def __init__(self, sock, deadline: float):
        self.sock, self.deadline, self.buffer = sock, deadline, bytearray()

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0 or 0 < limit <= len(self.buffer):
                size = end + 1 if end >= 0 else limit
                if limit > 0:
                    size = min(size, limit)
                line, self.buffer = bytes(self.buffer[:size]), self.buffer[size:]
                return line
            self.sock.settimeout(_left(self.deadline))
            chunk = self.sock.recv(4096)
            if not chunk:
                line, self.buffer = bytes(self.buffer), bytearray()
                return line
            self.buffer += chunk

    def close(self) -> None:
        self.buffer = bytearray()


class _Deadline:
    """Mixed into smtplib's clients: every socket operation gets only the time left before the deadline."""

    def __init__(self, host, port, deadline: float, **kwargs):
        self.deadline = deadline
        super().__init__(host, port, timeout=_left(deadline), **kwargs)

    def _get_socket(self, host, port, timeout):
        return super()._get_socket(host, port, _left(self.deadline))

    def send(self, s):
        if self.sock is not None:
            self.sock.settimeout(_left(self.deadline))  # sendall's timeout bounds the whole send
        return super().send(s)

    def getreply(self):
        if self.sock is not None and not (isinstance(self.file, _DeadlineReader) and self.file.sock is self.sock):
            self.file = _DeadlineReader(self.sock, self.deadline)  # again after STARTTLS swapped the socket
        return super().getreply()


class _SMTP(_Deadline, smtplib.SMTP):
    pass


class _SMTP_SSL(_Deadline, smtplib.SMTP_SSL):
    pass


def _send(msg: EmailMessage, deadline: float) -> None:
    cfg = current_app.config
    port = int(cfg.get("MAIL_PORT") or 25)
    if cfg.get("MAIL_USE_SSL"):
        smtp = _SMTP_SSL(cfg["MAIL_SERVER"], port, deadline, context=ssl.create_default_context())
    else:
        smtp = _SMTP(cfg["MAIL_SERVER"], port, deadline)
    try:
        if cfg.get("MAIL_USE_TLS") and not cfg.get("MAIL_USE_SSL"):
            smtp.starttls(context=ssl.create_default_context())
        if cfg.get("MAIL_USERNAME"):
            smtp.login(cfg["MAIL_USERNAME"], cfg.get("MAIL_PASSWORD") or "")
        smtp.send_message(msg)
    finally:
        try:
            smtp.quit()  # the message is accepted once DATA is answered: a QUIT that fails changes nothing
        except (smtplib.SMTPException, OSError):
            smtp.close()
