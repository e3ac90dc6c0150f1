"""rawsql: statements compiled once and run on the session's DBAPI connection behave like SQLAlchemy's own."""
from datetime import datetime

import pytest
from sqlalchemy.exc import IntegrityError

from authmd.extensions import db
from authmd.models import Scope, SeenJti, User
from authmd.rawsql import Prepared

INSERT_SCOPE = Prepared(Scope.__table__.insert())
SCOPES = Prepared(db.select(Scope.name, Scope.pre_claim, Scope.created_at).where(Scope.name.like("raw.%"))
                  .order_by(Scope.name))


def test_defaults_and_types_come_out_as_the_orm_reads_them(app):
    with app.app_context():
        INSERT_SCOPE.execute_many([{"name": "raw.a", "created_at": datetime(2026, 3, 4, 5, 6, 7, 890)},
                                   {"name": "raw.b", "created_at": datetime(2026, 3, 4, 5, 6, 8)}])
        db.session.commit()
        row = db.session.execute(db.select(Scope).where(Scope.name == "raw.a")).scalar_one()
        # the columns' scalar defaults were filled in (description "", position 0, pre False, post True, enabled True)
        assert (row.description, row.position, row.pre_claim, row.post_claim, row.enabled) == ("", 0, False, True, True)
        assert row.created_at == datetime(2026, 3, 4, 5, 6, 7, 890)
        # and read back through rawsql with the column types' result processing (bool and datetime on SQLite too)
        assert SCOPES.all() == [("raw.a", False, datetime(2026, 3, 4, 5, 6, 7, 890)),
                                ("raw.b", False, datetime(2026, 3, 4, 5, 6, 8))]


def test_prepared_statements_store_and_read_what_session_execute_does(app):
    table = SeenJti.__table__
    stamps = [datetime(2026, 5, 4, 13, 0, 0), datetime(2026, 5, 4, 13, 0, 0, 1234)]
    with app.app_context():
        for i, at in enumerate(stamps):
            db.session.execute(table.insert(), {"iss": "via-session", "jti": str(i), "expires_at": at})
            Prepared(table.insert()).execute({"iss": "via-prepared", "jti": str(i), "expires_at": at})
        db.session.commit()

        def stored(iss):
            return db.session.execute(db.select(db.cast(table.c.expires_at, db.String)).where(table.c.iss == iss)
                                      .order_by(table.c.jti)).scalars().all()
        assert stored("via-prepared") == stored("via-session")
        read = Prepared(db.select(table.c.expires_at, table.c.jti == "1").where(table.c.iss == db.bindparam("iss"))
                        .order_by(table.c.jti.desc()))
        assert read.first({"iss": "via-prepared"}) == (stamps[1], True)
        assert read.first({"iss": "nobody"}) is None


def test_prepared_statements_fill_defaults_write_in_the_session_transaction_and_raise_sqlalchemy_errors(app):
    users = User.__table__
    insert = Prepared(users.insert().returning(users.c.id))
    mine = db.select(db.func.count()).select_from(users).where(users.c.email.in_(["p@example.com", "q@example.com"]))
    with app.app_context():
        uid = insert.first({"email": "p@example.com", "created_at": datetime(2026, 1, 1)})[0]
        db.session.commit()
        u = db.session.get(User, uid)
        assert (u.is_active, u.is_admin, u.email_verified, u.phone_verified, u.source) == (True, False, False, False,
                                                                                            "jit")
        insert.first({"email": "q@example.com", "created_at": datetime(2026, 1, 1)})
        db.session.rollback()  # the INSERT was part of the session's transaction
        assert db.session.execute(mine).scalar() == 1
        with pytest.raises(IntegrityError):
            insert.first({"email": "p@example.com", "created_at": datetime(2026, 1, 1)})
        db.session.rollback()
        assert db.session.execute(mine).scalar() == 1
        with pytest.raises(KeyError):
            insert.first({"email": "r@example.com", "no_such_column": 1})


def test_a_statement_whose_default_is_computed_is_refused_when_planned(app):
    """Only plain-value defaults are filled in (a callable one would run per row in SQLAlchemy's execution,
    which this path skips): such a statement is refused, not run without its default."""
    table = db.Table("raw_callable_default", db.MetaData(), db.Column("id", db.Integer, primary_key=True),
                     db.Column("stamp", db.String, default=lambda: "computed"))
    with app.app_context():
        with pytest.raises(NotImplementedError, match="not a plain value"):
            Prepared(table.insert()).execute({"id": 1})


def test_a_database_error_is_raised_as_sqlalchemy_raises_it_and_the_transaction_goes_on_clean(app):
    from sqlalchemy.exc import DBAPIError, ProgrammingError, OperationalError
    with app.app_context():
        with pytest.raises((ProgrammingError, OperationalError)) as err:
            Prepared(db.select(db.literal_column("no_such_column")).select_from(Scope.__table__)).all()
        assert isinstance(err.value, DBAPIError) and err.value.statement and err.value.orig is not None
        db.session.rollback()
        assert db.session.execute(db.select(db.func.count()).select_from(Scope.__table__)).scalar() >= 0
