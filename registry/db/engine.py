"""Engines, transactions and schema migration.

One managed session per unit of work: commit on success, roll back on error, always close. On SQLite,
write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the database lock instead
of failing half-way; on PostgreSQL the service locks the LoRA row it changes (``SELECT … FOR UPDATE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import Session

from registry.db.watch import ChangeSignal, FileSignal, PostgresSignal
from registry.domain.errors import InvalidInput, SchemaOutdated, Unavailable

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["SCHEMA_HEAD", "Database", "alembic_config"]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

# The newest migration's revision: what every command checks the database against. Kept here so that a
# command need not load alembic (a fifth of its start) to read the migration scripts; a test holds it to
# the scripts' head (tests/registry/test_migrations.py).
SCHEMA_HEAD = "0010"


def alembic_config(connection: Any | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_URL_HINT = "use sqlite:///PATH (the default) or postgresql+psycopg://USER@HOST:PORT/DB in WANLORA_DATABASE_URL"


def normalise_url(url: str) -> str:
    """The URL as SQLAlchemy needs it: ``postgres://`` (Heroku's, libpq's spelling) and a bare
    ``postgresql://`` mean PostgreSQL through psycopg 3, the driver wanlora installs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url = normalise_url(url)
        try:
            parsed = make_url(url)
            self.is_sqlite = parsed.get_backend_name() == "sqlite"
            if self.is_sqlite:
                if parsed.database and parsed.database != ":memory:":
                    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = create_engine(
                    url, connect_args={"timeout": 60, "check_same_thread": False}, pool_pre_ping=False
                )
                _sqlite_setup(self.engine)
            elif parsed.get_backend_name() == "postgresql":
                from registry.db.tables import postgresql_partials

                postgresql_partials()
                self.engine = create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)
            else:
                raise InvalidInput(f"wanlora does not support {parsed.get_backend_name()} databases", hint=_URL_HINT)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise InvalidInput(
                f"{_shown(url)!r} is not a database URL wanlora can open ({exc})", hint=_URL_HINT
            ) from None
        self._checked = False

    # -- schema -------------------------------------------------------------------------------------

    def head_revision(self) -> str | None:
        return SCHEMA_HEAD

    def current_revision(self) -> str | None:
        """The revision alembic recorded (``None`` for a database it never migrated), read with one query."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self) -> tuple[str | None, str | None]:
        """Migrate to the newest schema; returns (revision before, revision after)."""
        from alembic import command

        before = self.current_revision()
        with self.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        self._checked = True
        return before, self.current_revision()

    def ensure_schema(self) -> None:
        """Create a brand-new database; refuse one at an older revision with the command that fixes it."""
        if self._checked:
            return
        try:
            current = self.current_revision()
        except OperationalError as exc:
            raise Unavailable(
                f"cannot open the database at {self.safe_url}: {str(exc.orig or exc).strip().splitlines()[0]}",
                hint="check that the server runs and WANLORA_DATABASE_URL names it, its user and its database",
            ) from None
        head = self.head_revision()
        if current != head:
            with self.engine.connect() as conn:
                empty = not inspect(conn).get_table_names()
            if current is None and empty:
                self.upgrade()
                return
            # Another process may have created the schema between the two reads above (the tables and
            # alembic_version are committed together): read the revision again before refusing.
            current = self.current_revision()
            if current == head:
                self._checked = True
                return
            raise SchemaOutdated(
                f"the database at {self.safe_url} is at schema revision {current or 'none'}, this wanlora needs {head}",
                hint="back it up, then run `wanlora db upgrade`",
            )
        self._checked = True

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    # -- sessions -----------------------------------------------------------------------------------

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        self.ensure_schema()
        engine = self.engine if write else self.engine.execution_options(wanlora_read_only=True)
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def change_signal(self, interval: float) -> ChangeSignal:
        """Something to block on until the event log may have moved (``registry.db.watch``)."""
        if self.is_sqlite:
            database = make_url(self.url).database
            return FileSignal(Path(database or ":memory:").expanduser(), interval)
        dialect = self.engine.dialect
        cargs, cparams = dialect.create_connect_args(self.engine.url)
        cparams = {k: v for k, v in cparams.items() if k != "context"}  # SQLAlchemy's adapters: not needed here
        return PostgresSignal(lambda: dialect.loaded_dbapi.connect(*cargs, connect_timeout=10, **cparams))

    def dispose(self) -> None:
        self.engine.dispose()


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url if "@" not in url else "…@" + url.rsplit("@", 1)[1]


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("wanlora_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
