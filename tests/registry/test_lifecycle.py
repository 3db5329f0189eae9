"""Lifecycle rules on both databases: register, promote, rollback, deprecate, history, diff, notes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from registry.backends.local import Wanlora
from registry.domain.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from registry.domain.notes import training_notes
from registry.domain.register import RegisterRequest
from tests.conftest import BACKENDS
from tests.helpers import PAIR, make, register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def statuses(wl: Wanlora, name: str = "sarah") -> dict[str, str]:
    with wl.registry(write=False) as reg:
        return {v.version: v.status.value for v in reg.get_lora(project="default", name=name).versions}


def test_register_records_everything(wl: Wanlora, tmp_path: Path) -> None:
    hp = tmp_path / "hp.json"
    hp.write_text('{"learning_rate": 1.5e-4, "rank": 4, "epochs": 15, "note": "first"}')
    v = register(wl, tmp_path, hyperparams_file=hp, scores={"consistency": 8.1}, known_issues="none")
    assert v.status.value == "testing"
    assert v.hyperparameters == {"learning_rate": 1.5e-4, "rank": 4, "epochs": 15, "note": "first"}
    assert v.scores == {"consistency": 8.1}
    [f] = v.files
    assert f.role.value == "single" and f.rank == 4 and f.alpha == 4.0 and f.key_format == "canonical"
    assert f.source_format == "kohya" and len(f.source_sha256) == 64 and f.module_count == 8
    assert wl.store.exists(f.sha256)


def test_versions_only_go_up_and_bump(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path, version="1.2.0", seed=1)
    with pytest.raises(Conflict, match="not above"):
        register(wl, tmp_path, version="1.1.9", seed=2)
    with pytest.raises(Conflict, match="not above"):
        register(wl, tmp_path, version="1.2.0", seed=3)
    assert register(wl, tmp_path, version=None, bump="minor", seed=4).version == "1.3.0"
    assert register(wl, tmp_path, version=None, bump="patch", seed=5).version == "1.3.1"
    assert register(wl, tmp_path, version=None, bump="major", seed=6).version == "2.0.0"
    with pytest.raises(InvalidInput, match="invalid version"):
        register(wl, tmp_path, version="two", seed=7)


def test_same_payload_is_refused_naming_the_version(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    # same weights, another key format and other metadata: still the same payload
    other = make(tmp_path, "again", seed=1, fmt="diffusers", metadata={"ss_seed": "9"})
    with pytest.raises(AlreadyExists, match=r"sarah@1\.0\.0"):
        register(wl, tmp_path, version="1.1.0", file=other)


def test_pair_required_for_a14b(wl: Wanlora, tmp_path: Path) -> None:
    high = make(tmp_path, "h", base_model=PAIR, seed=1)
    with pytest.raises(InvalidInput, match="pair"):
        register(wl, tmp_path, base_model=PAIR, file=high)
    low = make(tmp_path, "l", base_model=PAIR, seed=2)
    v = register(wl, tmp_path, base_model=PAIR, file=high, low_noise=low)
    assert [f.role.value for f in v.files] == ["high_noise", "low_noise"]


def test_promote_demotes_old_current_atomically(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    register(wl, tmp_path, version="1.1.0", seed=2)
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0", reason="passed")
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.1.0")
    assert statuses(wl) == {"1.0.0": "deprecated", "1.1.0": "current"}
    with pytest.raises(Conflict, match="already current"), wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.1.0")
    with pytest.raises(Conflict, match="rollback"), wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")


def test_rollback_walks_back_and_refuses_when_nothing_left(wl: Wanlora, tmp_path: Path) -> None:
    for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0"]):
        register(wl, tmp_path, version=v, seed=i)
        with wl.registry() as reg:
            reg.promote(project="default", name="sarah", version=v)
    with wl.registry() as reg:
        assert reg.rollback(project="default", name="sarah", reason="artifacts").version == "1.1.0"
    assert statuses(wl) == {"1.0.0": "deprecated", "1.1.0": "current", "1.2.0": "testing"}  # rolled back ≠ retired
    with wl.registry() as reg:
        assert reg.rollback(project="default", name="sarah").version == "1.0.0"
    with pytest.raises(Conflict, match="nothing to roll back to"), wl.registry() as reg:
        reg.rollback(project="default", name="sarah")
    with wl.registry(write=False) as reg:
        events = reg.history(project="default", name="sarah")
    kinds = [e.kind for e in reversed(events)]
    assert kinds.count("rolled_back") == 2 and kinds.count("restored") == 2
    rolled = next(e for e in events if e.kind == "rolled_back" and e.version == "1.2.0")
    assert rolled.reason == "artifacts" and rolled.actor == "tester"
    assert (rolled.from_status, rolled.to_status) == ("current", "testing")
    assert [e.seq for e in reversed(events)] == list(range(1, len(events) + 1))


def test_a_rolled_back_version_can_go_out_again(wl: Wanlora, tmp_path: Path) -> None:
    """Rolled back is not deprecated (issue 12): the version is a candidate again, promotable through the
    gate, and once current again it is a rollback target like any other."""
    for i, v in enumerate(["1.0.0", "1.1.0"]):
        register(wl, tmp_path, version=v, seed=i)
        with wl.registry() as reg:
            reg.promote(project="default", name="sarah", version=v)
    with wl.registry() as reg:
        reg.rollback(project="default", name="sarah", reason="faces drift, it turned out to be the sampler")
        assert reg.promote(project="default", name="sarah", version="1.1.0", reason="cleared").status == "current"
        assert reg.rollback(project="default", name="sarah").version == "1.0.0"  # 1.1.0 rolled back again
        reg.promote(project="default", name="sarah", version="1.1.0", reason="cleared again")
    assert statuses(wl) == {"1.0.0": "deprecated", "1.1.0": "current"}
    with pytest.raises(AlreadyExists, match="promote it instead"):
        register(wl, tmp_path, version="1.2.0", seed=1)  # the same weights: promote 1.1.0, do not re-register
    with wl.registry() as reg:
        reg.deprecate(project="default", name="sarah", version="1.1.0", reason="recalled")  # retired for good
    with pytest.raises(Conflict, match="retired for good"), wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.1.0")


def test_rollback_skips_deliberately_deprecated_versions(wl: Wanlora, tmp_path: Path) -> None:
    for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0"]):
        register(wl, tmp_path, version=v, seed=i)
        with wl.registry() as reg:
            reg.promote(project="default", name="sarah", version=v)
    with wl.registry() as reg:
        reg.deprecate(project="default", name="sarah", version="1.1.0", reason="bad hands")
        assert reg.rollback(project="default", name="sarah").version == "1.0.0"


def test_rollback_without_history_is_a_clear_error(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path)
    with pytest.raises(Conflict, match="nothing to roll back to"), wl.registry() as reg:
        reg.rollback(project="default", name="sarah")
    with pytest.raises(NotFound, match="does not exist"), wl.registry() as reg:
        reg.rollback(project="default", name="nobody")


def test_deprecate_current_leaves_none_and_rollback_restores(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    register(wl, tmp_path, version="1.1.0", seed=2)
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
        reg.promote(project="default", name="sarah", version="1.1.0")
        reg.deprecate(project="default", name="sarah", version="1.1.0", reason="recall")
    assert "current" not in statuses(wl).values()
    with wl.registry() as reg:
        assert reg.rollback(project="default", name="sarah").version == "1.0.0"
    with pytest.raises(Conflict, match="already deprecated"), wl.registry() as reg:
        reg.deprecate(project="default", name="sarah", version="1.1.0")


def test_database_enforces_one_current(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    register(wl, tmp_path, version="1.1.0", seed=2)
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
    with pytest.raises(SAIntegrityError), wl.db.session() as s:
        s.exec(text("UPDATE versions SET status = 'current' WHERE version = '1.1.0'"))  # type: ignore[call-overload]


def test_event_log_is_append_only(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path)
    for sql in ("UPDATE events SET actor = 'mallory'", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="append-only"), wl.db.session() as s:
            s.exec(text(sql))  # type: ignore[call-overload]


def test_names_are_path_safe(wl: Wanlora, tmp_path: Path) -> None:
    for bad in ("../etc", "a/b", "UPPER", "x@1", ".hidden", "", "a" * 65, "con sole"):
        with pytest.raises(InvalidInput, match="invalid LoRA name"):
            register(wl, tmp_path, lora=bad)
    with pytest.raises(InvalidInput, match="invalid project name"):
        register(wl, tmp_path, project="../../x")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("lora", "b1.0.0", "invalid LoRA name"), ("project", "A/B", "invalid project name"),
     ("version", "1.0", "invalid version"), ("bump", "huge", "unknown bump")],
)  # fmt: skip
def test_a_bad_name_or_version_is_refused_before_the_file_is_read(
    wl: Wanlora, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str, message: str
) -> None:
    import registry.backends.local as local

    def unread(*args: object, **kw: object) -> None:
        raise AssertionError("the file was read")

    monkeypatch.setattr(local, "inspect_lora", unread)
    kw: dict[str, object] = {"version": None, "bump": value} if field == "bump" else {field: value}
    with pytest.raises(InvalidInput, match=message):
        register(wl, tmp_path, **kw)  # type: ignore[arg-type]
    assert list(wl.store.listing()) == []


def test_unknown_category_and_base_model(wl: Wanlora, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown category"):
        register(wl, tmp_path, category="sketch")
    with pytest.raises(InvalidInput, match="unknown base model"), wl.registry() as reg:
        reg.create_lora(project="default", name="x", category="style", base_model="sdxl")


def test_hyperparameters_are_validated(wl: Wanlora, tmp_path: Path) -> None:
    hp = tmp_path / "hp.json"
    hp.write_text('{"learning_rate": 5}')
    with pytest.raises(InvalidInput, match="learning_rate: Input should be less than 1"):
        register(wl, tmp_path, hyperparams_file=hp)
    with pytest.raises(InvalidInput, match="invalid dataset hash"):
        register(wl, tmp_path, dataset_hash="x" * 200)
    hp.write_text("[1, 2]")
    with pytest.raises(InvalidInput, match="JSON object"):
        register(wl, tmp_path, hyperparams_file=hp)


def test_from_metadata_and_dataset(wl: Wanlora, tmp_path: Path) -> None:
    meta = {
        "ss_learning_rate": "0.00012",
        "ss_network_dim": "4",
        "ss_network_alpha": "4.0",
        "ss_num_epochs": "15",
        "ss_optimizer": "bitsandbytes.optim.AdamW8bit",
        "ss_lr_scheduler": "cosine_with_restarts",
        "ss_num_train_images": "350",
        "ss_training_finished_at": "1736899200",
        "wanlora.dataset_hash": "sha256:abc",
        "modelspec.trigger_phrase": "sarah, brown hair",
    }
    file = make(tmp_path, "meta", metadata=meta)
    v = register(wl, tmp_path, file=file, from_metadata=True)
    assert v.hyperparameters["learning_rate"] == 0.00012 and v.hyperparameters["epochs"] == 15
    assert v.dataset_summary["samples"] == 350 and v.dataset_hash == "sha256:abc"
    assert v.training_date is not None and v.training_date.year == 2025
    with wl.registry(write=False) as reg:
        assert reg.get_lora(project="default", name="sarah").trigger_words == ["sarah", "brown hair"]
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "captions").mkdir()
    for i in range(3):
        (ds / "images" / f"{i:03}.png").write_bytes(bytes([i]) * 10)
        (ds / "captions" / f"{i:03}.txt").write_text(f"caption {i}")
    v2 = register(wl, tmp_path, version="1.1.0", seed=5, dataset_dir=ds)
    assert v2.dataset_summary == {"samples": 3, "kind": "images"} and v2.dataset_hash.startswith("sha256:")


def test_diff_and_notes(wl: Wanlora, tmp_path: Path) -> None:
    hp1, hp2 = tmp_path / "a.json", tmp_path / "b.json"
    hp1.write_text('{"learning_rate": 1.5e-4, "rank": 4, "epochs": 18}')
    hp2.write_text('{"learning_rate": 1.2e-4, "rank": 4, "epochs": 15}')
    register(wl, tmp_path, version="1.0.0", seed=1, hyperparams_file=hp1, scores={"consistency": 8.1})
    register(wl, tmp_path, version="2.0.0", seed=2, hyperparams_file=hp2, scores={"consistency": 9.2})
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
        reg.promote(project="default", name="sarah", version="2.0.0")
        d = reg.diff(project="default", name="sarah", old="1.0.0", new="2.0.0")
        notes = training_notes(reg.get_lora(project="default", name="sarah"))
    assert set(d.hyperparameters) == {"learning_rate", "epochs"}
    assert d.hyperparameters["epochs"].old == 18 and d.hyperparameters["epochs"].new == 15
    assert d.scores["consistency"].new == 9.2 and d.status.old == "deprecated"
    assert notes.index("## v2.0.0") < notes.index("## v1.0.0")
    assert "(CURRENT PRODUCTION)" in notes.split("## v2.0.0")[1].split("\n")[0]
    assert "- Status: Superseded by v2.0.0" in notes
    assert "LR 0.00015, Dim 4, Epochs 18" in notes and "9.2/10 consistency" in notes


def test_annotate_records_an_event(wl: Wanlora, tmp_path: Path) -> None:
    register(wl, tmp_path)
    with wl.registry() as reg:
        v = reg.annotate(project="default", name="sarah", version="1.0.0", scores={"style": 9.4}, known_issues="x")
        assert v.scores == {"style": 9.4} and v.known_issues == "x"
        with pytest.raises(InvalidInput, match="0-10"):
            reg.annotate(project="default", name="sarah", version="1.0.0", scores={"style": 11})
        assert reg.history(project="default", name="sarah")[0].kind == "annotated"


def test_lora_create_then_register_without_category(wl: Wanlora, tmp_path: Path) -> None:
    with wl.registry() as reg:
        reg.create_lora(project="p1", name="wc", category="style", base_model="wan2.2-ti2v-5b", trigger_words=["wc"])
        with pytest.raises(AlreadyExists):
            reg.create_lora(project="p1", name="wc", category="style", base_model="wan2.2-ti2v-5b")
    req = RegisterRequest(project="p1", lora="wc", file=make(tmp_path, "wc"), changelog="first", version="0.1.0")
    assert wl.register(req).version == "0.1.0"
    with pytest.raises(InvalidInput, match="does not exist yet"):
        wl.register(RegisterRequest(project="p1", lora="new", file=make(tmp_path, "n"), changelog="x", version="1.0.0"))
    with wl.registry(write=False) as reg:
        assert [r.name for r in reg.list_loras(project="p1", status="testing")] == ["wc"]
        assert reg.list_loras(status="current") == []
