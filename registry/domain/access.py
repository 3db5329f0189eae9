"""Who is asking, and what they may ask for: principals, roles and actions (the rules are casbin's,
in ``registry.services.access``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from registry.domain.enums import Status

__all__ = ["ALL_PROJECTS", "READ_STATUS", "ROLES", "Action", "Principal"]
ROLES = ("trainer", "production", "admin")
ALL_PROJECTS = "*"


class Action(str, Enum):
    LORA_CREATE = "lora:create"
    LORA_READ = "lora:read"
    VERSION_REGISTER = "version:register"
    VERSION_READ_TESTING = "version:read_testing"
    VERSION_READ_CURRENT = "version:read_current"
    VERSION_READ_DEPRECATED = "version:read_deprecated"
    VERSION_EVALUATE = "version:evaluate"
    VERSION_TRIAL = "version:trial"
    VERSION_REPORT = "version:report"
    VERSION_PROMOTE = "version:promote"
    VERSION_ROLLBACK = "version:rollback"
    VERSION_DEPRECATE = "version:deprecate"
    ARTIFACT_PULL = "artifact:pull"
    HISTORY_READ = "history:read"
    USER_MANAGE = "user:manage"
    TOKEN_MANAGE = "token:manage"
    WEBHOOK_MANAGE = "webhook:manage"


READ_STATUS = {
    Status.TESTING.value: Action.VERSION_READ_TESTING,
    Status.CURRENT.value: Action.VERSION_READ_CURRENT,
    Status.DEPRECATED.value: Action.VERSION_READ_DEPRECATED,
}


@dataclass(frozen=True)
class Principal:
    user: str
    subject: str  # "token:<id>" or "local:<user>": what casbin links to a role
    role: str
    project: str  # the domain of the role; "*" for every project
    local: bool = False

    @classmethod
    def local_admin(cls, user: str) -> Principal:
        return cls(user=user, subject=f"local:{user}", role="admin", project=ALL_PROJECTS, local=True)

    def describe(self) -> str:
        where = "every project" if self.project == ALL_PROJECTS else f"project {self.project}"
        return f"{self.user} ({self.role} in {where})"
