"""Raw-statement room: Core statements compiled once per dialect and run straight on the DBAPI connection
of the session's transaction, so they commit or roll back with the rest of the request.

POST /agent/auth spent more time in SQLAlchemy's per-execution machinery (statement cache key, execution
context, parameter processing, result object: ~0.1 ms a statement) than in the database (bench/README.md).
What of that machinery matters is kept: Python-side scalar column defaults (a callable default is refused
when the plan is made), the column types' bind and result processors (SQLite gets the same DateTime text
and gives back DateTime and Boolean values), DBAPI errors raised as SQLAlchemy's (a lost connection is
invalidated), and on SQLite the writer lock, which the connection's own cursor takes
(authmd/sqlite_lock.py). What is skipped: the session's autoflush (use these where no ORM object is
pending), ORM events (the configuration-cache invalidation in authdoc.py watches tables these statements
do not write) and SQL echo. Values are bound by parameter name, as with session.execute; every name
must be one of the statement's bind parameters (an INSERT or UPDATE sets the columns its parameters name).
"""
from sqlalchemy.exc import DBAPIError

from .extensions import db


class Prepared:
    __slots__ = ("_build", "_plans")

    def __init__(self, build):
        """build: a Core statement, or a function of the dialect name returning one."""
        self._build = build
        self._plans: dict = {}

    def _plan(self, dialect, keys: tuple):
        stmt = self._build(dialect.name) if callable(self._build) else self._build
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        defaults = {}
        for column, default in ([(c, c.default) for c in compiled.insert_prefetch]
                                + [(c, c.onupdate) for c in compiled.update_prefetch]):
            if default is None or not default.is_scalar:
                raise NotImplementedError(f"Prepared: {column} has a default that is not a plain value")
            defaults[column.key] = default.arg
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        unknown = set(keys) - binds.keys()
        if unknown:
            raise KeyError(f"Prepared: {sorted(unknown)} are not parameters of {stmt}")
        fixed = compiled.construct_params(dict(defaults, **dict.fromkeys(keys)))
        order = compiled.positiontup if dialect.positional else list(fixed)
        binders = tuple((name, binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in order)
        readers = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                        for column in stmt.exported_columns)
        return str(compiled), fixed, binders, dialect.positional, readers

    def _bound(self, dialect, rows: list) -> tuple:
        """(SQL, the DBAPI arguments of each row, the result readers) for a dialect."""
        key = (dialect.name, tuple(rows[0]))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(dialect, key[1])
        sql, fixed, binders, positional, readers = plan
        args = []
        for params in rows:
            values = dict(fixed)
            values.update(params)
            if positional:
                args.append([values[n] if bind is None else bind(values[n]) for n, bind in binders])
            else:
                args.append({n: values[n] if bind is None else bind(values[n]) for n, bind in binders})
        return sql, args, readers

    def _run(self, rows: list, fetch: str | None, many: bool = False, connection=None):
        if connection is None:
            connection = db.session.connection()  # begins the session's transaction if need be
        dialect = connection.dialect
        sql, args, readers = self._bound(dialect, rows)
        raw = connection.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            if many:
                cursor.executemany(sql, args)
                fetched = []
            else:
                cursor.execute(sql, args[0])
                fetched = [cursor.fetchone()] if fetch == "one" else cursor.fetchall() if fetch == "all" else []
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, raw, cursor)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(sql, args[0] if args else None, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost, dialect=dialect) from exc
        finally:
            cursor.close()
        if any(read is not None for read in readers):
            fetched = [None if row is None else tuple(v if read is None else read(v) for v, read in zip(row, readers))
                       for row in fetched]
        return fetched

    # connection: db.session.connection(), when a caller runs several statements (it saves asking the
    # session for it each time); by default the session's is asked for.

    def first(self, params: dict | None = None, connection=None) -> tuple | None:
        """The first row (a plain tuple) of a SELECT or an INSERT/UPDATE … RETURNING, or None."""
        return self._run([params or {}], "one", connection=connection)[0]

    def all(self, params: dict | None = None, connection=None) -> list[tuple]:
        """Every row (plain tuples) of a SELECT or a … RETURNING."""
        return self._run([params or {}], "all", connection=connection)

    def execute(self, params: dict | None = None, connection=None) -> None:
        self._run([params or {}], None, connection=connection)

    def execute_on(self, dialect, cursor, params: dict) -> None:
        """Run on a DBAPI cursor of the caller's own connection, outside the session (the hot path's held
        connection): its transaction, if any, is the caller's, and errors are the DBAPI's own."""
        sql, args, _ = self._bound(dialect, [params])
        cursor.execute(sql, args[0])

    def execute_many(self, rows: list[dict], connection=None) -> None:
        """The statement once per row (executemany); every row has the same parameter names."""
        if rows:
            self._run(rows, None, many=True, connection=connection)


_ON_CONFLICT: dict = {}


def on_conflict_do_nothing(dialect: str, table, *returning):
    """INSERT … ON CONFLICT DO NOTHING [RETURNING returning] for a dialect (PostgreSQL and SQLite ≥ 3.24
    both have it): the unique constraint decides a race without a SAVEPOINT; RETURNING says who won.
    Built once per dialect: building it (and its cache key) anew cost as much as running it."""
    key = (dialect, table, returning)
    stmt = _ON_CONFLICT.get(key)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table).on_conflict_do_nothing()
        if returning:
            stmt = stmt.returning(*returning)
        _ON_CONFLICT[key] = stmt
    return stmt


def insert_on_conflict_do_nothing(table, *returning):
    """on_conflict_do_nothing() for this session's dialect."""
    return on_conflict_do_nothing(db.session.get_bind().dialect.name, table, *returning)
