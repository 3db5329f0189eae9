"""The casbin enforcer on its own: the policy file, domains, and no stale role links."""

from registry.domain.access import Action, Principal
from registry.services.access import Authorizer


def test_same_token_id_in_two_databases_keeps_its_own_role() -> None:
    authz = Authorizer()
    admin = Principal(user="a", subject="token:1", role="admin", project="p1")
    production = Principal(user="b", subject="token:1", role="production", project="p1")
    assert authz.allowed(admin, "p1", Action.VERSION_PROMOTE)
    assert not authz.allowed(production, "p1", Action.VERSION_PROMOTE)
    assert authz.allowed(production, "p1", Action.ARTIFACT_PULL)


def test_domains_and_deny_by_default() -> None:
    authz = Authorizer()
    everywhere = Principal(user="root", subject="token:9", role="admin", project="*")
    trainer = Principal(user="t", subject="token:2", role="trainer", project="p1")
    assert authz.allowed(everywhere, "anything", Action.USER_MANAGE)
    assert authz.allowed(trainer, "p1", Action.VERSION_REGISTER)
    assert not authz.allowed(trainer, "p2", Action.VERSION_REGISTER)
    assert not authz.allowed(trainer, "p1", Action.VERSION_PROMOTE)
    nobody = Principal(user="x", subject="token:3", role="guest", project="p1")
    assert not any(authz.allowed(nobody, "p1", a) for a in Action)
