"""The embedded application: a database, a store and an actor, wired from ``Settings``.

``Wanlora.registry()`` is one unit of work (one transaction) over ``RegistryService``. ``register``
orchestrates what spans the store and the database: files are inspected first (nothing written), then
streamed into the store, then recorded in one transaction; if that transaction fails, the objects this
call created are removed again, so a refused registration leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import select

from registry.accounts import AccountService
from registry.auth import Principal
from registry.dataset import dataset_fingerprint
from registry.db import Database
from registry.errors import InvalidInput
from registry.evaluation import EvaluationService
from registry.ingest import IngestedFile, ingest_lora, inspect_lora
from registry.metadata import facts_from_metadata
from registry.models import FileRole, VersionFile
from registry.policy import Policy, load_policy
from registry.schemas import VersionPublic, parse_category
from registry.service import RegistryService
from registry.settings import Settings
from registry.storage import ArtifactStore, open_store
from registry.wan import base_model as lookup_base_model
from registry.webhooks import WebhookService

__all__ = ["RegisterRequest", "Wanlora"]

Progress = Callable[[str, int, int], None]


@dataclass
class RegisterRequest:
    project: str
    lora: str
    file: Path
    changelog: str
    version: str | None = None
    bump: str | None = None
    low_noise: Path | None = None
    hyperparams_file: Path | None = None
    hyperparameters: dict[str, Any] | None = None
    from_metadata: bool = False
    dataset_dir: Path | None = None
    dataset_hash: str | None = None
    dataset_summary: dict[str, Any] | None = None
    scores: dict[str, float] | None = None
    known_issues: str = ""
    parent: str | None = None
    # used to create the LoRA on its first registration
    category: str | None = None
    base_model: str | None = None
    trigger_words: tuple[str, ...] = ()
    description: str = ""


class Wanlora:
    def __init__(
        self,
        *,
        db: Database,
        store: ArtifactStore,
        actor: str,
        default_project: str = "default",
        principal: Principal | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or Policy()
        self.store = store
        self.actor = actor
        self.default_project = default_project
        # Direct access to the database is the local operator's: admin of every project.
        self.principal = principal or Principal.local_admin(actor)

    @classmethod
    def from_settings(cls, settings: Settings) -> Wanlora:
        return cls(
            db=Database(settings.resolved_database_url),
            store=open_store(settings.resolved_storage_url, **settings.s3_options()),
            actor=settings.user,
            default_project=settings.project,
            policy=load_policy(settings.resolved_policy_file),
        )

    @contextmanager
    def registry(self, *, write: bool = True) -> Iterator[RegistryService]:
        with self.db.session(write=write) as session:
            yield RegistryService(session, principal=self.principal, policy=self.policy)

    @contextmanager
    def evaluation(self, *, write: bool = True) -> Iterator[EvaluationService]:
        with self.db.session(write=write) as session:
            yield EvaluationService(session, principal=self.principal, policy=self.policy)

    @contextmanager
    def webhooks(self, *, write: bool = True) -> Iterator[WebhookService]:
        with self.db.session(write=write) as session:
            yield WebhookService(session, principal=self.principal)

    @contextmanager
    def accounts(self, *, write: bool = True) -> Iterator[AccountService]:
        with self.db.session(write=write) as session:
            yield AccountService(session, principal=self.principal)

    def as_principal(self, principal: Principal) -> Wanlora:
        """The same database and store, acting for another caller (an API token's principal)."""
        return Wanlora(
            db=self.db,
            store=self.store,
            actor=principal.user,
            default_project=self.default_project,
            principal=principal,
            policy=self.policy,
        )

    def close(self) -> None:
        self.db.dispose()

    # -- register -----------------------------------------------------------------------------------

    def register(self, req: RegisterRequest, *, progress: Progress | None = None) -> VersionPublic:
        if (req.version is None) == (req.bump is None):
            raise InvalidInput("give exactly one of --version X.Y.Z and --bump major|minor|patch")
        if req.dataset_dir is not None and req.dataset_hash is not None:
            raise InvalidInput("give --dataset DIR or --dataset-hash H, not both")
        with self.registry(write=False) as reg:
            existing = reg.find_lora(project=req.project, name=req.lora)
        base_name = existing.base_model if existing else req.base_model
        if existing is None and (req.category is None or req.base_model is None):
            raise InvalidInput(
                f"LoRA {req.project}/{req.lora} does not exist yet",
                hint="pass --category and --base-model to create it on first register, or run `wanlora lora create`",
            )
        if existing is None:
            parse_category(req.category or "")
        base = lookup_base_model(base_name or "")
        paths = {FileRole.SINGLE: req.file}
        if req.low_noise is not None:
            paths = {FileRole.HIGH_NOISE: req.file, FileRole.LOW_NOISE: req.low_noise}
        if base.experts and req.low_noise is None:
            raise InvalidInput(
                f"{base.name} has a high-noise and a low-noise expert, so a version is a pair of files",
                hint="pass the high-noise file as FILE and the low-noise file with --low-noise FILE",
            )
        if not base.experts and req.low_noise is not None:
            raise InvalidInput(f"{base.name} has a single expert: drop --low-noise")
        # Everything that can be refused without writing is checked before a byte reaches the store.
        inspections = {role: inspect_lora(path, base) for role, path in paths.items()}
        hyperparameters: dict[str, Any] = {}
        dataset_summary: dict[str, Any] = {}
        dataset_hash = req.dataset_hash
        training_date: datetime | None = None
        trigger_words = list(req.trigger_words)
        if req.from_metadata:
            facts = facts_from_metadata(inspections[next(iter(inspections))].metadata)
            hyperparameters.update(facts.hyperparameters)
            dataset_summary.update(facts.dataset_summary)
            dataset_hash = dataset_hash or facts.dataset_hash
            training_date = facts.training_date
            trigger_words = trigger_words or facts.trigger_words
        if req.hyperparams_file is not None:
            hyperparameters.update(_read_json_object(req.hyperparams_file))
        if req.hyperparameters:
            hyperparameters.update(req.hyperparameters)
        if req.dataset_dir is not None:
            dataset_hash, summary = dataset_fingerprint(req.dataset_dir)
            dataset_summary.update(summary)
        if req.dataset_summary:
            dataset_summary.update(req.dataset_summary)
        files: dict[FileRole, IngestedFile] = {}
        try:
            for role, path in paths.items():
                report = (lambda done, total, r=role: progress(r.value, done, total)) if progress else None
                files[role] = ingest_lora(path, self.store, base=base, progress=report, inspection=inspections[role])
            with self.registry() as reg:
                # The LoRA is created in the same transaction as its first version: a refused file
                # leaves no empty LoRA behind.
                if reg.find_lora(project=req.project, name=req.lora) is None:
                    reg.create_lora(
                        project=req.project,
                        name=req.lora,
                        category=req.category or "",
                        base_model=base.name,
                        trigger_words=trigger_words,
                        description=req.description,
                    )
                version = req.version or reg.next_version(project=req.project, name=req.lora, bump=req.bump or "")
                return reg.register_version(
                    project=req.project,
                    name=req.lora,
                    version=version,
                    files=files,
                    changelog=req.changelog,
                    hyperparameters=hyperparameters,
                    dataset_hash=dataset_hash,
                    dataset_summary=dataset_summary,
                    training_date=training_date,
                    scores=req.scores,
                    known_issues=req.known_issues,
                    parent=req.parent,
                )
        except BaseException:
            for f in files.values():
                if f.created and not self._referenced(f.sha256):
                    self.store.delete(f.sha256)
            raise

    def _referenced(self, sha256: str) -> bool:
        with self.db.session(write=False) as session:
            return session.exec(select(VersionFile.id).where(VersionFile.sha256 == sha256)).first() is not None


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidInput(f"hyperparameter file {path} does not exist") from None
    except ValueError as exc:
        raise InvalidInput(f"hyperparameter file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"hyperparameter file {path} must hold a JSON object")
    return data
