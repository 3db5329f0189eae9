"""Documents and free text have bounds, the same on SQLite and PostgreSQL (issue 11, items 3 and 8): a
hostile value is refused with a message, nothing is stored, and the LoRA stays readable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registry.backends.local import Wanlora
from registry.domain.errors import InvalidInput
from registry.domain.eval_schemas import EvaluationIn
from tests.conftest import BACKENDS
from tests.helpers import register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        doc = {"x": doc}
    return doc


def test_deeply_nested_hyperparameters_are_refused_and_nothing_is_stored(wl: Wanlora, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="hyperparameters is nested more than 16 levels"):
        register(wl, tmp_path, version="1.0.0", hyperparameters={"optimizer_args": nested(300)})
    with wl.registry(write=False) as reg:
        assert reg.find_lora(project="default", name="sarah") is None  # not even the LoRA
    register(wl, tmp_path, version="1.0.0", hyperparameters={"optimizer_args": nested(5)})
    with wl.registry(write=False) as reg:  # readable, diffable: no answer of 500 for good
        assert reg.get_version(project="default", name="sarah").version == "1.0.0"


def test_oversized_text_and_documents_are_refused(wl: Wanlora, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="changelog is 10,485,760 characters"):
        register(wl, tmp_path, version="1.0.0", changelog="x" * (10 * 1024 * 1024))
    with pytest.raises(InvalidInput, match="dataset summary is"):
        register(wl, tmp_path, version="1.0.0", dataset_summary={"tags": "t" * 300_000})
    v = register(wl, tmp_path, version="1.0.0")
    with pytest.raises(InvalidInput, match="reason is"), wl.registry() as reg:
        reg.promote(project="default", name="sarah", version=v.version, reason="r" * 5000)
    with pytest.raises(InvalidInput, match="known issues is"), wl.registry() as reg:
        reg.annotate(project="default", name="sarah", version=v.version, known_issues="k" * 70_000)
    with wl.evaluation() as ev:
        digest = ev.digest(project="default", name="sarah", version=v.version)
    with pytest.raises(InvalidInput, match="evaluation details is nested"), wl.evaluation() as ev:
        ev.record(project="default", name="sarah", version=v.version,
                  result=EvaluationIn(phase="technical", digest=digest, passed=True, details=nested(40)))  # fmt: skip
    with wl.registry(write=False) as reg:
        assert reg.get_version(project="default", name="sarah").status.value == "testing"


@pytest.mark.parametrize(
    "version, why",
    [
        ("2147483648.0.0", "a number over 2147483647"),
        ("1.0.9223372036854775808", "a number over"),
        ("1.0.0-" + "a" * 65, "pre-release"),
        ("1.0.0-" + "a.b" * 20, "over 64 characters"),
        ("1.0.0+build.7", "build metadata"),
        ("9" * 200, "invalid version"),
    ],
)
def test_versions_the_database_could_not_hold_are_refused_alike(
    wl: Wanlora, tmp_path: Path, version: str, why: str
) -> None:
    with pytest.raises(InvalidInput, match=why):
        register(wl, tmp_path, version=version)
    register(wl, tmp_path, version="2147483647.0.0-" + "a" * 48)  # the largest there is: stored on both


def test_webhook_urls_secrets_and_token_lifetimes_are_bounded(wl: Wanlora) -> None:
    from registry.domain.accounts import parse_duration

    with pytest.raises(InvalidInput, match="at most 2048 characters"), wl.webhooks() as hooks:
        hooks.add(url="http://example.invalid/" + "x" * 3000, project="*", events=["promote"])
    for secret in ("x", "y" * 200):
        with pytest.raises(InvalidInput, match="16 bytes to 128 characters"), wl.webhooks() as hooks:
            hooks.add(url="http://example.invalid/hook", project="*", events=["promote"], secret=secret)
    with wl.webhooks() as hooks:
        assert hooks.add(url="http://example.invalid/hook", project="*", events=["promote"], secret="s" * 16).id
    with pytest.raises(InvalidInput, match="over 3650 days"):
        parse_duration("9999999d")
    assert parse_duration("365d").days == 365


def test_every_free_text_field_has_its_bound(wl: Wanlora, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="description is"), wl.registry() as reg:
        reg.create_lora(project="default", name="d", category="style", base_model="wan2.1-t2v-1.3b",
                        description="x" * 70_000)  # fmt: skip
    with pytest.raises(InvalidInput, match="at most 64"), wl.registry() as reg:
        reg.create_lora(project="default", name="d", category="style", base_model="wan2.1-t2v-1.3b",
                        trigger_words=[f"w{i}" for i in range(65)])  # fmt: skip
    with pytest.raises(InvalidInput, match="at most 128"), wl.registry() as reg:
        reg.create_lora(project="default", name="d", category="style", base_model="wan2.1-t2v-1.3b",
                        trigger_words=["w" * 129])  # fmt: skip
    register(wl, tmp_path, version="1.0.0")
    with pytest.raises(InvalidInput, match="reason is 5,000 characters"), wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0", reason="r" * 5000)
    with pytest.raises(InvalidInput, match="reason is 5,000 characters"), wl.evaluation() as ev:
        ev.start_trial(project="default", name="sarah", version="1.0.0", reason="r" * 5000)


def test_from_metadata_cannot_fill_the_database(wl: Wanlora, tmp_path: Path) -> None:
    from tests.helpers import make

    huge = {"ss_optimizer": "x" * (1024 * 1024), "ss_learning_rate": "1e-4"}
    path = make(tmp_path, "meta", metadata=huge)
    with pytest.raises(InvalidInput, match=r"hyperparameters is .* bytes as JSON; at most 262,144"):
        register(wl, tmp_path, version="1.0.0", file=path, from_metadata=True)
    with wl.registry(write=False) as reg:
        assert reg.find_lora(project="default", name="sarah") is None
