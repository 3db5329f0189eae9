"""Evaluation: recorded evidence, the gate, trials (phase 3), hosts' reports, metrics and the review."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field

from api.deps import CallerDep
from api.errors import ERROR_RESPONSES
from registry.domain.eval_schemas import (
    EvaluationIn,
    EvaluationPublic,
    GateStatus,
    Metrics,
    Pick,
    ReportIn,
    ReviewItem,
    TrialPublic,
)

router = APIRouter(prefix="/api/v1", tags=["evaluation"], responses=ERROR_RESPONSES)
LORA = "/projects/{project}/loras/{name}"


class TrialStart(BaseModel):
    version: str = Field(examples=["1.2.0"])
    share: float | None = Field(default=None, ge=1, le=50, description="Percent of jobs; default from the policy.")
    reason: str | None = None


class TrialStop(BaseModel):
    reason: str | None = None


@router.get(LORA + "/versions/{version}/evaluations", summary="Recorded phase results of a version")
def evaluations(project: str, name: str, version: str, caller: CallerDep) -> list[EvaluationPublic]:
    with caller.evaluation(write=False) as ev:
        return ev.evaluations(project=project, name=name, version=version)


@router.post(LORA + "/versions/{version}/evaluations", summary="Record a phase 1 or 2 result (trainer, admin)")
def record(project: str, name: str, version: str, body: EvaluationIn, caller: CallerDep) -> EvaluationPublic:
    with caller.evaluation() as ev:
        return ev.record(project=project, name=name, version=version, result=body)


@router.get(LORA + "/versions/{version}/gate", summary="Which phases passed for this version's files")
def gate(project: str, name: str, version: str, caller: CallerDep) -> GateStatus:
    with caller.evaluation(write=False) as ev:
        return ev.gate(project=project, name=name, version=version)


@router.get(LORA + "/versions/{version}/digest", summary="The digest evidence for this version is bound to")
def digest(project: str, name: str, version: str, caller: CallerDep) -> dict[str, str]:
    with caller.evaluation(write=False) as ev:
        return {"digest": ev.digest(project=project, name=name, version=version)}


@router.post(LORA + "/trial", summary="Start a trial: a testing version on a sticky share of jobs (admin)")
def start_trial(project: str, name: str, body: TrialStart, caller: CallerDep) -> TrialPublic:
    with caller.evaluation() as ev:
        return ev.start_trial(project=project, name=name, version=body.version, share=body.share, reason=body.reason)


@router.get(LORA + "/trial", summary="The running (or last) trial, judged now")
def trial(project: str, name: str, caller: CallerDep) -> TrialPublic:
    with caller.evaluation() as ev:  # a trial also passes by the clock: judging it may end it
        return ev.trial(project=project, name=name)


@router.post(LORA + "/trial/stop", summary="End the running trial (admin)")
def stop_trial(
    project: str, name: str, caller: CallerDep, body: Annotated[TrialStop | None, Body()] = None
) -> TrialPublic:
    with caller.evaluation() as ev:
        return ev.stop_trial(project=project, name=name, reason=body.reason if body else None)


@router.get(LORA + "/pick", summary="The version a job or client gets: a trial's candidate for its share, else current")
def pick(project: str, name: str, caller: CallerDep, key: Annotated[str, Query(min_length=1, max_length=128)]) -> Pick:
    with caller.evaluation(write=False) as ev:
        return ev.pick(project=project, name=name, key=key)


@router.post(
    LORA + "/versions/{version}/reports",
    summary="A ComfyUI job's outcome with this version (production, admin)",
    response_model=TrialPublic | None,
)
def report(project: str, name: str, version: str, body: ReportIn, caller: CallerDep) -> Any:
    with caller.evaluation() as ev:
        return ev.report(project=project, name=name, version=version, outcome=body)


@router.get(LORA + "/metrics", summary="Per version: reports, error rate, rating and generation time")
def metrics(
    project: str, name: str, caller: CallerDep, days: Annotated[float, Query(gt=0, le=3650)] = 30
) -> list[Metrics]:
    with caller.evaluation(write=False) as ev:
        return ev.metrics(project=project, name=name, days=days)


@router.get("/review", summary="Current versions whose metrics drifted or that should be retrained")
def review(caller: CallerDep, project: Annotated[str | None, Query()] = None) -> list[ReviewItem]:
    with caller.evaluation(write=False) as ev:
        return ev.review(project=project)


@router.get("/projects/{project}/policy", summary="The project's effective evaluation policy")
def policy(project: str, caller: CallerDep) -> dict[str, Any]:
    with caller.evaluation(write=False) as ev:
        return ev.policy_for(project=project)
