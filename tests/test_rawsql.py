"""rawsql: statements compiled once and run on the session's DBAPI connection behave like SQLAlchemy's own."""
from datetime import datetime

import pytest
from sqlalchemy.exc import IntegrityError

from authmd.extensions import db
from authmd.models import Credential, Registration, Scope
from authmd.rawsql import Prepared

INSERT_SCOPE = Prepared(Scope.__table__.insert())
INSERT_CREDENTIAL = Prepared(Credential.__table__.insert().returning(Credential.__table__.c.id))
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


def test_returning_and_the_sessions_transaction(app):
    with app.app_context():
        db.session.add(Registration(id="reg_raw", type="anonymous", status="pending", created_at=datetime(2026, 1, 1)))
        db.session.commit()
        new_id = INSERT_CREDENTIAL.first({"digest": "d" * 64, "prefix": "sk_raw", "type": "api_key",
                                          "registration_id": "reg_raw", "created_at": datetime(2026, 1, 2)})[0]
        # the same transaction as the session: visible to it before commit, gone after a rollback
        assert db.session.get(Credential, new_id).prefix == "sk_raw"
        db.session.rollback()
        assert db.session.execute(db.select(Credential).where(Credential.digest == "d" * 64)).first() is None


def test_database_errors_are_sqlalchemys_and_unknown_names_are_refused(app):
    with app.app_context():
        INSERT_SCOPE.execute({"name": "raw.dup", "created_at": datetime(2026, 1, 1)})
        with pytest.raises(IntegrityError):
            INSERT_SCOPE.execute({"name": "raw.dup", "created_at": datetime(2026, 1, 1)})
        db.session.rollback()
        with pytest.raises(KeyError):
            INSERT_SCOPE.execute({"name": "raw.x", "no_such_column": 1})
