"""The promotion gate, trials with sticky canary shares, host reports and the review (registry side;
the evaluator's phases 1 and 2 are in tests/evaluator/)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from registry.backends.local import Wanlora
from registry.blobs.local import LocalStore
from registry.db.engine import Database
from registry.db.tables import Trial
from registry.domain.access import Principal
from registry.domain.digests import canary
from registry.domain.errors import AlreadyExists, Conflict, GateRefused, InvalidInput, NotFound, PermissionDenied
from registry.domain.eval_schemas import EvaluationIn, ReportIn
from registry.domain.policy import Policy, load_policy
from tests.conftest import BACKENDS
from tests.helpers import register

pytestmark = pytest.mark.gate

FAST_TRIAL = {"trial": {"min_reports": 20, "min_hours": 0, "abort_after": 10, "max_error_rate": 0.2}}


@pytest.fixture
def gated(db: Database, store: LocalStore) -> Wanlora:
    return Wanlora(db=db, store=store, actor="tester", policy=Policy(FAST_TRIAL))


def _evidence(wl: Wanlora, version: str, *phases: str, passed: bool = True, lora: str = "sarah") -> None:
    with wl.evaluation() as ev:
        digest = ev.digest(project="default", name=lora, version=version)
        for phase in phases:
            ev.record(
                project="default", name=lora, version=version,
                result=EvaluationIn(phase=phase, digest=digest, passed=passed, summary=f"{phase} ok",  # type: ignore[arg-type]
                                    scores={"consistency": 8.5} if phase == "quality" else {}),
            )  # fmt: skip


def _report(wl: Wanlora, version: str, n: int, *, fail_every: int = 0, start: int = 0, rating: int = 8) -> None:
    for i in range(start, start + n):
        with wl.evaluation() as ev:
            ev.report(
                project="default", name="sarah", version=version,
                outcome=ReportIn(job_id=f"job-{version}-{i}", success=not (fail_every and i % fail_every == 0),
                                 rating=rating, seconds=40.0),
            )  # fmt: skip


def _current_and_candidate_on_trial(wl: Wanlora, tmp: Path, share: float | None = None) -> None:
    """1.0.0 current (imported on an override), 1.1.0 through phases 1 and 2 and on trial."""
    register(wl, tmp, version="1.0.0")
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0", override=True, reason="import")
    register(wl, tmp, version="1.1.0", seed=1)
    _evidence(wl, "1.1.0", "technical", "quality")
    with wl.evaluation() as ev:
        ev.start_trial(project="default", name="sarah", version="1.1.0", share=share)


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_promote_refuses_without_evidence_and_names_each_missing_phase(gated: Wanlora, tmp_path: Path) -> None:
    register(gated, tmp_path, version="1.0.0")
    with pytest.raises(GateRefused) as err, gated.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
    message = err.value.message
    assert "phase 1 (technical) missing" in message and "phase 2 (quality) missing" in message
    assert "phase 3 (trial) missing" in message and "wanlora eval technical sarah@1.0.0" in (err.value.hint or "")
    _evidence(gated, "1.0.0", "technical")
    _evidence(gated, "1.0.0", "quality", passed=False)
    with pytest.raises(GateRefused, match=r"phase 2 \(quality\) failed: quality ok") as err2, gated.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
    assert "technical" not in err2.value.message


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_the_whole_gate_trial_then_promote_with_evidence_in_the_event(gated: Wanlora, tmp_path: Path) -> None:
    register(gated, tmp_path, version="1.0.0")
    with gated.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0", override=True, reason="first import")
    register(gated, tmp_path, version="1.1.0", seed=1)
    with pytest.raises(GateRefused, match="phase 1"), gated.evaluation() as ev:
        ev.start_trial(project="default", name="sarah", version="1.1.0")  # phases 1 and 2 come first
    _evidence(gated, "1.1.0", "technical", "quality")
    with gated.evaluation() as ev:
        trial = ev.start_trial(project="default", name="sarah", version="1.1.0", share=20)
    assert trial.status == "running" and trial.baseline == "1.0.0" and trial.share == 20
    with pytest.raises(GateRefused, match=r"phase 3 \(trial\) running"), gated.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.1.0")
    _report(gated, "1.0.0", 30, fail_every=10)  # the current: 10% errors
    _report(gated, "1.1.0", 19)
    with gated.evaluation() as ev:
        assert ev.trial(project="default", name="sarah").verdict == "needs 1 more report(s)"
    _report(gated, "1.1.0", 1, start=19)
    with gated.evaluation() as ev:
        done = ev.trial(project="default", name="sarah")
    assert done.status == "passed" and "20 reports, error rate 0.0%" in done.verdict
    assert done.candidate.reports == 20 and done.current is not None and done.current.error_rate == pytest.approx(0.1)
    with gated.registry() as reg:
        promoted = reg.promote(project="default", name="sarah", version="1.1.0", reason="passed all three")
        events = sorted(reg.history(project="default", name="sarah"), key=lambda e: e.seq)
    assert promoted.status.value == "current" and promoted.scores["consistency"] == 8.5
    kinds = [e.kind for e in events]
    assert kinds.count("evaluated") == 2 and "trial_started" in kinds and "trial_passed" in kinds
    promotion = next(e for e in reversed(events) if e.kind == "promoted")
    assert (
        set(promotion.details["evidence"]) == {"technical", "quality", "trial"} and "override" not in promotion.details
    )


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_an_override_needs_a_reason_and_is_recorded(gated: Wanlora, tmp_path: Path) -> None:
    register(gated, tmp_path, version="1.0.0")
    with pytest.raises(InvalidInput, match="override needs a reason"), gated.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0", override=True, reason="  ")
    with gated.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0", override=True, reason="hotfix for a client")
        event = reg.history(project="default", name="sarah", limit=1)[0]
    assert event.kind == "promoted" and event.reason == "hotfix for a client"
    overridden = event.details["override"]
    assert overridden["technical"] == overridden["quality"] == "missing"
    assert overridden["trial"].startswith("missing: a trial on 10% of jobs passes after")


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_evidence_is_bound_to_the_files(gated: Wanlora, tmp_path: Path) -> None:
    register(gated, tmp_path, version="1.0.0")
    with pytest.raises(Conflict, match="not the files of"), gated.evaluation() as ev:
        ev.record(
            project="default", name="sarah", version="1.0.0",
            result=EvaluationIn(phase="technical", digest="0" * 64, passed=True),
        )  # fmt: skip


def test_canary_share_is_within_three_points_and_sticky() -> None:
    for share in (1, 10, 25, 50):
        picked = [canary(7, f"job-{i}", share) for i in range(10_000)]
        assert abs(100 * sum(picked) / 10_000 - share) <= 3, share
        assert picked == [canary(7, f"job-{i}", share) for i in range(10_000)]  # sticky per id
    other = [canary(8, f"job-{i}", 10) for i in range(10_000)]
    assert other != [canary(7, f"job-{i}", 10) for i in range(10_000)]  # each trial draws its own share


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_pick_serves_the_candidate_to_its_share_and_production_can_pull_it(gated: Wanlora, tmp_path: Path) -> None:
    _current_and_candidate_on_trial(gated, tmp_path, share=10)
    host = gated.as_principal(Principal(user="host-1", subject="token:9", role="production", project="default"))
    with host.evaluation() as ev:
        picks = [ev.pick(project="default", name="sarah", key=f"job-{i}") for i in range(2000)]
    share = sum(p.trial for p in picks) / len(picks)
    assert 0.07 <= share <= 0.13 and {p.version for p in picks if p.trial} == {"1.1.0"}
    inside = next(p for p in picks if p.trial)
    outside = next(p for p in picks if not p.trial)
    with host.registry() as reg:
        candidate_sha = inside.files[0]["sha256"]
        reg.require_artifact(candidate_sha, client=inside.key)  # a job in the share may pull the candidate
        for other in (outside.key, None):
            with pytest.raises(NotFound):
                reg.require_artifact(candidate_sha, client=other)  # one outside it may not
        targets = {t.version for c in range(200) for t in reg.current_targets(project="default", client=f"host-{c}")}
    assert targets == {"1.0.0", "1.1.0"}
    with host.evaluation() as ev:  # production hosts report; they may not start trials
        job = ReportIn(job_id=inside.key, success=True)
        assert ev.report(project="default", name="sarah", version="1.1.0", outcome=job) is None  # no trial details
        with pytest.raises(AlreadyExists):
            ev.report(project="default", name="sarah", version="1.1.0", outcome=job)
        with pytest.raises(NotFound):  # never given the candidate
            ev.report(
                project="default", name="sarah", version="1.1.0", outcome=ReportIn(job_id=outside.key, success=True)
            )
        with pytest.raises(PermissionDenied):
            ev.trial(project="default", name="sarah")
    with pytest.raises(PermissionDenied), host.evaluation() as ev:
        ev.stop_trial(project="default", name="sarah")
    with gated.evaluation() as ev:
        ev.stop_trial(project="default", name="sarah", reason="enough")
    with pytest.raises(NotFound), host.registry() as reg:
        reg.require_artifact(candidate_sha, client=inside.key)  # the trial is over: the testing file is hidden again


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_trial_with_failures_over_the_limit_aborts_by_itself_and_rolls_back(gated: Wanlora, tmp_path: Path) -> None:
    _current_and_candidate_on_trial(gated, tmp_path)
    with gated.registry() as reg:  # an admin pushes it out early, on an override
        reg.promote(project="default", name="sarah", version="1.1.0", override=True, reason="client deadline")
    _report(gated, "1.1.0", 9, fail_every=2)  # 5 of 9 failed, but fewer than abort_after reports
    with gated.evaluation() as ev:
        assert ev.trial(project="default", name="sarah").status == "running"
    _report(gated, "1.1.0", 1, start=9, fail_every=1)
    with gated.evaluation() as ev:
        trial = ev.trial(project="default", name="sarah")
    assert trial.status == "aborted" and "error rate 60.0% over 10 reports is above the limit of 20%" in trial.verdict
    with gated.registry() as reg:
        assert reg.get_lora(project="default", name="sarah").current_version == "1.0.0"
        kinds = [(e.kind, e.actor) for e in reg.history(project="default", name="sarah", limit=3)]
    assert kinds == [("restored", "trial:1"), ("rolled_back", "trial:1"), ("trial_aborted", "tester")]
    with gated.evaluation() as ev:
        gate = ev.gate(project="default", name="sarah", version="1.1.0")
    assert {p.phase: p.state for p in gate.phases}["trial"] == "failed"


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_trial_waits_for_its_duration(db: Database, store: LocalStore, tmp_path: Path) -> None:
    wl = Wanlora(db=db, store=store, actor="t", policy=Policy({"trial": {"min_reports": 1, "min_hours": 24}}))
    register(wl, tmp_path, version="1.0.0")
    _evidence(wl, "1.0.0", "technical", "quality")
    with wl.evaluation() as ev:
        ev.start_trial(project="default", name="sarah", version="1.0.0")
    _report(wl, "1.0.0", 3)
    with wl.evaluation() as ev:
        assert ev.trial(project="default", name="sarah").verdict.startswith("needs 2")  # hours, not reports
    with db.session() as session:  # a day later
        trial = session.exec(select(Trial)).one()
        trial.started_at = trial.started_at - timedelta(hours=25)
        session.add(trial)
    with wl.evaluation() as ev:
        assert ev.trial(project="default", name="sarah").status == "passed"


def test_policy_file_per_project_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[default]\nrequire = ["technical"]\n[default.trial]\nshare = 15\n[projects.brandx.trial]\nshare = 30\n'
    )
    policy = load_policy(path)
    assert policy.for_project("other").trial.share == 15 and policy.for_project("brandx").trial.share == 30
    assert policy.for_project("brandx").require == ("technical",)
    path.write_text("[default.trial]\nshare = 80\n")
    with pytest.raises(InvalidInput, match=r"trial.share: Input should be less than or equal to 50"):
        load_policy(path)
    path.write_text("[default]\nrequires = []\n")
    with pytest.raises(InvalidInput, match="requires: Extra inputs are not permitted"):
        load_policy(path)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_policy(tmp_path / "nope.toml")


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_review_flags_drift_and_retraining(db: Database, store: LocalStore, tmp_path: Path) -> None:
    from registry.db.tables import TrialReport, Version

    wl = Wanlora(db=db, store=store, actor="t", policy=Policy({"require": [], "review": {"min_reports": 5}}))
    register(wl, tmp_path, version="1.0.0")
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
    with wl.evaluation() as ev:
        assert ev.review() == []
    _report(wl, "1.0.0", 10, rating=9)
    with db.session() as session:  # those were three weeks ago; now errors and low ratings
        for row in session.exec(select(TrialReport)).all():
            row.at = row.at - timedelta(days=21)
            session.add(row)
    _report(wl, "1.0.0", 10, start=100, fail_every=2, rating=7)
    with wl.evaluation() as ev:
        [item] = ev.review()
    assert item.action == "investigate" and any("error rate rose from 0.0% to 50.0%" in r for r in item.reasons)
    assert any("rating fell from 9.00 to 7.00" in r for r in item.reasons)
    with db.session() as session:
        v = session.exec(select(Version)).one()
        v.training_date = v.created_at - timedelta(days=120)
        session.add(v)
    with wl.evaluation() as ev:
        [item] = ev.review()
    assert item.action == "retrain" and any("trained 120 days ago" in r for r in item.reasons)
    with wl.evaluation() as ev:
        [m] = ev.metrics(project="default", name="sarah")
    assert m.reports == 20 and m.error_rate == pytest.approx(0.25) and m.seconds == pytest.approx(40.0)


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_running_trial_follows_policy_edits_and_the_gate_says_what_a_trial_needs(
    gated: Wanlora, tmp_path: Path
) -> None:
    register(gated, tmp_path, version="1.0.0")
    _evidence(gated, "1.0.0", "technical", "quality")
    with pytest.raises(GateRefused) as err, gated.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
    assert "passes after" in err.value.message and "reports on the candidate" in err.value.message
    with gated.evaluation() as ev:
        ev.start_trial(project="default", name="sarah", version="1.0.0")
    stricter = {**FAST_TRIAL, "trial": {**FAST_TRIAL["trial"], "min_reports": 50}}  # the policy edited meanwhile
    gated.policy = Policy(stricter)
    _report(gated, "1.0.0", 20)  # enough for the policy the trial started under
    with gated.evaluation() as ev:
        trial = ev.trial(project="default", name="sarah")
    assert trial.status == "running" and "30 more report(s)" in trial.verdict and trial.settings["min_reports"] == 50
    gated.policy = Policy(FAST_TRIAL)  # relaxed again: the next judgement passes it
    with gated.evaluation() as ev:
        assert ev.trial(project="default", name="sarah").status == "passed"
