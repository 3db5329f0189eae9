"""Who may do what: principals and the casbin enforcer (RBAC with domains; a domain is a project).

The model and the policy are files beside this module (``rbac/model.conf``, ``rbac/policy.csv``); the
role links come from the caller: an API token carries one role in one project (or ``*``). The operator
of the embedded default, with direct access to the database file, is the local admin of every project.
The check sits in the service layer, so the CLI and the HTTP API obey the same rules.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import casbin
from casbin import util as casbin_util

from registry.domain.access import Action, Principal
from registry.domain.errors import PermissionDenied

__all__ = ["RBAC_DIR", "Authorizer", "default_authorizer"]

RBAC_DIR = Path(__file__).resolve().parent / "rbac"


MAX_DECISIONS = 100_000


class Authorizer:
    def __init__(self, model: Path = RBAC_DIR / "model.conf", policy: Path = RBAC_DIR / "policy.csv") -> None:
        self._enforcer = casbin.SyncedEnforcer(str(model), str(policy))
        self._enforcer.add_named_domain_matching_func("g", casbin_util.key_match)
        self._linked: set[str] = set()
        # casbin evaluates its matcher with ast.parse, which is not safe to run in several threads at
        # once ("AST constructor recursion depth mismatch" under load): one enforcement at a time, and
        # each answer kept, since it depends only on the role, the role's domain, the project and the
        # action (at most a few thousand of them; the table is cleared if hostile names swell it).
        self._lock = threading.RLock()
        self._decisions: dict[tuple[str, str, str, Action], bool] = {}

    def _link(self, p: Principal) -> str:
        subject = f"role:{p.role}|{p.project}"  # the decision's inputs: one casbin subject per role and domain
        if subject not in self._linked:
            self._enforcer.add_role_for_user_in_domain(subject, p.role, p.project)
            self._linked.add(subject)
        return subject

    def allowed(self, p: Principal, project: str, action: Action) -> bool:
        key = (p.role, p.project, project, action)
        answer = self._decisions.get(key)
        if answer is None:
            with self._lock:
                answer = self._decisions.get(key)
                if answer is None:
                    obj, act = action.value.split(":")
                    answer = bool(self._enforcer.enforce(self._link(p), project, obj, act))
                    if len(self._decisions) > MAX_DECISIONS:
                        self._decisions.clear()
                    self._decisions[key] = answer
        return answer

    def require(self, p: Principal, project: str, action: Action) -> None:
        if not self.allowed(p, project, action):
            obj, act = action.value.split(":")
            raise PermissionDenied(
                f"{p.describe()} may not {act.replace('_', ' ')} {obj}s in project {project}",
                hint="ask an admin of the project for a token with a role that allows it",
            )


@lru_cache(maxsize=1)
def default_authorizer() -> Authorizer:
    return Authorizer()
