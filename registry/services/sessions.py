"""Dashboard sessions: a browser signs in once with an API token and then carries an HttpOnly cookie.

The cookie's value is a random secret; the database keeps only its sha256, the CSRF token the session's
forms must echo, and its expiry (never later than the token's). A session is only as good as its token:
revoking the token, its expiry or removing its user ends every session opened with it. Sessions opened by
`wanlora dashboard` on the embedded default stand for the local user instead of a token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from registry.db.tables import ApiToken, WebSession
from registry.domain.access import Principal
from registry.domain.clock import as_utc, utcnow
from registry.domain.errors import Unauthenticated
from registry.services.accounts import AccountService, hash_token

__all__ = ["OpenedSession", "SessionService", "WebCaller"]


@dataclass(frozen=True)
class WebCaller:
    principal: Principal
    csrf: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenedSession:
    secret: str  # the cookie's value: shown to the browser once, kept here only as its hash
    caller: WebCaller


# Sign-in checks a token before anyone is known: the account service is asked as nobody in particular.
_NOBODY = Principal(user="(signing in)", subject="anonymous", role="production", project="")
_EXPIRED = Unauthenticated("your dashboard session has ended", hint="sign in again with an API token")


class SessionService:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _open(
        self, *, token_id: int | None, local_user: str | None, principal: Principal, expires_at: datetime
    ) -> OpenedSession:
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.session.add(
            WebSession(
                secret_hash=hash_token(secret), token_id=token_id, local_user=local_user, csrf=csrf,
                created_at=utcnow(), expires_at=expires_at,
            )
        )  # fmt: skip
        self.session.flush()
        return OpenedSession(secret, WebCaller(principal, csrf, expires_at))

    def open(self, token: str, *, lifetime: timedelta) -> OpenedSession:
        """Sign in with an API token (Unauthenticated if it is not valid)."""
        principal, token_expiry = AccountService(self.session, principal=_NOBODY).authenticate_with_expiry(token)
        expires = utcnow() + lifetime
        if token_expiry is not None:
            expires = min(expires, token_expiry)
        token_id = int(principal.subject.removeprefix("token:"))
        return self._open(token_id=token_id, local_user=None, principal=principal, expires_at=expires)

    def open_local(self, user: str, *, lifetime: timedelta) -> OpenedSession:
        """A session for the local operator (admin of every project), for `wanlora dashboard` alone."""
        return self._open(
            token_id=None, local_user=user, principal=Principal.local_admin(user), expires_at=utcnow() + lifetime
        )

    def _row(self, secret: str | None) -> WebSession | None:
        if not secret or len(secret) > 128:
            return None
        return self.session.exec(select(WebSession).where(WebSession.secret_hash == hash_token(secret))).first()

    def resolve(self, secret: str | None, *, allow_local: bool) -> WebCaller:
        """The caller a cookie stands for, checked against its token now; Unauthenticated otherwise."""
        row = self._row(secret)
        now = utcnow()
        if row is None or row.ended_at is not None or (as_utc(row.expires_at) or now) <= now:
            raise _EXPIRED
        expires = as_utc(row.expires_at) or now
        if row.token_id is None:
            if not allow_local or not row.local_user:
                raise _EXPIRED
            return WebCaller(Principal.local_admin(row.local_user), row.csrf, expires)
        try:
            principal, _ = AccountService(self.session, principal=_NOBODY).live_token(col(ApiToken.id) == row.token_id)
        except Unauthenticated:
            raise _EXPIRED from None
        return WebCaller(principal, row.csrf, expires)

    def close(self, secret: str | None) -> None:
        """Sign out: the session ends now, whatever its expiry."""
        row = self._row(secret)
        if row is not None and row.ended_at is None:
            row.ended_at = utcnow()
            self.session.add(row)
            self.session.flush()
