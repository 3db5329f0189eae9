"""The caller of one unit of work: its session, principal, policy and permission answers.

Every service is built on a ``Scope``; the services reach the same lookups through the public
functions of ``registry.services.lookups`` and ``registry.services.views``, never through each other's
private helpers.
"""

from __future__ import annotations

from sqlmodel import Session

from registry.domain.access import READ_STATUS, Action, Principal
from registry.domain.policy import Policy
from registry.domain.schemas import check_name
from registry.services.access import Authorizer, default_authorizer

__all__ = ["Scope", "Service"]


class Scope:
    """The principal and the policy are fixed for a unit of work, so each (project, action) answer is
    asked of casbin once: listing or syncing 1,000 LoRAs does not mean thousands of enforcements."""

    def __init__(self, session: Session, principal: Principal, authz: Authorizer | None, policy: Policy | None) -> None:
        self.session = session
        self.principal = principal
        self.policy = policy or Policy()
        self.authz = authz or default_authorizer()
        self._allowed: dict[tuple[str, Action], bool] = {}

    @property
    def actor(self) -> str:
        return self.principal.user

    def can(self, project: str, action: Action) -> bool:
        key = (project, action)
        if key not in self._allowed:
            self._allowed[key] = self.authz.allowed(self.principal, project, action)
        return self._allowed[key]

    def require(self, project: str, action: Action) -> None:
        check_name(project, "project name")  # a malformed name is a 400, before any permission talk
        if not self.can(project, action):
            self.authz.require(self.principal, project, action)  # raises, with the message naming the role

    def readable(self, project: str) -> set[str]:
        """The statuses whose versions the caller may see in a project."""
        if not self.can(project, Action.LORA_READ):
            return set()
        return {status for status, action in READ_STATUS.items() if self.can(project, action)}


class Service:
    """The common constructor of the services: a session and a principal make a ``Scope``."""

    def __init__(
        self,
        session: Session,
        *,
        principal: Principal,
        authorizer: Authorizer | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.scope = Scope(session, principal, authorizer, policy)
        self.session = session
        self.principal = principal
        self.policy = self.scope.policy

    @property
    def actor(self) -> str:
        return self.principal.user

    def can(self, project: str, action: Action) -> bool:
        return self.scope.can(project, action)
