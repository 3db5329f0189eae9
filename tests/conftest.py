"""Shared fixtures: a fresh database per test on SQLite and, when it is reachable, PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from registry.backends.local import Wanlora
from registry.blobs.local import LocalStore
from registry.blobs.s3 import S3Store
from registry.db.engine import Database
from registry.domain.policy import Policy
from tests.helpers import Receiver

# Under pytest-xdist every worker is a process of its own: one thread each for torch's kernels, so
# that two workers on two cores do not fight over them (the tensors computed are the same).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# Nothing may download at run time: hub libraries go offline before they are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# The lifecycle, sync, API and access tests are about the mechanics of promotion and rollback, not
# about evidence: they run under a policy that requires no phase. The gate has its own tests
# (tests/registry/test_gate.py, tests/evaluator/), marked `gate`, which get the strict default.
NO_GATE = Policy({"require": []})


@pytest.fixture(autouse=True)
def _lifecycle_policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if request.node.get_closest_marker("gate"):
        os.environ.pop("WANLORA_POLICY_FILE", None)
        yield
        return
    path = tmp_path_factory.getbasetemp() / "no-gate-policy.toml"
    path.write_text("[default]\nrequire = []\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANLORA_POLICY_FILE", str(path))
    yield
    mp.undo()


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


class SchemaTemplates:
    """The head schema, built once per test process by the real migrations, then laid into each
    test's fresh database: a copied file on SQLite, the recorded DDL replayed on PostgreSQL. The
    migrations themselves run on empty databases in tests marked ``empty_database``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sqlite: Path | None = None
        self._postgresql: str | None = None

    def sqlite(self) -> Path:
        if self._sqlite is None:
            path = self.folder / "template.db"
            database = Database(f"sqlite:///{path}")
            database.upgrade()
            database.dispose()
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file we copy
            self._sqlite = path
        return self._sqlite

    def postgresql(self) -> str:
        """The statements the migrations executed (reads left out), as one script."""
        if self._postgresql is None:
            schema = f"tpl_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            database = Database(_pg_url(schema))
            statements: list[str] = []

            @event.listens_for(database.engine, "before_cursor_execute")
            def _record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
                if not statement.lstrip().upper().startswith("SELECT"):
                    assert not parameters, f"a migration statement with parameters cannot be replayed: {statement}"
                    statements.append(statement)

            try:
                database.upgrade()
            finally:
                database.dispose()
                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")
            self._postgresql = ";\n".join(statements)
        return self._postgresql


@pytest.fixture(scope="session")
def schema_templates(tmp_path_factory: pytest.TempPathFactory) -> SchemaTemplates:
    return SchemaTemplates(tmp_path_factory.mktemp("schema"))


def _pg_url(schema: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path, schema_templates: SchemaTemplates) -> Iterator[str]:
    """A fresh database of its own for the test, at the head schema (empty with ``empty_database``)."""
    backend = getattr(request, "param", "sqlite")
    migrated = request.node.get_closest_marker("empty_database") is None
    if backend == "sqlite":
        path = tmp_path / "registry.db"
        if migrated:
            shutil.copyfile(schema_templates.sqlite(), path)
        yield f"sqlite:///{path}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    if migrated:
        with psycopg.connect(PG_DSN, options=f"-csearch_path={schema}") as conn:
            conn.execute(schema_templates.postgresql().encode())
    try:
        yield _pg_url(schema)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.ensure_schema()  # migrates an empty database, checks a migrated one
    yield database
    database.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "artifacts")


@pytest.fixture
def wl(db: Database, store: LocalStore) -> Wanlora:
    return Wanlora(db=db, store=store, actor="tester", policy=NO_GATE)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto in server mode) on loopback, for the whole test session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield f"http://{host}:{port}"
    server.stop()


def make_s3(endpoint: str, **kw: object) -> S3Store:
    import boto3

    bucket = f"b-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return S3Store(f"s3://{bucket}/team/loras", endpoint_url=endpoint, region="us-east-1", **kw)  # type: ignore[arg-type]


def stored_objects(store: LocalStore) -> list[Path]:
    return [p for p in (store.root / "sha256").rglob("*") if p.is_file()]


# The security suite (SECURITY.md), run alone with `pytest -m security`.
SECURITY_SUITE = {
    "tests/registry/test_hostile_files.py", "tests/registry/test_header_bounds.py",
    "tests/registry/test_header_fuzz.py", "tests/registry/test_key_rules.py", "tests/registry/test_limits.py",
    "tests/registry/test_sync_hostile.py", "tests/registry/test_token_owners.py",
    "tests/registry/test_webhook_egress.py", "tests/registry/test_authorizer.py", "tests/registry/test_leftovers.py",
    "tests/api/test_route_matrix.py", "tests/api/test_schemathesis.py", "tests/api/test_hostile_uploads.py",
    "tests/api/test_api_concurrency.py", "tests/api/test_sign_in_limits.py", "tests/api/test_body_limit.py",
    "tests/api/test_integrity.py", "tests/api/test_error_table.py", "tests/cli/test_disk_full.py",
    "tests/web/test_dashboard.py",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        if Path(str(item.path)).relative_to(root).as_posix() in SECURITY_SUITE:
            item.add_marker(pytest.mark.security)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback (tests.helpers.Receiver), shut down after the test."""
    r = Receiver()
    yield r
    r.server.shutdown()
