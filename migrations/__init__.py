"""Alembic migrations for the wanlora registry schema (run with `wanlora db upgrade`)."""
