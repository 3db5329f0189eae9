"""Store upkeep (admins of every project): what `wanlora gc` finds and removes, the files that failed
their digest (marked for repair, never served) and their repair."""

from __future__ import annotations

import time

from sqlmodel import col, select

from registry.db.tables import Lora, Version, VersionFile
from registry.domain.access import ALL_PROJECTS, Action
from registry.domain.schemas import Orphan
from registry.services.lookups import record_event
from registry.services.scope import Service

__all__ = ["ORPHAN_GRACE_SECONDS", "MaintenanceService"]

# A register stores its files before its transaction commits: a blob younger than this may be one
# in flight, so gc never calls it an orphan.
ORPHAN_GRACE_SECONDS = 3600


class MaintenanceService(Service):
    def _require(self) -> None:
        self.scope.authz.require(self.principal, ALL_PROJECTS, Action.USER_MANAGE)

    def referenced(self) -> set[str]:
        self._require()
        return set(self.session.exec(select(VersionFile.sha256)).all())

    def orphans(self, listing: list[tuple[str, int, float]]) -> list[Orphan]:
        """Stored artifacts no version refers to, older than the grace period."""
        referenced = self.referenced()
        now = time.time()
        return [
            Orphan(sha256=sha, size=size, age_hours=round((now - stored) / 3600, 1))
            for sha, size, stored in listing
            if sha not in referenced and now - stored > ORPHAN_GRACE_SECONDS
        ]

    def needing_repair(self) -> list[str]:
        self._require()
        return sorted(set(self.session.exec(select(VersionFile.sha256).where(VersionFile.needs_repair == True)).all()))  # noqa: E712

    def is_faulty(self, sha256: str) -> bool:
        return (
            self.session.exec(
                select(VersionFile.id).where(VersionFile.sha256 == sha256, VersionFile.needs_repair == True)  # noqa: E712
            ).first()
            is not None
        )

    def mark_for_repair(self, sha256: str, problem: str) -> list[str]:
        """Flag every file row with this digest and log it on each version's LoRA; returns the
        versions (``project/lora@version``) affected. Called by the system, whoever downloaded."""
        return self._flag(sha256, True, "needs_repair", problem[:4000])

    def repaired(self, sha256: str) -> list[str]:
        """The store holds the right bytes again: clear the flag (and log it)."""
        self._require()
        return self._flag(sha256, False, "repaired", None)

    def _flag(self, sha256: str, needs_repair: bool, kind: str, reason: str | None) -> list[str]:
        """Set every file row with this digest to ``needs_repair``, with a ``kind`` event on each
        version whose flag changed; returns those versions."""
        changed = []
        rows = self.session.exec(
            select(VersionFile, Version, Lora)
            .join(Version, col(Version.id) == VersionFile.version_id)
            .join(Lora, col(Lora.id) == Version.lora_id)
            .where(VersionFile.sha256 == sha256, VersionFile.needs_repair == (not needs_repair))
            .with_for_update()
        ).all()
        for file, version, lora in rows:
            file.needs_repair = needs_repair
            self.session.add(file)
            record_event(self.scope, lora, kind, version=version, reason=reason,
                         details={"sha256": sha256, "role": file.role})  # fmt: skip
            changed.append(f"{lora.name}@{version.version}")
        return changed
