"""Public models of evaluation: evidence, the gate, trials, host reports, metrics and the review."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EvaluationIn",
    "EvaluationPublic",
    "GateStatus",
    "Metrics",
    "PhaseState",
    "Pick",
    "ReportIn",
    "ReviewItem",
    "TrialPublic",
]

PhaseName = Literal["technical", "quality", "trial"]


MAX_PREVIEW_BYTES = 512 * 1024
MAX_CONTACT_SHEET_BYTES = 1024 * 1024
MAX_REPORT_CHARS = 64 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class EvaluationIn(BaseModel):
    """A phase 1 or 2 result, as the evaluator records it. ``digest`` names the files evaluated."""

    model_config = ConfigDict(extra="forbid")

    phase: Literal["technical", "quality"]
    digest: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    passed: bool
    summary: str = Field(default="", max_length=4000)
    scores: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    preview_png: str | None = Field(
        default=None,
        max_length=MAX_PREVIEW_BYTES * 4 // 3 + 4,
        description="Phase 2: a frame of the contact sheet, a base64 PNG; sync puts it beside the files.",
    )
    contact_sheet_png: str | None = Field(
        default=None,
        max_length=MAX_CONTACT_SHEET_BYTES * 4 // 3 + 4,
        description="Phase 2: the whole contact sheet, a base64 PNG; the dashboard shows it.",
    )
    report_md: str | None = Field(
        default=None, max_length=MAX_REPORT_CHARS, description="Phase 2: its report.md, shown on the dashboard."
    )


class EvaluationPublic(BaseModel):
    id: int
    project: str
    lora: str
    version: str
    phase: PhaseName
    digest: str
    passed: bool
    summary: str
    scores: dict[str, float]
    details: dict[str, Any]
    created_by: str
    created_at: datetime


class PhaseState(BaseModel):
    phase: PhaseName
    number: int
    required: bool
    state: Literal["passed", "failed", "missing", "running", "not_required"]
    detail: str = ""
    evaluation_id: int | None = None


class GateStatus(BaseModel):
    project: str
    lora: str
    version: str
    digest: str
    ready: bool
    phases: list[PhaseState]

    def blocking(self) -> list[PhaseState]:
        return [p for p in self.phases if p.required and p.state != "passed"]


class Metrics(BaseModel):
    """Outcomes of one version's jobs in a time window."""

    version: str
    reports: int = 0
    failures: int = 0
    error_rate: float | None = None
    rating: float | None = None
    ratings: int = 0
    seconds: float | None = None


class TrialPublic(BaseModel):
    id: int
    project: str
    lora: str
    version: str
    baseline: str | None
    share: float
    status: Literal["running", "passed", "aborted", "stopped"]
    started_by: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    settings: dict[str, Any]
    candidate: Metrics
    current: Metrics | None
    verdict: str = Field(description="Why it passed or aborted, or what it still waits for.")


class ReportIn(BaseModel):
    """One ComfyUI job's outcome with one version."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=128)
    success: bool
    rating: int | None = Field(default=None, ge=1, le=10)
    seconds: float | None = Field(default=None, ge=0, le=86400)
    client_id: str | None = Field(default=None, max_length=128)
    error: str | None = Field(default=None, max_length=4000)


class Pick(BaseModel):
    """Which version a job or client gets: the current one, or the trial's candidate for its share."""

    project: str
    lora: str
    key: str
    version: str
    trial: bool
    trial_id: int | None = None
    files: list[dict[str, Any]] = Field(default_factory=list)


class ReviewItem(BaseModel):
    project: str
    lora: str
    version: str
    status: str
    action: Literal["investigate", "retrain"]
    reasons: list[str]
    recent: Metrics
    baseline: Metrics | None = None
