"""Alembic environment: runs on the connection wanlora passes in (``wanlora db upgrade``)."""

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from registry.db.tables import postgresql_partials  # importing it registers the tables on SQLModel.metadata

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # plain `alembic` use: take the URL from alembic's own config
        engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
        if engine.dialect.name == "postgresql":
            postgresql_partials()
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
