"""What a registration carries, defined once.

``VersionFields`` is everything a new version records besides its files. It is the body of ``POST
…/versions`` (with upload ids for the files), what the remote backend sends, and, with local paths
for the files, the ``RegisterRequest`` that both backends' ``register`` take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from registry.domain.errors import InvalidInput
from registry.domain.schemas import check_bump, check_name, parse_semver

__all__ = ["RegisterRequest", "VersionFields"]


class VersionFields(BaseModel):
    version: str | None = Field(default=None, examples=["1.2.0"], description="Explicit semver, or use bump.")
    bump: str | None = Field(default=None, examples=["minor"], description="major, minor or patch.")
    changelog: str = Field(examples=["Added 100 new expressions"], description="What changed.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, examples=[{"learning_rate": 1.2e-4, "rank": 64}])
    from_metadata: bool = Field(default=False, description="Read hyperparameters and dataset facts from ss_*.")
    dataset_hash: str | None = None
    dataset_summary: dict[str, Any] | None = Field(default=None, examples=[{"samples": 350, "kind": "images"}])
    scores: dict[str, float] = Field(default_factory=dict, examples=[{"consistency": 9.2}])
    known_issues: str = ""
    parent: str | None = Field(default=None, description="Parent version (default: the latest).")
    category: str | None = Field(default=None, description="Creates the LoRA on its first version.")
    base_model: str | None = Field(default=None, description="Creates the LoRA on its first version.")
    trigger_words: list[str] = Field(default_factory=list, description="Creates the LoRA on its first version.")
    description: str = Field(default="", description="Creates the LoRA on its first version.")

    @field_validator("hyperparameters", "scores", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    def fields(self) -> dict[str, Any]:
        """Only the version fields (a subclass's file fields left out), as JSON-ready values."""
        return self.model_dump(mode="json", include=set(VersionFields.model_fields))


class RegisterRequest(VersionFields):
    """A registration with its files on this machine: FILE (the high-noise expert for A14B models) and
    ``low_noise``; hyperparameters may also come from a JSON file, the dataset hash from a folder."""

    project: str
    lora: str
    file: Path
    low_noise: Path | None = None
    hyperparams_file: Path | None = None
    dataset_dir: Path | None = None

    def check(self) -> None:
        """Refuse what can be refused before a file is read or sent: the options that exclude each
        other, the names and the version or bump (the registry would otherwise refuse them only once
        the files were stored, or uploaded)."""
        if (self.version is None) == (self.bump is None):
            raise InvalidInput("give exactly one of --version X.Y.Z and --bump major|minor|patch")
        if self.dataset_dir is not None and self.dataset_hash is not None:
            raise InvalidInput("give --dataset DIR or --dataset-hash H, not both")
        check_name(self.project, "project name")
        check_name(self.lora, "LoRA name")
        if self.version is not None:
            parse_semver(self.version)
        else:
            check_bump(self.bump or "")
