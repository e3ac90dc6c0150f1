"""Operations CLI room: `flask export-audit` streams audit events as JSON lines or CSV."""
import csv
import json
from datetime import datetime, timezone

import click

from .extensions import db
from .models import AuditEvent
from .util import iso

# protocol ("v0.1", "latest", empty for the console's and operators' own rows) last: a reader of the earlier
# columns by position keeps working
COLUMNS = ["id", "time", "event", "actor_kind", "actor_id", "ip", "user_agent", "registration_id", "user_id",
           "iss", "sub", "agent_platform", "agent_context_id", "data", "protocol"]
BATCH = 2000


def parse_time(value: str) -> datetime:
    """ISO 8601 date or date-time; with an offset it is converted, without one it is taken as UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or date-time") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def iter_events(since: datetime, until: datetime | None, batch: int = BATCH):
    """Events in id order, fetched in keyset batches (id > last), so memory stays flat on millions of rows."""
    table = AuditEvent.__table__
    last_id = 0
    while True:
        query = db.select(table).where(table.c.created_at >= since, table.c.id > last_id)
        if until is not None:
            query = query.where(table.c.created_at < until)
        rows = db.session.execute(query.order_by(table.c.id).limit(batch)).mappings().all()
        if not rows:
            return
        for row in rows:
            yield row
        last_id = rows[-1]["id"]
        db.session.rollback()  # end the read transaction between batches; nothing is held open


def as_record(row) -> dict:
    return {"id": row["id"], "time": iso(row["created_at"]), "event": row["event"],
            "actor_kind": row["actor_kind"], "actor_id": row["actor_id"], "ip": row["ip"],
            "user_agent": row["user_agent"], "registration_id": row["registration_id"],
            "user_id": row["user_id"], "iss": row["iss"], "sub": row["sub"],
            "agent_platform": row["agent_platform"], "agent_context_id": row["agent_context_id"],
            "data": json.loads(row["data"]) if row["data"] else {}, "protocol": row["protocol"]}


def register(app):
    @app.cli.command("export-audit")
    @click.option("--since", required=True, help="ISO 8601 start (inclusive), e.g. 2026-05-01 or 2026-05-01T12:00Z.")
    @click.option("--until", default=None, help="ISO 8601 end (exclusive); default: now.")
    @click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
    def export_audit(since, until, fmt):
        """Stream audit events to stdout (JSON lines or CSV), oldest first."""
        start = parse_time(since)
        end = parse_time(until) if until else None
        out = click.get_text_stream("stdout")
        writer = None
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(COLUMNS)
        count = 0
        for row in iter_events(start, end):
            rec = as_record(row)
            if writer is not None:
                rec["data"] = json.dumps(rec["data"], sort_keys=True) if rec["data"] else ""
                writer.writerow(["" if rec[c] is None else rec[c] for c in COLUMNS])
            else:
                out.write(json.dumps(rec, sort_keys=True) + "\n")
            count += 1
        out.flush()
        click.echo(f"exported {count} event(s)", err=True)


__all__ = ["register", "parse_time", "iter_events"]
