"""A project admin cannot act as someone with wider rights by minting their token (issue 11, item 6):
the event log records a token's owner as the actor."""

from __future__ import annotations

import pytest

from registry.backends.local import Wanlora
from registry.domain.access import Principal
from registry.domain.errors import PermissionDenied
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def test_a_project_admin_mints_tokens_only_for_users_inside_its_project(wl: Wanlora) -> None:
    with wl.accounts() as acc:
        acc.bootstrap_admin(name="admin")  # a token for every project
        for name in ("p1-admin", "bob", "carol"):
            acc.add_user(name=name)
        p1_admin = acc.authenticate(acc.create_token(user="p1-admin", project="p1", role="admin").token)
        acc.create_token(user="carol", project="p2", role="trainer")
    with wl.as_principal(p1_admin).accounts() as acc:
        with pytest.raises(PermissionDenied, match="rights beyond project p1"):
            acc.create_token(user="admin", project="p1", role="admin")
        with pytest.raises(PermissionDenied, match="rights beyond project p1"):
            acc.create_token(user="carol", project="p1", role="production")  # carol works in p2 as well
        bob = acc.create_token(user="bob", project="p1", role="trainer")  # a user of p1 alone: fine
        assert bob.user == "bob" and bob.project == "p1"
        with pytest.raises(PermissionDenied):
            acc.create_token(user="bob", project="p2", role="trainer")  # not p1-admin's project
    everywhere = Principal(user="root", subject="token:0", role="admin", project="*")
    with wl.as_principal(everywhere).accounts() as acc:
        assert acc.create_token(user="carol", project="p1", role="production").user == "carol"
