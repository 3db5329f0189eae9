"""The database: tables (sqlmodel), the engine, migrations and the unit of work (``Database.session``)."""
