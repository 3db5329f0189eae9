"""Shared fixtures: a fresh database per test on SQLite and, when it is reachable, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from registry.app import Wanlora
from registry.db import Database
from registry.storage import LocalStore

PG_DSN = os.environ.get("WANLORA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> bool:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


PG_AVAILABLE = _pg_reachable()
if os.environ.get("CI") and not PG_AVAILABLE and not os.environ.get("WANLORA_TEST_NO_PG"):
    raise RuntimeError(f"CI=true but PostgreSQL is not reachable at {PG_DSN}")

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not PG_AVAILABLE, reason="no PostgreSQL"))]


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "artifacts")


@pytest.fixture
def wl(db: Database, store: LocalStore) -> Wanlora:
    return Wanlora(db=db, store=store, actor="tester")


def stored_objects(store: LocalStore) -> list[Path]:
    return [p for p in (store.root / "sha256").rglob("*") if p.is_file()]
