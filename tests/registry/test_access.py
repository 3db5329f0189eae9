"""Role-based access in the service layer: every operation × every role, another project's token, and
bad, expired and revoked tokens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from registry.backends.local import Wanlora
from registry.domain.access import Principal
from registry.domain.accounts import parse_duration
from registry.domain.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from tests.conftest import BACKENDS
from tests.helpers import make, register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def principal(wl: Wanlora, user: str, project: str, role: str, **kw: Any) -> tuple[Principal, str]:
    with wl.accounts() as acc:
        if user not in {u.name for u in acc.list_users()}:
            acc.add_user(name=user)
        token = acc.create_token(user=user, project=project, role=role, **kw).token
    with wl.accounts(write=False) as acc:
        return acc.authenticate(token), token


@pytest.fixture
def team(wl: Wanlora, tmp_path: Path) -> dict[str, Wanlora]:
    """p1/sarah with 1.0.0 deprecated, 1.1.0 current, 1.2.0 testing; and a callers' table."""
    for i, v in enumerate(("1.0.0", "1.1.0", "1.2.0")):
        register(wl, tmp_path, project="p1", version=v, seed=i)
    with wl.registry() as reg:
        reg.promote(project="p1", name="sarah", version="1.0.0")
        reg.promote(project="p1", name="sarah", version="1.1.0")
    register(wl, tmp_path, project="p2", lora="other", seed=9)
    callers = {"local": wl}
    for role in ("trainer", "production", "admin"):
        callers[role] = wl.as_principal(principal(wl, f"{role}-user", "p1", role)[0])
    callers["stranger"] = wl.as_principal(principal(wl, "stranger", "p2", "admin")[0])
    return callers


def attempt(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except PermissionDenied:
        return "denied"
    except NotFound:
        return "hidden"
    return "ok"


class _Undo(Exception):
    pass


def ops(wl: Wanlora, tmp_path: Path, seed: int) -> dict[str, Callable[[], Any]]:
    def reg(method: str, **kw: Any) -> Callable[[], Any]:
        def run() -> Any:
            try:  # each attempt runs in a transaction that is rolled back, so callers start equal
                with wl.registry() as r:
                    getattr(r, method)(**kw)
                    raise _Undo
            except _Undo:
                return None

        return run

    def register_new() -> Any:
        return register(wl, tmp_path, project="p1", version=None, bump="patch", seed=50 + seed, changelog="new")

    return {
        "create_lora": reg("create_lora", project="p1", name="fresh", category="style", base_model="wan2.2-ti2v-5b"),
        "register": register_new,
        "read_current": reg("get_version", project="p1", name="sarah", version="1.1.0"),
        "read_testing": reg("get_version", project="p1", name="sarah", version="1.2.0"),
        "read_deprecated": reg("get_version", project="p1", name="sarah", version="1.0.0"),
        "evaluate": reg("annotate", project="p1", name="sarah", version="1.2.0", scores={"c": 9}),
        "history": reg("history", project="p1", name="sarah"),
        "promote": reg("promote", project="p1", name="sarah", version="1.2.0"),
        "rollback": reg("rollback", project="p1", name="sarah"),
        "deprecate": reg("deprecate", project="p1", name="sarah", version="1.2.0"),
    }


EXPECTED = {
    #                 trainer   production  admin   stranger (admin of p2)
    "create_lora": ("ok", "denied", "ok", "denied"),
    "register": ("ok", "denied", "ok", "denied"),
    "read_current": ("ok", "ok", "ok", "denied"),
    "read_testing": ("ok", "hidden", "ok", "denied"),
    "read_deprecated": ("hidden", "hidden", "ok", "denied"),
    "evaluate": ("ok", "denied", "ok", "denied"),
    "history": ("ok", "denied", "ok", "denied"),
    "promote": ("denied", "denied", "ok", "denied"),
    "rollback": ("denied", "denied", "ok", "denied"),
    "deprecate": ("denied", "denied", "ok", "denied"),
}


@pytest.mark.parametrize("op", list(EXPECTED))
def test_role_matrix(op: str, team: dict[str, Wanlora], tmp_path: Path) -> None:
    callers = ("trainer", "production", "admin", "stranger")
    for i, (caller, expected) in enumerate(zip(callers, EXPECTED[op], strict=True)):
        assert attempt(ops(team[caller], tmp_path, i)[op]) == expected, f"{caller} {op}"


def test_production_sees_only_current_versions(team: dict[str, Wanlora]) -> None:
    with team["production"].registry(write=False) as reg:
        lora = reg.get_lora(project="p1", name="sarah")
        assert [v.version for v in lora.versions] == ["1.1.0"] and lora.latest_version == "1.1.0"
        assert [(r.name, r.version_count) for r in reg.list_loras()] == [("sarah", 1)]  # p2 is not listed
        assert [t.version for t in reg.current_targets()] == ["1.1.0"]
    with team["stranger"].registry(write=False) as reg:
        assert [r.project for r in reg.list_loras()] == ["p2"]
        assert reg.current_targets() == []  # p2 has no current version, and p1 is not its business


def test_events_carry_the_tokens_user(team: dict[str, Wanlora]) -> None:
    with team["admin"].registry() as reg:
        reg.promote(project="p1", name="sarah", version="1.2.0", reason="approved")
        events = reg.history(project="p1", name="sarah", limit=2)
    assert {e.actor for e in events} == {"admin-user"}


def test_bad_expired_revoked_and_missing_tokens(wl: Wanlora) -> None:
    _, good = principal(wl, "eve", "p1", "trainer")
    with wl.accounts() as acc:
        expiring = acc.create_token(user="eve", project="p1", role="trainer", expires_in=timedelta(seconds=-1)).token
        revoked_id = acc.create_token(user="eve", project="p1", role="trainer")
        acc.revoke_token(token_id=revoked_id.id)
    with wl.accounts(write=False) as acc:
        assert acc.authenticate(good).user == "eve"
        for token in (None, "", "wlt_nonsense", good + "x", expiring, revoked_id.token):
            with pytest.raises(Unauthenticated):
                acc.authenticate(token)


def test_tokens_are_stored_only_as_hashes(wl: Wanlora) -> None:
    _, secret = principal(wl, "frank", "p1", "admin")
    with wl.db.session(write=False) as s:
        dump = " ".join(str(r) for r in s.exec(text("SELECT * FROM api_tokens")).all())  # type: ignore[call-overload]
    assert secret not in dump and secret[12:] not in dump


def test_token_management_is_scoped(team: dict[str, Wanlora]) -> None:
    with team["admin"].accounts() as acc:  # admin of p1
        assert acc.create_token(user="trainer-user", project="p1", role="production").project == "p1"
        with pytest.raises(PermissionDenied):
            acc.create_token(user="trainer-user", project="p2", role="trainer")
        with pytest.raises(PermissionDenied):
            acc.create_token(user="trainer-user", project="*", role="admin")
        with pytest.raises(PermissionDenied):
            acc.add_user(name="mallory")  # users are managed by admins of every project
        assert {t.project for t in acc.list_tokens()} == {"p1"}
    with team["trainer"].accounts() as acc, pytest.raises(PermissionDenied):
        acc.create_token(user="trainer-user", project="p1", role="admin")
    with team["local"].accounts() as acc:
        with pytest.raises(InvalidInput, match="unknown role"):
            acc.create_token(user="trainer-user", project="p1", role="root")
        assert acc.bootstrap_admin() is None  # users exist already


def test_bootstrap_and_durations(wl: Wanlora) -> None:
    with wl.accounts() as acc:
        first = acc.bootstrap_admin()
    assert first is not None and first.project == "*" and first.role == "admin" and first.token.startswith("wlt_")
    assert parse_duration("30d") == timedelta(days=30) and parse_duration("12h") == timedelta(hours=12)
    for bad in ("0d", "30", "x1d", "-1d"):
        with pytest.raises(InvalidInput):
            parse_duration(bad)


def test_registering_with_a_trainer_token_records_its_user(wl: Wanlora, tmp_path: Path) -> None:
    with wl.registry() as reg:
        reg.create_lora(project="p1", name="style1", category="style", base_model="wan2.2-ti2v-5b")
    trainer = wl.as_principal(principal(wl, "tina", "p1", "trainer")[0])
    v = register(trainer, tmp_path, project="p1", lora="style1", file=make(tmp_path, "s1", seed=3))
    assert v.created_by == "tina"
