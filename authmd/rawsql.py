"""Raw-statement room: Core statements compiled once per dialect and run on a cursor of the session's
DBAPI connection, so they commit or roll back with the rest of the request.

Why: POST /agent/auth spent more time in SQLAlchemy's per-execution machinery for a compiled statement
(statement cache key, compiled-cache lookup, execution context, parameter processing, result object)
than in the database. Measured with bench.micro, in-process, on SQLite (2026-12-02, best of 5×1000):

    per request            these statements   connection.execute()   exec_driver_sql()
    anonymous registration     561–619 µs          773 µs               739–768 µs
    ID-JAG registration      1,110–1,158 µs       1,461 µs             1,392–1,394 µs

about 24% saved on both, above the 10% a hand-tuned path must pay for itself here (bench/README.md).
Only the registration paths, the user provisioning they call and the hot path's once-a-minute
last_used_at touch use it; everything else uses the ORM or session.execute.

Built on SQLAlchemy's public API only: the SQL text and the parameter order come from
`SQLCompiler.construct_expanded_state()` (its `statement` and `positiontup`), each parameter's type from `SQLCompiler.binds`, its conversion
from `TypeEngine.bind_processor()`, result conversion from `TypeEngine.result_processor()`; the
Python-side scalar defaults from `Column.default` / `Column.onupdate` (a callable default is refused when
the plan is made). Statements run on a cursor of the transaction's DBAPI connection
(`Connection.connection.dbapi_connection`; on SQLite that cursor takes the writer lock,
authmd/sqlite_lock.py); a DBAPI error is raised as the sqlalchemy.exc class of the same PEP 249 name,
and a lost connection is invalidated (`Dialect.is_disconnect`, `Connection.invalidate`). What is
skipped: the session's autoflush (use these where no ORM object is pending), engine events (SQL echo)
and ORM events (nothing relies on them: configuration caches are invalidated by the domain functions
that change the configuration, authdoc.config_changed). Values are bound by parameter name, as with
session.execute; every name must be one of the statement's bind parameters (an INSERT or UPDATE sets
the columns its parameters name).
"""
from sqlalchemy import Insert, Update
from sqlalchemy import exc as sa_exc

from .extensions import db


def _as_sqlalchemy_error(sql, params, exc, invalidated: bool) -> sa_exc.DBAPIError:
    """The DBAPI's exception as SQLAlchemy raises it: the sqlalchemy.exc class of the same PEP 249 name
    (IntegrityError, OperationalError, ...), so callers catch the same classes whichever path ran."""
    for klass in type(exc).__mro__:
        cls = getattr(sa_exc, klass.__name__, None)
        if isinstance(cls, type) and issubclass(cls, sa_exc.DBAPIError):
            return cls(sql, params, exc, connection_invalidated=invalidated)
    return sa_exc.DBAPIError(sql, params, exc, connection_invalidated=invalidated)


class _Plan:
    __slots__ = ("sql", "fixed", "order", "processors", "readers")

    def __init__(self, sql, fixed, order, processors, readers):
        self.sql, self.fixed, self.order, self.processors, self.readers = sql, fixed, order, processors, readers


def _scalar_defaults(stmt, keys) -> dict:
    """The Python-side defaults an INSERT (Column.default) or UPDATE (Column.onupdate) fills in for the
    columns the caller does not set, as SQLAlchemy's own execution would."""
    if not isinstance(stmt, (Insert, Update)):
        return {}
    out = {}
    for column in stmt.table.columns:
        default = column.default if isinstance(stmt, Insert) else column.onupdate
        if default is None or column.key in keys:
            continue
        if not default.is_scalar:
            raise NotImplementedError(f"Prepared: {column} has a default that is not a plain value")
        out[column.key] = default.arg
    return out


class Prepared:
    __slots__ = ("_build", "_plans")

    def __init__(self, build):
        """build: a Core statement, or a function of the dialect name returning one."""
        self._build = build
        self._plans: dict = {}

    def _plan(self, dialect, keys: tuple) -> _Plan:
        stmt = self._build(dialect.name) if callable(self._build) else self._build
        defaults = _scalar_defaults(stmt, keys)
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys) + list(defaults))
        state = compiled.construct_expanded_state(dict(defaults, **dict.fromkeys(keys)))
        unknown = set(keys) - state.parameters.keys()
        if unknown:
            raise KeyError(f"Prepared: {sorted(unknown)} are not parameters of {stmt}")
        fixed = {name: value for name, value in state.parameters.items() if name not in keys}
        order = tuple(state.positiontup) if dialect.positional else tuple(state.parameters)
        processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order)
        readers = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                        for column in stmt.exported_columns)
        return _Plan(state.statement, fixed, order, processors, readers if any(readers) else None)

    def _bound(self, dialect, rows: list) -> tuple:
        """(the plan, the DBAPI arguments of each row) for a dialect."""
        key = (dialect.name, tuple(rows[0]))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(dialect, key[1])
        args = []
        for params in rows:
            values = dict(plan.fixed)
            values.update(params)
            bound = [values[n] if proc is None else proc(values[n]) for n, proc in zip(plan.order, plan.processors)]
            args.append(tuple(bound) if dialect.positional else dict(zip(plan.order, bound)))
        return plan, args

    def _run(self, rows: list, fetch: str | None, many: bool = False, connection=None):
        if connection is None:
            connection = db.session.connection()  # begins the session's transaction if need be
        dialect = connection.dialect
        plan, args = self._bound(dialect, rows)
        raw = connection.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            if many:
                cursor.executemany(plan.sql, args)
                fetched = []
            else:
                cursor.execute(plan.sql, args[0])
                fetched = [cursor.fetchone()] if fetch == "one" else cursor.fetchall() if fetch == "all" else []
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, raw, cursor)
            if lost:
                connection.invalidate(exc)
            raise _as_sqlalchemy_error(plan.sql, args[0], exc, lost) from exc
        finally:
            cursor.close()
        readers = plan.readers
        if readers is None:
            return fetched
        return [None if row is None else tuple(v if read is None else read(v) for v, read in zip(row, readers))
                for row in fetched]

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
        plan, args = self._bound(dialect, [params])
        cursor.execute(plan.sql, args[0])

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
