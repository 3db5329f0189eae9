"""The evaluation policy: which phases promotion requires and the thresholds of each, per project.

A TOML file (``WANLORA_POLICY_FILE``, default ``$WANLORA_HOME/policy.toml`` when it exists) with a
``[default]`` table and ``[projects.<name>]`` tables that override it key by key::

    [default]
    require = ["technical", "quality", "trial"]

    [default.trial]
    share = 10            # percent of jobs that get the candidate
    min_reports = 50
    min_hours = 24

    [projects.brandx.trial]
    share = 20

Every value is validated when the file is read; an unknown key or a value out of range is an error that
names it. Without a file, the defaults below apply: all three phases required.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from registry.domain.errors import InvalidInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["PHASES", "Policy", "ProjectPolicy", "load_policy"]

Phase = Literal["technical", "quality", "trial"]
PHASES: tuple[Phase, ...] = ("technical", "quality", "trial")
PHASE_NUMBER = {"technical": 1, "quality": 2, "trial": 3}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TechnicalPolicy(_Strict):
    strengths: tuple[float, ...] = Field(default=(0.6, 0.8, 1.0), description="Strengths of the effect check.")
    prompts: int = Field(default=20, ge=1, le=1000, description="Test generations per strength (guide: 20).")
    min_effect: float = Field(
        default=0.005, ge=0, description="Smallest relative change of the model output at the lowest strength."
    )
    max_rank: int = Field(default=256, ge=1)
    max_alpha_ratio: float = Field(default=4.0, gt=0, description="Largest alpha / rank.")
    max_slowdown: float = Field(default=0.25, ge=0, description="Allowed generation-time increase (0.25 = 25%).")
    max_memory_increase: float = Field(default=0.25, ge=0, description="Allowed peak-memory increase.")


class QualityPolicy(_Strict):
    prompts: int = Field(default=50, ge=1, le=1000, description="Production-like prompts (guide: 50–100).")
    strengths: tuple[float, ...] = Field(default=(0.5, 0.7, 0.9, 1.0), description="Strength sweep.")
    min_consistency: float = Field(default=0.0, ge=0, le=10)
    min_style: float = Field(default=0.0, ge=0, le=10)
    min_flexibility: float = Field(default=0.0, ge=0, le=10)
    max_drop: float = Field(
        default=0.5, ge=0, le=10, description="Largest drop of a score against the previous version."
    )
    overfit_margin: float = Field(
        default=0.2, ge=0, description="Score lost at 1.0 against the best that flags overfitting."
    )
    fail_on_overfit: bool = False


class TrialPolicy(_Strict):
    share: float = Field(default=10, ge=1, le=50, description="Percent of jobs given the candidate.")
    min_reports: int = Field(default=50, ge=1, description="Reports on the candidate before it can pass.")
    min_hours: float = Field(default=24, ge=0, description="Trial duration before it can pass.")
    max_error_rate: float = Field(default=0.10, ge=0, le=1, description="Error rate that aborts the trial.")
    abort_after: int = Field(default=10, ge=1, description="Reports on the candidate before an abort can trigger.")
    error_margin: float = Field(default=0.02, ge=0, le=1, description="Error rate allowed above the current's.")
    rating_margin: float = Field(default=0.5, ge=0, le=10, description="Rating allowed below the current's.")


class ReviewPolicy(_Strict):
    window_days: float = Field(default=7, gt=0, description="Recent window compared with the baseline.")
    baseline_days: float = Field(default=30, gt=0, description="Baseline window before the recent one.")
    min_reports: int = Field(default=20, ge=1, description="Reports a window needs before it is compared.")
    error_rate_rise: float = Field(default=0.05, ge=0, le=1)
    rating_drop: float = Field(default=1.0, ge=0, le=10)
    slowdown: float = Field(default=0.25, ge=0, description="Generation-time increase that counts as drift.")
    min_rating: float = Field(default=6.0, ge=0, le=10, description="A current version rated below this: retrain.")
    retrain_after_days: float = Field(default=90, gt=0, description="Age of the training that calls for a retrain.")


class ProjectPolicy(_Strict):
    require: tuple[Phase, ...] = Field(default=PHASES, description="Phases promotion requires.")
    technical: TechnicalPolicy = TechnicalPolicy()
    quality: QualityPolicy = QualityPolicy()
    trial: TrialPolicy = TrialPolicy()
    review: ReviewPolicy = ReviewPolicy()

    @model_validator(mode="after")
    def _strengths(self) -> ProjectPolicy:
        for name, values in (("technical", self.technical.strengths), ("quality", self.quality.strengths)):
            if not values or any(not 0 < s <= 2 for s in values) or list(values) != sorted(set(values)):
                raise ValueError(f"{name}.strengths must be increasing values in (0, 2], got {list(values)}")
        return self


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Policy:
    """The default policy and each project's overrides, validated."""

    def __init__(self, default: dict[str, Any] | None = None, projects: dict[str, dict[str, Any]] | None = None):
        self._default = default or {}
        self._projects = projects or {}
        self._cache: dict[str, ProjectPolicy] = {}
        for name in ["*", *self._projects]:
            self.for_project(name)  # validate everything now, not at the first promotion

    def for_project(self, project: str) -> ProjectPolicy:
        if project not in self._cache:
            data = _merge(self._default, self._projects.get(project, {}))
            try:
                self._cache[project] = ProjectPolicy.model_validate(data)
            except ValidationError as exc:
                where = "default" if project == "*" or project not in self._projects else f"projects.{project}"
                problems = "; ".join(
                    f"[{where}] {'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()
                )
                raise InvalidInput(f"invalid evaluation policy: {problems}", hint="fix the policy file") from None
        return self._cache[project]


def load_policy(path: Path | None) -> Policy:
    """The policy in ``path`` (TOML), or the defaults when there is no file."""
    if path is None:
        return Policy()
    if not Path(path).is_file():
        raise InvalidInput(f"policy file {path} does not exist", hint="fix WANLORA_POLICY_FILE or create the file")
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"policy file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"default", "projects"}
    if unknown:
        raise InvalidInput(
            f"policy file {path} has unknown tables: {', '.join(sorted(unknown))}",
            hint="use [default] and [projects.<name>]",
        )
    return Policy(data.get("default", {}), data.get("projects", {}))
