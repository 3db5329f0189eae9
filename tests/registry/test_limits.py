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
