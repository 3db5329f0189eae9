"""Time: everything wanlora stores is UTC."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["as_utc", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything wanlora stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value
