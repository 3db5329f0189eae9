"""Migrations build exactly the models' schema; old databases get a message naming the fix."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

import registry.db.tables  # noqa: F401 - registers the tables on SQLModel.metadata
from registry.db.engine import SCHEMA_HEAD, Database, alembic_config
from registry.domain.errors import SchemaOutdated
from tests.conftest import BACKENDS

# The migrations themselves, on empty databases (other tests get the head schema from a template).
pytestmark = [pytest.mark.parametrize("database_url", BACKENDS, indirect=True), pytest.mark.empty_database]


def test_migrations_build_exactly_the_models_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == []
    assert db.current_revision() == db.head_revision()


def test_the_schema_head_commands_check_is_the_newest_migration(db: Database) -> None:
    """Commands compare the database with SCHEMA_HEAD without loading alembic: it must be the scripts' head,
    and the one-query read of the revision must agree with alembic's."""
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [SCHEMA_HEAD]
    with db.engine.connect() as conn:
        assert db.current_revision() == MigrationContext.configure(conn).get_current_revision() == SCHEMA_HEAD


def test_new_database_is_created_on_first_use(database_url: str) -> None:
    fresh = Database(database_url)
    with fresh.session() as s:
        assert s.exec(text("SELECT count(*) FROM loras")).one()[0] == 0  # type: ignore[call-overload]
    fresh.dispose()


def test_older_revision_names_the_upgrade_command(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    stale = Database(db.url)
    with pytest.raises(SchemaOutdated, match="0000_older") as info, stale.session():
        pass
    assert "wanlora db upgrade" in (info.value.hint or "")
    stale.dispose()


def test_upgrade_is_idempotent(db: Database) -> None:
    before, after = db.upgrade()
    assert before == after == db.head_revision()


def test_the_partial_unique_indexes_are_partial_on_each_database(db: Database) -> None:
    """One current version and one running trial per LoRA: unique only among the rows in that state, on
    SQLite and on PostgreSQL alike (the latter's WHERE is attached to the models when it is opened)."""
    from registry.db.tables import Trial, Version

    query = (
        "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
        if not db.is_sqlite
        else "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    )
    for model, name, state in (
        (Version, "uq_versions_one_current", "current"),
        (Trial, "uq_trials_one_running", "running"),
    ):
        with db.engine.connect() as conn:
            ddl = conn.execute(text(query), {"name": name}).scalar_one()
        assert "UNIQUE" in ddl.upper() and "WHERE" in ddl.upper() and state in ddl, ddl
        index = next(i for i in model.__table__.indexes if i.name == name)  # type: ignore[attr-defined]
        dialect = "sqlite" if db.is_sqlite else "postgresql"
        assert state in str(index.dialect_kwargs[f"{dialect}_where"])
