"""Mail room: builds messages from templates and delivers them over SMTP, or to the outbox."""
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from flask import current_app, render_template

from .extensions import db
from .models import OutboxMail
from .util import ProtocolError, utcnow

log = logging.getLogger("authmd.mail")


def render(name: str, **context) -> tuple[str, str, str]:
    """(subject, text, html) from templates/mail/<name>.txt and .html; the subject is the first text line."""
    text = render_template(f"mail/{name}.txt", **context)
    html = render_template(f"mail/{name}.html", **context)
    subject, _, body = text.partition("\n")
    return subject.strip(), body.lstrip("\n"), html


def send(to: str, subject: str, text: str, html: str | None = None) -> None:
    """Deliver now, or raise ProtocolError 503 email_unavailable; the caller then rolls back."""
    cfg = current_app.config
    if not cfg.get("MAIL_SERVER"):
        row = OutboxMail(created_at=utcnow(), to_addr=to, subject=subject, body_text=text, body_html=html)
        db.session.add(row)
        db.session.flush()
        # The body holds one-time links: it stays in the outbox table, never in the log.
        log.info("mail held in outbox id=%s to=%s subject=%r (no AUTHMD_MAIL_SERVER set; "
                 "read it with `flask --app app outbox show %s` or in the console)", row.id, to, subject, row.id)
        return
    msg = EmailMessage()
    msg["From"] = cfg["MAIL_DEFAULT_SENDER"]
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="authmd")
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    try:
        port = int(cfg.get("MAIL_PORT") or 25)
        timeout = cfg.get("MAIL_TIMEOUT", 10)
        if cfg.get("MAIL_USE_SSL"):
            smtp = smtplib.SMTP_SSL(cfg["MAIL_SERVER"], port, timeout=timeout,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(cfg["MAIL_SERVER"], port, timeout=timeout)
        with smtp:
            if cfg.get("MAIL_USE_TLS") and not cfg.get("MAIL_USE_SSL"):
                smtp.starttls(context=ssl.create_default_context())
            if cfg.get("MAIL_USERNAME"):
                smtp.login(cfg["MAIL_USERNAME"], cfg.get("MAIL_PASSWORD") or "")
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("mail to %s failed: %s", to, type(exc).__name__)
        retry = str(cfg.get("MAIL_RETRY_AFTER", 60))
        raise ProtocolError(503, "email_unavailable",
                            "The mail server did not accept the message; nothing was changed, retry later.",
                            {"Retry-After": retry}) from None
    log.info("mail sent to %s subject=%r", to, subject)
