"""Property-based run over the OpenAPI spec (schemathesis): no generated request gets a 5xx, with an
admin token or with none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api import create_app
from registry.settings import Settings
from tests.helpers import register


@pytest.fixture(scope="module")
def app_and_token(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    home: Path = tmp_path_factory.mktemp("schemathesis")
    settings = Settings(home=home / "home", database_url=f"sqlite:///{home / 'r.db'}",
                        failed_sign_ins_per_address=10**6, failed_sign_ins_per_prefix=10**6)  # fmt: skip
    app = create_app(settings, deliver_webhooks=False)
    wl = app.state.wanlora.wl
    register(wl, home, project="default", version="1.0.0", seed=1)
    with wl.accounts() as acc:
        token = acc.bootstrap_admin().token  # type: ignore[union-attr]
    return app, token


def test_no_server_errors(app_and_token: tuple[Any, str]) -> None:
    app, token = app_and_token
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures: list[str] = []
    for operation in operations:

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            if case.path == "/api/v1/changes":
                case.query = {**(case.query or {}), "wait": 0}  # do not park in the long poll
            for headers in ({"Authorization": f"Bearer {token}"}, {}):
                response = case.call(headers=headers)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code} {response.text[:200]}"
                    )
                if (
                    not headers
                    and case.path != "/api/v1/health"
                    and response.status_code not in (401, 404, 405, 422, 429)
                ):
                    failures.append(f"{case.method} {case.formatted_path} without a token -> {response.status_code}")

        check()
    assert not failures, "\n".join(sorted(set(failures))[:20])
