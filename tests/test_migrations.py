"""Migrations: `alembic upgrade head` builds exactly the models' schema (on the suite's database, SQLite or
PostgreSQL), and `flask init-db` may run any number of times."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app

from authmd.extensions import db
from authmd.models import Scope


def test_migrations_produce_the_models_schema(app):
    # the session's database was built by the migrations only (conftest's `schema` runs init-db)
    with app.app_context():
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diffs = compare_metadata(ctx, db.metadata)
    assert diffs == [], f"the migrations and the models disagree ({db.engine.dialect.name}): {diffs}"


def head_revision(app) -> str:
    with app.app_context():
        config = current_app.extensions["migrate"].migrate.get_config()
        return ScriptDirectory.from_config(config).get_current_head()


def test_init_db_is_idempotent_and_lands_on_head(app, runner):
    for _ in range(2):
        result = runner.invoke(args=["init-db"])
        assert result.exit_code == 0, result.output
        assert "database ready" in result.output
    with app.app_context():
        names = db.session.execute(db.select(Scope.name).order_by(Scope.name)).scalars().all()
        with db.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    assert names == ["api.read", "api.write"]  # seeded once, not twice
    assert current == head_revision(app)


def test_init_db_builds_a_fresh_sqlite_database(make_app, tmp_path):
    fresh = make_app(DATABASE_URL="sqlite:///" + str(tmp_path / "fresh.sqlite3"))
    result = fresh.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    with fresh.app_context():
        with db.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata)
    assert diffs == []
