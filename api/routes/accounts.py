"""Users and tokens (admins)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import CallerDep, IdPath, StateDep
from api.errors import ERROR_RESPONSES
from registry.domain.accounts import TokenCreated, TokenPublic, UserPublic, UserRemoved, parse_duration

router = APIRouter(prefix="/api/v1", tags=["accounts"], responses=ERROR_RESPONSES)


class UserCreate(BaseModel):
    name: str = Field(examples=["tina"])


class TokenCreate(BaseModel):
    user: str = Field(examples=["tina"])
    project: str = Field(examples=["brandx"], description="A project, or '*' for every project.")
    role: str = Field(examples=["trainer"], description="trainer, production or admin.")
    expires: str | None = Field(default=None, examples=["30d"], description="Lifetime: 90m, 12h, 30d, 4w.")


@router.post("/users", status_code=201, summary="Add a user (admins of every project)")
def add_user(body: UserCreate, caller: CallerDep) -> UserPublic:
    with caller.accounts() as acc:
        return acc.add_user(name=body.name)


@router.get("/users", summary="List users (admins of every project)")
def list_users(caller: CallerDep, removed: bool = False) -> list[UserPublic]:
    with caller.accounts(write=False) as acc:
        return acc.list_users(removed=removed)


@router.delete("/users/{name}", summary="Remove a user: their tokens are revoked (admins of every project)")
def remove_user(name: str, caller: CallerDep, state: StateDep) -> UserRemoved:
    with caller.accounts() as acc:
        removed = acc.remove_user(name=name)
    state.auth.clear()  # their tokens stop at once in this process; other workers within auth_cache_seconds
    return removed


@router.post("/tokens", status_code=201, summary="Create a token; the secret is in this answer only")
def create_token(body: TokenCreate, caller: CallerDep) -> TokenCreated:
    with caller.accounts() as acc:
        return acc.create_token(
            user=body.user,
            project=body.project,
            role=body.role,
            expires_in=parse_duration(body.expires) if body.expires else None,
        )


@router.get("/tokens", summary="Tokens this caller may manage (never their secrets)")
def list_tokens(caller: CallerDep) -> list[TokenPublic]:
    with caller.accounts(write=False) as acc:
        return acc.list_tokens()


@router.delete("/tokens/{token_id}", summary="Revoke a token")
def revoke_token(token_id: IdPath, caller: CallerDep, state: StateDep) -> TokenPublic:
    with caller.accounts() as acc:
        revoked = acc.revoke_token(token_id=token_id)
    state.auth.clear()  # at once in this process; other workers within auth_cache_seconds
    return revoked
