"""The in-process backend: a database, a store and an actor, wired from ``Settings`` (the embedded
default, and what the API server runs on).

``Wanlora.registry()`` is one unit of work (one transaction) over ``RegistryService``. ``register``
orchestrates what spans the store and the database: files are inspected first (nothing written), then
streamed into the store, then recorded in one transaction; if that transaction fails, the objects this
call created are removed again, so a refused registration leaves nothing behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from registry.backends.contract import Progress, SchemaStatus
from registry.backends.uploads import KeptUpload, sweep_uploads
from registry.blobs.base import ArtifactStore, verify_stored
from registry.blobs.factory import open_store
from registry.db.engine import Database
from registry.db.tables import VersionFile, WebhookDelivery, delivery_due
from registry.domain.access import Principal
from registry.domain.clock import utcnow
from registry.domain.enums import FileRole
from registry.domain.errors import InvalidFile, InvalidInput
from registry.domain.policy import Policy, load_policy
from registry.domain.register import RegisterRequest
from registry.domain.schemas import GcReport, VersionPublic, parse_category
from registry.domain.wan import base_model as lookup_base_model
from registry.files.ingest import IngestedFile, Inspection, ingest_lora, inspect_lora
from registry.files.jsonfile import read_json_object
from registry.files.metadata import facts_from_metadata
from registry.services.egress import EgressPolicy
from registry.services.registry import RegistryService
from registry.settings import Settings

if TYPE_CHECKING:  # imported where they are used: a command loads the services it runs, not all of them
    from registry.services.accounts import AccountService
    from registry.services.evaluation import EvaluationService
    from registry.services.maintenance import MaintenanceService
    from registry.services.sessions import SessionService
    from registry.services.webhooks import WebhookService

__all__ = ["Wanlora"]

log = logging.getLogger("wanlora.integrity")


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
        egress: EgressPolicy | None = None,
        uploads: Path | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or Policy()
        self.egress = egress or EgressPolicy()  # where webhooks may be sent
        self.uploads = uploads  # the server's upload folder, swept by gc
        self.store = store
        self.actor = actor
        self.default_project = default_project
        # Direct access to the database is the local operator's: admin of every project.
        self.principal = principal or Principal.local_admin(actor)

    @classmethod
    def from_settings(cls, settings: Settings) -> Wanlora:
        return cls(
            db=Database(settings.resolved_database_url),
            store=open_store(
                settings.resolved_storage_url, verified_dir=settings.home_dir / "verified", **settings.s3_options()
            ),
            actor=settings.user,
            default_project=settings.project,
            policy=load_policy(settings.resolved_policy_file),
            egress=EgressPolicy(allow_hosts=settings.webhook_allow_list),
            uploads=settings.home_dir / "uploads",
        )

    @contextmanager
    def registry(self, *, write: bool = True) -> Iterator[RegistryService]:
        with self.db.session(write=write) as session:
            yield RegistryService(session, principal=self.principal, policy=self.policy)

    @contextmanager
    def evaluation(self, *, write: bool = True) -> Iterator[EvaluationService]:
        from registry.services.evaluation import EvaluationService

        with self.db.session(write=write) as session:
            yield EvaluationService(session, principal=self.principal, policy=self.policy)

    @contextmanager
    def webhooks(self, *, write: bool = True) -> Iterator[WebhookService]:
        from registry.services.webhooks import WebhookService

        with self.db.session(write=write) as session:
            yield WebhookService(session, principal=self.principal, egress=self.egress)

    @contextmanager
    def accounts(self, *, write: bool = True) -> Iterator[AccountService]:
        from registry.services.accounts import AccountService

        with self.db.session(write=write) as session:
            yield AccountService(session, principal=self.principal)

    @contextmanager
    def sessions(self, *, write: bool = True) -> Iterator[SessionService]:
        """Dashboard sign-ins (the server's alone: not part of the backend contract)."""
        from registry.services.sessions import SessionService

        with self.db.session(write=write) as session:
            yield SessionService(session)

    def as_principal(self, principal: Principal) -> Wanlora:
        """The same database and store, acting for another caller (an API token's principal)."""
        return Wanlora(
            db=self.db,
            store=self.store,
            actor=principal.user,
            default_project=self.default_project,
            principal=principal,
            policy=self.policy,
            egress=self.egress,
        )

    def close(self) -> None:
        self.db.dispose()

    # -- the rest of the backend contract -----------------------------------------------------------

    def wait_for_change(self, since: int, *, timeout: float = 25.0, poll: float = 0.2) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with self.registry(write=False) as reg:
                latest = reg.last_event_id()
            if latest != since or time.monotonic() >= deadline:
                return latest
            time.sleep(poll)

    def schema_status(self) -> SchemaStatus:
        return SchemaStatus(url=self.db.safe_url, current=self.db.current_revision(), head=self.db.head_revision())

    def upgrade_schema(self) -> tuple[str | None, str | None]:
        return self.db.upgrade()

    @contextmanager
    def maintenance(self, *, principal: Principal | None = None, write: bool = True) -> Iterator[MaintenanceService]:
        from registry.services.maintenance import MaintenanceService

        with self.db.session(write=write) as session:
            yield MaintenanceService(session, principal=principal or self.principal)

    def gc(self, *, delete: bool = False, verify: bool = False) -> GcReport:
        removed = self.store.sweep()
        uploads = sweep_uploads(self.uploads) if self.uploads is not None and self.uploads.is_dir() else []
        with self.maintenance(write=False) as upkeep:
            orphans = upkeep.orphans(list(self.store.listing()))
            referenced = upkeep.referenced() if verify else set()
        if delete:
            for orphan in orphans:
                self.store.delete(orphan.sha256)
        for sha in sorted(referenced):
            problem = verify_stored(self.store, sha)
            if problem is not None:
                self.take_out_of_service(sha, problem)
        with self.maintenance(write=False) as upkeep:
            faulty = upkeep.needing_repair()
        return GcReport(temp_files_removed=removed, uploads_removed=len(uploads), orphans=orphans, orphan_bytes=sum(o.size for o in orphans),
                        deleted=delete, verified=len(referenced), needs_repair=faulty)  # fmt: skip

    def take_out_of_service(self, sha256: str, problem: str) -> list[str]:
        """A stored file failed its digest: set its bytes aside and mark its versions for repair."""
        log.error("artifact %s failed its digest (%s): taken out of service", sha256, problem)
        self.store.quarantine(sha256)
        with self.maintenance(principal=Principal.local_admin("wanlora:integrity")) as upkeep:
            return upkeep.mark_for_repair(sha256, problem)

    def repair(self, path: Path) -> list[str]:
        with self.maintenance(write=False) as upkeep:
            faulty = set(upkeep.needing_repair())
        stored = ingest_lora(Path(path), self.store)
        if stored.sha256 not in faulty:
            if stored.created:
                self.store.delete(stored.sha256)
            raise InvalidInput(
                f"{Path(path).name} is not the source of any stored file that needs repair",
                hint="`wanlora gc --verify` lists the digests that do; repair each with the file it was registered from",
            )
        with self.maintenance() as upkeep:
            return upkeep.repaired(stored.sha256)

    def pull_as(self, client: str | None) -> None:
        """In-process the store is read directly, as the local operator, who may read every version."""

    def after_command(self) -> None:
        """There is no server to deliver webhooks: one short pass after the command (its change is
        committed already); what fails stays queued for the next pass."""
        with suppress(Exception):  # a delivery problem must never turn a done change into a failed command
            if not self._deliveries_due():
                return  # the usual case: no hooks, or nothing queued; the sender (httpx) is not loaded
            from registry.services.delivery import Dispatcher

            dispatcher = Dispatcher(self.db, egress=self.egress, timeout=2.0)
            try:
                dispatcher.run_once()
            finally:
                dispatcher.close()

    def _deliveries_due(self) -> bool:
        """Whether any webhook delivery waits for its next attempt now (what the dispatcher would claim)."""
        with self.db.session(write=False) as session:
            query = select(WebhookDelivery.id).where(*delivery_due(utcnow())).limit(1)
            return session.exec(query).first() is not None

    # -- register -----------------------------------------------------------------------------------

    def register(self, req: RegisterRequest, *, progress: Progress | None = None) -> VersionPublic:
        return self.register_uploaded(req, {}, progress=progress)

    def register_uploaded(
        self, req: RegisterRequest, uploads: Mapping[Path, KeptUpload], *, progress: Progress | None = None
    ) -> VersionPublic:
        """``register``, given what the server's upload hashed as each file arrived, and what it stored
        of it meanwhile (the server's alone, not part of the contract). Either counts only while the
        file is the one it was made of (same identity), the stored one only for the same base model and
        while the store still holds it; else the file is ingested here as usual (a routed upload, which
        kept only its header and alphas, is refused instead)."""
        req.check()
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
        record = _record(req, inspections[next(iter(inspections))])
        files: dict[FileRole, IngestedFile] = {}
        try:
            for role, path in paths.items():
                upload = uploads.get(Path(path))
                stored = _stored_already(upload, inspections[role], base.name, self.store)
                if stored is not None:
                    files[role] = stored
                    continue
                report = (lambda done, total, r=role: progress(r.value, done, total)) if progress else None
                files[role] = ingest_lora(path, self.store, base=base, progress=report, inspection=inspections[role],
                                          source_digests=upload.digests if upload else None)  # fmt: skip
            with self.registry() as reg:
                # The LoRA is created in the same transaction as its first version: a refused file
                # leaves no empty LoRA behind.
                if reg.find_lora(project=req.project, name=req.lora) is None:
                    reg.create_lora(
                        project=req.project,
                        name=req.lora,
                        category=req.category or "",
                        base_model=base.name,
                        trigger_words=record.pop("trigger_words"),
                        description=req.description,
                    )
                record.pop("trigger_words", None)
                version = req.version or reg.next_version(project=req.project, name=req.lora, bump=req.bump or "")
                return reg.register_version(
                    project=req.project, name=req.lora, version=version, files=files, changelog=req.changelog,
                    scores=req.scores, known_issues=req.known_issues, parent=req.parent, **record,
                )  # fmt: skip
        except BaseException:
            for f in files.values():
                if f.created and not self._referenced(f.sha256):
                    self.store.delete(f.sha256)
            raise

    def _referenced(self, sha256: str) -> bool:
        with self.db.session(write=False) as session:
            return session.exec(select(VersionFile.id).where(VersionFile.sha256 == sha256)).first() is not None


def _stored_already(upload: KeptUpload | None, ins: Inspection, base: str, store: ArtifactStore) -> IngestedFile | None:
    """What the upload's ingest stored, when it is of this very file and base model and still stored,
    with what this inspection of the whole file says of it. A routed upload (its tensors only in the
    stored file) is refused, never ingested from its holes, when that cannot be used."""
    if upload is None:
        return None
    pre, refusal = upload.ingested, upload.refusal
    if upload.routed and pre is None and refusal is not None and ins.identity and refusal.identity == ins.identity:
        raise InvalidFile(refusal.message, hint=refusal.hint)  # what ingest said as the file arrived
    why, hint = None, "upload the file again"
    if pre is None:
        why = "what the server stored of it as it arrived is not on record"
    elif pre.base_model != base:
        why, hint = f"it was checked against {pre.base_model} as it arrived, not {base}", f"{hint} for {base}"
    elif not ins.identity or pre.identity != ins.identity:
        why = "it is not the file that arrived"
    elif not store.exists(pre.sha256):
        why = "the file the server stored as it arrived is no longer in the store"  # gc took the orphan
    if why is None:
        assert pre is not None
        return IngestedFile.of(ins, pre.sha256, pre.payload_sha256, pre.size, pre.source_sha256,
                               pre.source_autov3, created=pre.created)  # fmt: skip
    if upload.routed:
        raise InvalidInput(f"upload {ins.path.name.strip('.').removesuffix('.routed')} cannot be registered: "
                           f"{why}, and the server kept only its header and alphas", hint=hint)  # fmt: skip
    return None  # the whole file is there: registering ingests it


def _record(req: RegisterRequest, inspection: Inspection) -> dict[str, Any]:
    """The version's record from the request, the file's ss_*/modelspec metadata (``from_metadata``),
    the hyperparameter file and the dataset folder; what the request says explicitly wins."""
    hyperparameters: dict[str, Any] = {}
    dataset_summary: dict[str, Any] = {}
    dataset_hash = req.dataset_hash
    training_date: datetime | None = None
    trigger_words = list(req.trigger_words)
    if req.from_metadata:
        facts = facts_from_metadata(inspection.metadata)
        hyperparameters.update(facts.hyperparameters)
        dataset_summary.update(facts.dataset_summary)
        dataset_hash = dataset_hash or facts.dataset_hash
        training_date = facts.training_date
        trigger_words = trigger_words or facts.trigger_words
    if req.hyperparams_file is not None:
        hyperparameters.update(read_json_object(req.hyperparams_file))
    hyperparameters.update(req.hyperparameters)
    if req.dataset_dir is not None:
        from registry.files.dataset import dataset_fingerprint

        dataset_hash, summary = dataset_fingerprint(req.dataset_dir)
        dataset_summary.update(summary)
    if req.dataset_summary:
        dataset_summary.update(req.dataset_summary)
    return {
        "hyperparameters": hyperparameters,
        "dataset_hash": dataset_hash,
        "dataset_summary": dataset_summary,
        "training_date": training_date,
        "trigger_words": trigger_words,
    }
