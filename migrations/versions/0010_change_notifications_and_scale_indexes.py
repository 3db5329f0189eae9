"""change notifications and the indexes of a large registry

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

On PostgreSQL every new event now sends ``NOTIFY wanlora_events`` (payload: the schema, then the event
id), so the server's change feed waits on a ``LISTEN`` instead of reading the log head in a loop
(``registry.db.watch``); SQLite needs nothing, its files change on each commit.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NOTIFY = """
CREATE OR REPLACE FUNCTION wanlora_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wanlora_events', current_schema() || ':' || NEW.id);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY)
        op.execute(
            "CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION wanlora_event_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
        op.execute("DROP FUNCTION IF EXISTS wanlora_event_notify()")
