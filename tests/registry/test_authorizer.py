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


def test_many_threads_asking_at_once_get_the_same_answers() -> None:
    """Issue 11, item 7: casbin's matcher (ast.parse) broke under concurrent enforcement at 64
    connections. Many threads asking fresh questions at once must all get the answers one thread gets."""
    import threading

    roles = ("trainer", "production", "admin", "guest")
    questions = [
        (Principal(user="u", subject=f"token:{i}", role=roles[i % 4], project=f"p{i % 7}"), f"p{j % 9}", action)
        for i in range(40)
        for j in range(9)
        for action in (Action.VERSION_PROMOTE, Action.ARTIFACT_PULL, Action.LORA_READ)
    ]
    expected = [Authorizer().allowed(*q) for q in questions]
    authz = Authorizer()
    answers: list[list[bool]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def ask() -> None:
        try:
            start.wait()
            answers.append([authz.allowed(*q) for q in questions])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and answers == [expected] * 16
