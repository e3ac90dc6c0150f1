"""Raw-statement room: SQLAlchemy statements compiled once per dialect and run straight on a DBAPI cursor.

POST /agent/auth spent more time in SQLAlchemy's per-execution machinery (cache key, execution context,
parameter processing, result metadata: ~0.1 ms a statement) than in the database (bench/README.md).
A `Prepared` statement is built from an ordinary SQLAlchemy statement, compiled the first time it runs
on a dialect, and from then on costs one `cursor.execute` with the dialect's own bind conversions
(SQLite's DateTime-as-text, Boolean-as-int) and the columns' scalar defaults filled in, as SQLAlchemy
itself would. A `Runner` runs them on the session's own DBAPI connection, inside the session's
transaction: `db.session.commit()` / `rollback()` end it as usual, and on SQLite the writer lock
(authmd/sqlite_lock.py) is taken by the first write exactly as before.

Results come back as the driver gives them (no result processors): select text and integer columns,
or convert the rest yourself.
"""
from .extensions import db


class Prepared:
    def __init__(self, statement, column_keys=None):
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._plans: dict = {}

    def _plan(self, dialect):
        plan = self._plans.get(dialect.name)
        if plan is not None:
            return plan
        compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
        processors = dict(compiled._bind_processors)
        names = list(compiled.positiontup) if dialect.positional else list(compiled.binds)
        defaults = {}
        table = getattr(self.statement, "table", None)
        if table is not None:  # INSERT: columns with a Python-side default that the caller may leave out
            for column in table.columns:
                if column.key in names and column.default is not None:
                    if not column.default.is_scalar:
                        raise ValueError(f"{column.key}: only scalar defaults can be filled in without SQLAlchemy")
                    defaults[column.key] = column.default.arg
        plan = self._plans[dialect.name] = (str(compiled), dialect.positional, names, processors, defaults)
        return plan

    def params(self, dialect, values: dict):
        _, positional, names, processors, defaults = self._plan(dialect)
        out = []
        for name in names:
            value = values[name] if name in values else defaults[name]
            process = processors.get(name)
            if process is not None and value is not None:
                value = process(value)
            out.append(value)
        return tuple(out) if positional else dict(zip(names, out))


class Runner:
    """Runs Prepared statements on the session's DBAPI connection, in the session's transaction."""

    def __init__(self):
        conn = db.session.connection()  # begins the session's transaction if need be
        self.dialect = conn.dialect
        self.cursor = conn.connection.dbapi_connection.cursor()

    def execute(self, prepared: Prepared, values: dict | None = None):
        """Run once; returns the cursor (fetchone()/fetchall() for SELECT or RETURNING)."""
        self.cursor.execute(prepared._plan(self.dialect)[0], prepared.params(self.dialect, values or {}))
        return self.cursor

    def executemany(self, prepared: Prepared, rows: list[dict]) -> None:
        self.cursor.executemany(prepared._plan(self.dialect)[0], [prepared.params(self.dialect, row) for row in rows])
