"""Users and API tokens: creation, revocation, and turning a presented token into a Principal.

Tokens are random (``wlt_`` + 32 bytes, URL-safe), shown once, and stored only as their sha256; a token
carries one role in one project (``*`` for all). Authentication refuses unknown, expired and revoked
tokens alike with ``Unauthenticated`` and says nothing about which it was.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, select

from registry.db.tables import ApiToken, User
from registry.domain.access import ALL_PROJECTS, ROLES, Action, Principal
from registry.domain.accounts import TokenCreated, TokenPublic, UserPublic, UserRemoved
from registry.domain.clock import as_utc, utcnow
from registry.domain.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from registry.domain.schemas import check_name
from registry.services.access import Authorizer, default_authorizer

__all__ = ["TOKEN_PREFIX", "AccountService", "hash_token"]

TOKEN_PREFIX = "wlt_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountService:
    def __init__(self, session: Session, *, principal: Principal, authorizer: Authorizer | None = None) -> None:
        self.session = session
        self.principal = principal
        self.authz = authorizer or default_authorizer()

    def _token_public(self, t: ApiToken, user: str) -> TokenPublic:
        return TokenPublic(
            id=t.id or 0,
            user=user,
            prefix=t.prefix,
            project=t.project,
            role=t.role,
            created_by=t.created_by,
            created_at=as_utc(t.created_at) or t.created_at,
            expires_at=as_utc(t.expires_at),
            revoked_at=as_utc(t.revoked_at),
            last_used_at=as_utc(t.last_used_at),
        )

    def _user(self, name: str) -> User:
        row = self.session.exec(select(User).where(User.name == name)).first()
        if row is None:
            raise NotFound(f"user {name!r} does not exist", hint="add it with `wanlora user add NAME`")
        if row.removed_at is not None:
            raise NotFound(f"user {name!r} was removed", hint=f"add it again with `wanlora user add {name}`")
        return row

    @staticmethod
    def _public(u: User) -> UserPublic:
        return UserPublic(
            name=u.name, created_by=u.created_by, created_at=as_utc(u.created_at) or u.created_at,
            removed_at=as_utc(u.removed_at),
        )  # fmt: skip

    def has_users(self) -> bool:
        return self.session.exec(select(User.id)).first() is not None

    def add_user(self, *, name: str) -> UserPublic:
        check_name(name, "user name")
        self.authz.require(self.principal, ALL_PROJECTS, Action.USER_MANAGE)
        existing = self.session.exec(select(User).where(User.name == name)).first()
        if existing is not None and existing.removed_at is None:
            raise AlreadyExists(f"user {name!r} already exists")
        if existing is not None:  # a removed user comes back (its old tokens stay revoked)
            existing.removed_at = None
            self.session.add(existing)
            self.session.flush()
            return self._public(existing)
        user = User(name=name, created_by=self.principal.user, created_at=utcnow())
        self.session.add(user)
        self.session.flush()
        return self._public(user)

    def list_users(self, *, removed: bool = False) -> list[UserPublic]:
        self.authz.require(self.principal, ALL_PROJECTS, Action.USER_MANAGE)
        rows = self.session.exec(select(User).order_by(User.name)).all()
        return [self._public(u) for u in rows if removed or u.removed_at is None]

    def remove_user(self, *, name: str) -> UserRemoved:
        """Remove a user: every token of theirs is revoked at once, and none can be made for them. The row
        stays, so the event log and the token list still name who did what."""
        self.authz.require(self.principal, ALL_PROJECTS, Action.USER_MANAGE)
        user = self._user(name)
        if user.name == self.principal.user:
            raise InvalidInput(
                "you cannot remove yourself: the registry could be left without an admin",
                hint="another admin of every project can remove this user",
            )
        now = utcnow()
        live = self.session.exec(
            select(ApiToken).where(ApiToken.user_id == user.id, col(ApiToken.revoked_at).is_(None))
        ).all()
        for token in live:
            token.revoked_at = now
            self.session.add(token)
        user.removed_at = now
        self.session.add(user)
        self.session.flush()
        return UserRemoved(**self._public(user).model_dump(), revoked_tokens=len(live))

    def create_token(self, *, user: str, project: str, role: str, expires_in: timedelta | None = None) -> TokenCreated:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}", hint=f"choose one of: {', '.join(ROLES)}")
        if project != ALL_PROJECTS:
            check_name(project, "project name")
        self.authz.require(self.principal, project, Action.TOKEN_MANAGE)
        owner = self._user(user)
        if not self.authz.allowed(self.principal, ALL_PROJECTS, Action.TOKEN_MANAGE):
            # The event log records a token's owner as the actor: an admin of one project must not be able
            # to act as someone whose rights reach further (the first admin, say) by minting their token.
            wider = self.session.exec(
                select(ApiToken.project).where(
                    ApiToken.user_id == owner.id, col(ApiToken.revoked_at).is_(None), ApiToken.project != project
                )
            ).first()
            if wider is not None:
                raise PermissionDenied(
                    f"{self.principal.describe()} may not create tokens for {owner.name}, who has rights "
                    f"beyond project {project}",
                    hint="an admin of every project can; or create a user of this project's own",
                )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            user_id=owner.id,
            token_hash=hash_token(secret),
            prefix=secret[:12],
            project=project,
            role=role,
            created_by=self.principal.user,
            created_at=utcnow(),
            expires_at=utcnow() + expires_in if expires_in else None,
        )
        self.session.add(row)
        self.session.flush()
        return TokenCreated(**self._token_public(row, owner.name).model_dump(), token=secret)

    def _tokens(self) -> list[tuple[ApiToken, User]]:
        query = select(ApiToken, User).join(User, col(User.id) == ApiToken.user_id).order_by(col(ApiToken.id))
        return list(self.session.exec(query).all())

    def list_tokens(self) -> list[TokenPublic]:
        return [
            self._token_public(t, u.name)
            for t, u in self._tokens()
            if self.authz.allowed(self.principal, t.project, Action.TOKEN_MANAGE)
        ]

    def revoke_token(self, *, token_id: int) -> TokenPublic:
        row = self.session.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"token {token_id} does not exist", hint="see the tokens with `wanlora token list`")
        self.authz.require(self.principal, row.project, Action.TOKEN_MANAGE)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            self.session.add(row)
            self.session.flush()
        owner = self.session.get(User, row.user_id)
        return self._token_public(row, owner.name if owner else "?")

    def authenticate(self, token: str | None) -> Principal:
        """The principal a presented token stands for; Unauthenticated for anything else."""
        return self.authenticate_with_expiry(token)[0]

    def authenticate_with_expiry(self, token: str | None) -> tuple[Principal, datetime | None]:
        """``authenticate``, plus the token's expiry (for callers that cache the answer)."""
        if not token:
            raise Unauthenticated("no API token given", hint="pass a token: WANLORA_TOKEN or Authorization: Bearer")
        return self.live_token(col(ApiToken.token_hash) == hash_token(token))

    def live_token(self, which: ColumnElement[bool]) -> tuple[Principal, datetime | None]:
        """The principal and expiry of the token ``which`` selects, if it is still good (not revoked, not
        expired, its user not removed); Unauthenticated otherwise. Dashboard sessions stand on this too."""
        found = self.session.exec(
            select(ApiToken, User).join(User, col(User.id) == ApiToken.user_id).where(which)
        ).first()
        now = utcnow()
        if (
            found is None
            or found[0].revoked_at is not None
            or found[1].removed_at is not None
            or (found[0].expires_at is not None and (as_utc(found[0].expires_at) or now) <= now)
        ):
            raise Unauthenticated(
                "the API token is not valid (unknown, expired or revoked)", hint="ask for a new token"
            )
        row, user = found
        principal = Principal(user=user.name, subject=f"token:{row.id}", role=row.role, project=row.project)
        return principal, as_utc(row.expires_at)

    def bootstrap_admin(self, *, name: str = "admin") -> TokenCreated | None:
        """On a server's first start: the first admin and a token for every project, or None if users exist."""
        if self.has_users():
            return None
        self.add_user(name=name)
        return self.create_token(user=name, project=ALL_PROJECTS, role="admin")
