"""rawsql: statements compiled once and run on the session's DBAPI cursor behave like SQLAlchemy's own."""
from datetime import datetime

from authmd.extensions import db
from authmd.models import Credential, Registration, Scope
from authmd.rawsql import Prepared, Runner

INSERT_SCOPE = Prepared(Scope.__table__.insert(), ("name", "created_at"))
INSERT_CREDENTIAL = Prepared(Credential.__table__.insert().returning(Credential.__table__.c.id),
                             ("digest", "prefix", "type", "registration_id", "created_at", "expires_at"))


def test_defaults_and_types_come_out_as_the_orm_reads_them(app):
    with app.app_context():
        run = Runner()
        run.execute(INSERT_SCOPE, {"name": "raw.scope", "created_at": datetime(2026, 3, 4, 5, 6, 7, 890)})
        db.session.commit()
        row = db.session.execute(db.select(Scope).where(Scope.name == "raw.scope")).scalar_one()
        # the columns' scalar defaults were filled in (description "", position 0, pre False, post True, enabled True)
        assert (row.description, row.position, row.pre_claim, row.post_claim, row.enabled) == ("", 0, False, True, True)
        assert row.created_at == datetime(2026, 3, 4, 5, 6, 7, 890)


def test_returning_and_the_sessions_transaction(app):
    with app.app_context():
        db.session.add(Registration(id="reg_raw", type="anonymous", status="pending", created_at=datetime(2026, 1, 1)))
        db.session.commit()
        run = Runner()
        new_id = run.execute(INSERT_CREDENTIAL, {"digest": "d" * 64, "prefix": "sk_raw", "type": "api_key",
                                                 "registration_id": "reg_raw", "created_at": datetime(2026, 1, 2),
                                                 "expires_at": None}).fetchone()[0]
        # the same transaction as the session: visible to it before commit, gone after a rollback
        assert db.session.get(Credential, new_id).prefix == "sk_raw"
        db.session.rollback()
        assert db.session.execute(db.select(Credential).where(Credential.digest == "d" * 64)).first() is None
