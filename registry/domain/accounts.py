"""Users and API tokens as callers see them, and token lifetimes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from pydantic import BaseModel

from registry.domain.errors import InvalidInput

__all__ = ["TokenCreated", "TokenPublic", "UserPublic", "parse_duration"]
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


MAX_TOKEN_LIFETIME = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    m = _DURATION.fullmatch(text.strip()[:32])
    if not m or int(m[1]) == 0:
        raise InvalidInput(f"invalid duration {text[:40]!r}", hint="use a number and a unit: 90m, 12h, 30d, 4w")
    value = timedelta(**{_UNITS[m[2]]: min(int(m[1]), 10**9)})
    if value > MAX_TOKEN_LIFETIME:
        raise InvalidInput(f"a token lifetime of {text!r} is over {MAX_TOKEN_LIFETIME.days} days", hint="e.g. 365d")
    return value


class UserPublic(BaseModel):
    name: str
    created_by: str
    created_at: datetime
    removed_at: datetime | None = None  # removed: every token revoked, no new ones


class UserRemoved(UserPublic):
    revoked_tokens: int  # how many live tokens the removal revoked


class TokenPublic(BaseModel):
    id: int
    user: str
    prefix: str
    project: str
    role: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str  # the secret: shown once, never stored
