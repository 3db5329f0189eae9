"""Public models: what the service returns and what callers send. Rows never leave ``registry/``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import semver
from pydantic import BaseModel, ConfigDict, Field, computed_field

from registry.domain.enums import Category, FileRole, Status
from registry.domain.errors import InvalidInput

__all__ = [
    "Change",
    "EventPublic",
    "FilePublic",
    "GcReport",
    "Hyperparameters",
    "LoraPage",
    "LoraPublic",
    "LoraSummary",
    "Orphan",
    "SyncTarget",
    "VersionDiff",
    "VersionPublic",
    "check_bump",
    "check_name",
    "parse_category",
    "parse_semver",
]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def check_name(value: str, what: str = "name") -> str:
    """Names become folder and file names on ComfyUI hosts, so they are a strict, path-safe alphabet."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} {value!r}",
            hint=f"a {what} is 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit "
            "(no slashes, dots, spaces or '@')",
        )
    return value


def parse_category(value: str) -> Category:
    try:
        return Category(value)
    except ValueError:
        raise InvalidInput(
            f"unknown category {value!r}", hint=f"choose one of: {', '.join(c.value for c in Category)}"
        ) from None


MAX_VERSION_PART = 2**31 - 1  # what an INTEGER column holds on PostgreSQL, and so on SQLite too
MAX_PRERELEASE = 64
MAX_VERSION_LENGTH = 64  # the versions table's column


BUMPS = ("major", "minor", "patch")


def check_bump(bump: str) -> str:
    if bump not in BUMPS:
        raise InvalidInput(f"unknown bump {bump!r}", hint="use major, minor or patch")
    return bump


def parse_semver(value: str) -> semver.Version:
    hint = "use semantic versioning MAJOR.MINOR.PATCH, e.g. 1.2.0"
    if not isinstance(value, str) or len(value) > 128:
        raise InvalidInput(f"invalid version {str(value)[:40]!r}…", hint=hint)
    try:
        parsed = semver.Version.parse(value.removeprefix("v"))
    except (ValueError, TypeError):
        raise InvalidInput(f"invalid version {value!r}", hint=hint) from None
    if max(parsed.major, parsed.minor, parsed.patch) > MAX_VERSION_PART:
        raise InvalidInput(f"version {value!r} has a number over {MAX_VERSION_PART}", hint=hint)
    if parsed.prerelease and len(parsed.prerelease) > MAX_PRERELEASE:
        raise InvalidInput(f"the pre-release of {value!r} is over {MAX_PRERELEASE} characters", hint=hint)
    if parsed.build:
        raise InvalidInput(f"version {value!r} has build metadata (+…), which wanlora does not keep", hint=hint)
    if len(str(parsed)) > MAX_VERSION_LENGTH:
        raise InvalidInput(f"version {value!r} is over {MAX_VERSION_LENGTH} characters", hint=hint)
    return parsed


class Hyperparameters(BaseModel):
    """Training settings. Known fields are type- and range-checked; other keys are kept as given."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float | None = Field(default=None, gt=0, lt=1, description="Peak learning rate")
    rank: int | None = Field(default=None, ge=1, le=1024, description="LoRA rank (network_dim)")
    alpha: float | None = Field(default=None, gt=0, description="LoRA alpha (network_alpha)")
    epochs: int | None = Field(default=None, ge=1, le=10_000)
    steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1, le=1024)
    gradient_accumulation_steps: int | None = Field(default=None, ge=1, le=1024)
    optimizer: str | None = None
    lr_scheduler: str | None = None
    lr_scheduler_num_cycles: int | None = Field(default=None, ge=1)
    warmup_steps: int | None = Field(default=None, ge=0)
    resolution: int | list[int] | None = None
    frames: int | None = Field(default=None, ge=1)
    mixed_precision: str | None = None
    gradient_checkpointing: bool | None = None
    seed: int | None = None
    max_grad_norm: float | None = Field(default=None, ge=0)
    timestep_boundary: float | None = Field(default=None, ge=0, le=1)

    def as_dict(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=True)
        for key, value in data.items():
            if not isinstance(value, str | int | float | bool | list | dict):
                raise InvalidInput(f"hyperparameter {key!r} must be JSON data, got {type(value).__name__}")
        return data


class FilePublic(BaseModel):
    role: FileRole
    sha256: str
    payload_sha256: str
    size: int
    rank: int
    alpha: float
    dtype: str
    key_format: str
    source_format: str
    source_sha256: str
    target_modules: list[str]
    module_count: int
    needs_repair: bool = False  # the stored copy failed its digest and is not served
    source_autov3: str | None = None  # sha256 of the source's data section (None: registered before 0008)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def autov2(self) -> str:
        """Civitai's AutoV2 of the registered source file: its sha256's first 10 hex digits."""
        return self.source_sha256[:10].upper()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def autov3(self) -> str | None:
        """Civitai's AutoV3 of the source: its data section's sha256 (header and metadata left out), 12 digits."""
        return self.source_autov3[:12].upper() if self.source_autov3 else None


class FileMatch(BaseModel):
    """A registered file that a stray copy turned out to be (``wanlora which FILE``)."""

    project: str
    lora: str
    version: str
    status: Status
    role: FileRole
    sha256: str
    by: list[str]  # which digests matched: sha256 (the stored file), source (AutoV2's), payload, autov3


class VersionPublic(BaseModel):
    project: str
    lora: str
    version: str
    status: Status
    changelog: str
    dataset_hash: str | None
    dataset_summary: dict[str, Any]
    hyperparameters: dict[str, Any]
    scores: dict[str, float]
    known_issues: str
    training_date: datetime | None
    parent_version: str | None
    created_by: str
    created_at: datetime
    files: list[FilePublic]
    promoted_on_override: str | None = Field(
        default=None, description="When it was last made current on an admin's override: the reason given."
    )


class LoraPublic(BaseModel):
    project: str
    name: str
    category: Category
    base_model: str
    trigger_words: list[str]
    description: str
    created_by: str
    created_at: datetime
    current_version: str | None = None
    latest_version: str | None = None
    versions: list[VersionPublic] = Field(default_factory=list)


class LoraSummary(BaseModel):
    project: str
    name: str
    category: Category
    base_model: str
    current_version: str | None
    latest_version: str | None
    version_count: int
    statuses: dict[str, int]
    trigger_words: list[str] = Field(default_factory=list)


class LoraPage(BaseModel):
    """One page of a filtered catalogue (the dashboard's list)."""

    items: list[LoraSummary]
    total: int
    offset: int
    limit: int


class EventPublic(BaseModel):
    id: int
    seq: int
    project: str
    lora: str
    version: str | None
    kind: str
    actor: str
    at: datetime
    from_status: str | None
    to_status: str | None
    reason: str | None
    details: dict[str, Any]
    evaluation_id: str | None = Field(default=None, description="The evaluation(s) that allowed this change.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def override(self) -> bool:
        """A promotion an admin made without the evidence the policy requires."""
        return bool(self.details.get("override"))


class Change(BaseModel):
    old: Any = None
    new: Any = None


class VersionDiff(BaseModel):
    project: str
    lora: str
    old: str
    new: str
    hyperparameters: dict[str, Change]
    dataset: dict[str, Change]
    scores: dict[str, Change]
    files: dict[str, Change]
    changelog: Change
    status: Change


class SyncTarget(BaseModel):
    """One version a ComfyUI host should have: the current one, or a trial's candidate for its share.
    Besides the files it carries what the host's sidecars and the node pack show (the fields after
    ``files`` default, so an older server's answer still reads)."""

    project: str
    lora: str
    category: Category
    version: str
    files: list[FilePublic]
    status: Status = Status.CURRENT
    trial: bool = False  # served as a running trial's candidate, not as the current version
    base_model: str = ""
    trigger_words: list[str] = Field(default_factory=list)
    description: str = ""
    changelog: str = ""
    scores: dict[str, float] = Field(default_factory=dict)
    created_at: datetime | None = None
    preview_sha256: str | None = None  # a phase 2 contact-sheet frame, fetched with ``preview()``

    @property
    def recommended_strength(self) -> float | None:
        """Phase 2's best strength from its sweep, where it ran."""
        return self.scores.get("best_strength")


class Orphan(BaseModel):
    """A stored artifact that no version refers to (a register killed before its commit)."""

    sha256: str
    size: int
    age_hours: float


class GcReport(BaseModel):
    """What `wanlora gc` found, and what it removed."""

    temp_files_removed: int
    orphans: list[Orphan]
    uploads_removed: int = 0  # uploads nobody registered, an hour untouched
    orphan_bytes: int
    deleted: bool  # the orphans were deleted (--delete)
    verified: int  # stored files hashed against their digest (--verify)
    needs_repair: list[str]  # digests of stored files that failed it: not served until repaired
